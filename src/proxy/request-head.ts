import type { Socket } from 'node:net';
import type { ClientAddressResolver } from '../affinity/client-address.js';
import type { ClientHints, ConnectionAffinity } from '../affinity/policy.js';
import { connectionListedHeaders, isHopByHop, leadingPseudoFields, removeHeaders } from './headers.js';

/**
 * The request head as it will go to the backend, built in one pass over the client's raw headers:
 * hop-by-hop and proxy-owned headers dropped, and what placement and forwarding need noted on the way.
 */
export class RequestHead implements ClientHints {
  headers: string[] = [];
  forwardedFor: string | undefined = undefined;
  cookieHeader: string | undefined = undefined;
  affinityHeader: string | undefined = undefined;
  /** HTTP/2: what the client's connection remembers of its requests without an affinity cookie. */
  connectionAffinity: ConnectionAffinity | null = null;
  /** This proxy's Via entry: the protocol the request was received in (RFC 9110 §7.6.3), and its name. */
  viaEntry = '1.1 limpet';
  host: string | undefined = undefined;
  /** Two Host fields: proxies and backends could each believe a different one, so it is refused. */
  duplicateHost = false;
  contentLength: string | undefined = undefined;
  /** The body's length is not known ahead: `Transfer-Encoding: chunked`, or an HTTP/2 body without Content-Length. It goes on chunked. */
  chunked = false;
  /** The Transfer-Encoding codings as sent, when they are more than plain `chunked`. */
  codings: string | undefined = undefined;
  private forwardedProto: string | undefined = undefined;
  private forwardedHost: string | undefined = undefined;
  private via: string | undefined = undefined;
  /** Where the X-Limpet-Remapped-From value sits in `headers`; -1 when there is none. */
  private remapNoticeAt = -1;
  /** Where the Cookie value sits in `headers`; -1 when there is none. */
  private cookieAt = -1;

  /**
   * `affinityHeaderName`: lower-case name of the header that keys clients in header mode, else null.
   * Names with "_" are dropped unless `allowUnderscores`: backends that map "_" to "-" would read
   * `X_Forwarded_For` as the forwarding header limpet vouches for. HTTP/2's pseudo-header fields
   * are not copied: the channel turns what they say into HTTP/1.1 (completeHead).
   */
  copy(raw: readonly string[], affinityHeaderName: string | null, allowUnderscores: boolean): void {
    const out = this.headers;
    let connectionValue: string | undefined;
    for (let i = 2 * leadingPseudoFields(raw); i < raw.length; i += 2) {
      const name = raw[i] as string;
      const value = raw[i + 1] as string;
      const lower = name.toLowerCase();
      switch (lower) {
        case 'host':
          if (this.host !== undefined) this.duplicateHost = true;
          this.host = value;
          break;
        case 'cookie':
          // Several Cookie fields (HTTP/2 sends one per cookie) go on as one, joined with "; "
          // (RFC 9113 §8.2.3): an HTTP/1.1 request has at most one (RFC 6265 §5.4).
          if (this.cookieHeader === undefined) {
            this.cookieHeader = value;
            this.cookieAt = out.length + 1;
            break;
          }
          this.cookieHeader = `${this.cookieHeader}; ${value}`;
          out[this.cookieAt] = this.cookieHeader;
          continue;
        case 'content-length':
          this.contentLength = value;
          break;
        case 'x-forwarded-for':
          this.forwardedFor = this.forwardedFor === undefined ? value : `${this.forwardedFor}, ${value}`;
          continue;
        case 'x-forwarded-proto':
          this.forwardedProto = value;
          continue;
        case 'x-forwarded-host':
          this.forwardedHost = value;
          continue;
        case 'via':
          this.via = this.via === undefined ? value : `${this.via}, ${value}`;
          continue;
        case 'transfer-encoding':
          // Node frames the body by its final coding; anything else is judged by transferCodings().
          if (this.chunked || value.length !== 7 || value.toLowerCase() !== 'chunked') this.codings = this.codings === undefined ? value : `${this.codings}, ${value}`;
          this.chunked = true;
          continue;
        case 'connection':
          connectionValue = connectionValue === undefined ? value : `${connectionValue}, ${value}`;
          continue;
        case 'expect': // answered by this proxy; the backend gets the body straight away
        case 'x-limpet-remapped-from': // only the proxy may say this
          continue;
        default:
          if (isHopByHop(lower)) continue;
          if (lower === affinityHeaderName) this.affinityHeader = value;
          if (!allowUnderscores && lower.includes('_')) continue;
      }
      out.push(name, value);
    }
    if (connectionValue !== undefined) {
      const listed = connectionListedHeaders(connectionValue);
      if (listed !== null) removeHeaders(out, listed);
    }
  }

  /**
   * HTTP/2's `:authority` becomes the Host field an HTTP/1.1 request needs (RFC 9113 §8.3.1), first
   * in the head. A Host field beside it must name the same authority. False when they differ, or
   * when the request names no authority at all.
   */
  adoptAuthority(authority: string | undefined): boolean {
    if (authority === undefined) return this.host !== undefined;
    if (this.host !== undefined) return this.host.toLowerCase() === authority.toLowerCase();
    this.host = authority;
    this.headers.unshift('Host', authority);
    return true;
  }

  /**
   * Two Host fields, or an absolute-form target naming another host than Host: the backend could
   * read the request as meant for a different site, so such a request is refused.
   */
  hostConflicts(target: string, path: string): boolean {
    return this.duplicateHost || (path.length !== target.length && !targetAgreesWithHost(target, this.host));
  }

  /**
   * What the request's transfer codings allow: `ok` for plain chunked (or none); `unframed` when
   * chunked is not the final coding, so the body's length cannot be known (RFC 9112 §6.3: 400);
   * `unsupported` for another coding before chunked, which the body would lose on the way (§6.1: 501).
   */
  transferCodings(): 'ok' | 'unframed' | 'unsupported' {
    if (this.codings === undefined) return 'ok';
    const list = this.codings.toLowerCase().split(',');
    if ((list[list.length - 1] as string).trim() !== 'chunked') return 'unframed';
    return list.length === 1 ? 'ok' : 'unsupported';
  }

  get hasBody(): boolean {
    return this.chunked || (this.contentLength !== undefined && this.contentLength !== '0');
  }

  /**
   * X-Forwarded-* from a trusted proxy are extended; from anyone else they are replaced, so a client
   * cannot make the backend believe a forged address, scheme or host.
   */
  appendForwarding(socket: Socket, clients: ClientAddressResolver, protocol: string, remappedFrom: string | null): void {
    const out = this.headers;
    const peer = clients.peerAddress(socket);
    const trusted = clients.peerIsTrusted(socket);
    out.push('X-Forwarded-For', trusted && this.forwardedFor !== undefined ? `${this.forwardedFor}, ${peer}` : peer);
    out.push('X-Forwarded-Proto', trusted && this.forwardedProto !== undefined ? this.forwardedProto : protocol);
    const host = trusted && this.forwardedHost !== undefined ? this.forwardedHost : this.host;
    if (host !== undefined) out.push('X-Forwarded-Host', host);
    out.push('Via', this.via === undefined ? this.viaEntry : `${this.via}, ${this.viaEntry}`);
    if (remappedFrom !== null) this.setRemapNotice(remappedFrom);
  }

  /**
   * Tells the backend where the client was moved from, or (null) that it was not: a retry may move
   * the client, or bring it back to the backend it was pinned to.
   */
  setRemapNotice(from: string | null): void {
    const at = this.remapNoticeAt;
    if (from === null) {
      if (at >= 0) this.headers.splice(at - 1, 2);
      this.remapNoticeAt = -1;
    } else if (at >= 0) this.headers[at] = from;
    else this.remapNoticeAt = this.headers.push('X-Limpet-Remapped-From', from) - 1;
  }
}

/** The path to send upstream: origin-form as is, absolute-form reduced to its path; anything else is refused. */
export function originFormPath(target: string): string | null {
  if (target.charCodeAt(0) === 47 /* / */) return target;
  const scheme = target.startsWith('http://') ? 7 : target.startsWith('https://') ? 8 : -1;
  if (scheme < 0) return null;
  const slash = target.indexOf('/', scheme);
  return slash < 0 ? '/' : target.slice(slash);
}

/**
 * Whether an absolute-form target (`GET http://a.example/ HTTP/1.1`) names the same authority as
 * the Host field. RFC 9112 §3.2.2 lets the target win; limpet forwards only the path with the
 * client's Host, so a mismatch is refused rather than letting the backend see a different host.
 */
function targetAgreesWithHost(target: string, host: string | undefined): boolean {
  const https = target.startsWith('https://');
  const start = https ? 8 : 7;
  const slash = target.indexOf('/', start);
  const authority = target.slice(start, slash < 0 ? target.length : slash).toLowerCase();
  if (host === undefined) return false;
  return withoutDefaultPort(authority, https) === withoutDefaultPort(host.toLowerCase(), https);
}

function withoutDefaultPort(authority: string, https: boolean): string {
  const suffix = https ? ':443' : ':80';
  return authority.endsWith(suffix) ? authority.slice(0, -suffix.length) : authority;
}
