import { isIP } from 'node:net';
import type { Socket } from 'node:net';
import { parseAddress, samePrefix, type AddressBytes } from './ip-address.js';

const peerCache = Symbol('limpet.peer');

/**
 * A connection's client address learnt from something other than its socket: the PROXY protocol
 * header a balancer in `proxyProtocol.from` sent before the connection's first byte.
 */
export interface ClaimedAddresses {
  /** The client address claimed for the connection `socket` belongs to, normalised; undefined when none was. */
  of(socket: Socket): string | undefined;
}

interface PeerInfo {
  resolver: ClientAddressResolver;
  address: string;
  trusted: boolean;
}

/** Strips the IPv4-mapped IPv6 prefix so one client has one key whichever stack it came in on. */
export function normaliseAddress(address: string): string {
  const lower = address.toLowerCase();
  // Only a dotted IPv4 address may follow: "::ffff:0:1.2.3.4" is another IPv6 range, and a zone id makes it no IPv4 address.
  if (lower.length > 7 && lower.charCodeAt(0) === 58 /* : */ && lower.startsWith('::ffff:') && isIP(lower.slice(7)) === 4) {
    return lower.slice(7);
  }
  return lower;
}

/** Parses one X-Forwarded-For hop: a bare address, "[v6]:port" or "v4:port". Returns null when it is not an address. */
export function parseForwardedHop(hop: string): string | null {
  let text = hop.trim();
  if (text.length === 0) return null;
  if (text.charCodeAt(0) === 91 /* [ */) {
    const end = text.indexOf(']');
    if (end < 0) return null;
    text = text.slice(1, end);
  } else if (text.indexOf(':') !== text.lastIndexOf(':')) {
    // several colons and no brackets: a bare IPv6 address
  } else if (text.includes(':')) {
    text = text.slice(0, text.indexOf(':'));
  }
  return isIP(text) === 0 ? null : normaliseAddress(text);
}

/**
 * Addresses and CIDRs (`trustedProxies`, `proxyProtocol.from`), asked about one normalised address
 * at a time. IPv4 is compared as IPv4-mapped IPv6, so an IPv4 address matches an entry such as
 * "::ffff:10.0.0.0/104", as node:net's BlockList matches it (at a fraction of its cost per check).
 */
export class AddressSet {
  private readonly networks: { bytes: AddressBytes; bits: number }[] = [];

  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const slash = entry.indexOf('/');
      // Validated by the config schema; a prefix counts bits of the family as written.
      const bytes = parseAddress(withoutZone(slash < 0 ? entry : entry.slice(0, slash))) as AddressBytes;
      const written = slash < 0 ? null : Number(entry.slice(slash + 1));
      const bits = written === null ? 128 : entry.slice(0, slash).includes(':') ? written : 96 + written;
      this.networks.push({ bytes, bits });
    }
  }

  has(address: string): boolean {
    const bytes = address === '' ? null : parseAddress(withoutZone(address));
    return bytes !== null && this.networks.some((network) => samePrefix(network.bytes, bytes, network.bits));
  }
}

/**
 * Works out who the client is. The socket's peer is the client unless the peer is a trusted proxy,
 * in which case X-Forwarded-For is walked from the right and the first untrusted hop is the client —
 * a client can prepend anything it likes to that header, so only hops added by trusted peers count.
 * The socket's peer is the address a PROXY protocol header claimed, when `claims` holds one.
 */
export class ClientAddressResolver {
  private readonly trusted: AddressSet | null;

  constructor(
    trustedProxies: readonly string[],
    private readonly claims: ClaimedAddresses | null = null,
  ) {
    this.trusted = trustedProxies.length > 0 ? new AddressSet(trustedProxies) : null;
  }

  /** Whether anything from this peer (X-Forwarded-*) may be believed. */
  peerIsTrusted(socket: Socket): boolean {
    return this.peer(socket).trusted;
  }

  /** The socket peer's normalised address, cached on the socket: keep-alive connections ask once. */
  peerAddress(socket: Socket): string {
    return this.peer(socket).address;
  }

  /** The client's address given the request's X-Forwarded-For value (undefined when absent). */
  resolve(socket: Socket, forwardedFor: string | undefined): string {
    const peer = this.peer(socket);
    if (!peer.trusted || forwardedFor === undefined) return peer.address;
    return this.walkForwardedFor(forwardedFor, peer.address);
  }

  private walkForwardedFor(header: string, peerAddress: string): string {
    const trusted = this.trusted as AddressSet;
    let client = peerAddress;
    let end = header.length;
    while (end > 0) {
      const start = header.lastIndexOf(',', end - 1);
      const hop = parseForwardedHop(header.slice(start + 1, end));
      // A hop that is not an address cannot be vouched for: stop at the last one we could check.
      if (hop === null) return client;
      client = hop;
      if (!trusted.has(hop)) return hop;
      end = start;
    }
    return client;
  }

  private peer(socket: Socket): PeerInfo {
    const holder = socket as Socket & { [peerCache]?: PeerInfo };
    let info = holder[peerCache];
    // A reload may bring a new trusted list, so a cached verdict counts only for the resolver that made it.
    if (info === undefined || info.resolver !== this) {
      const address = this.claims?.of(socket) ?? normaliseAddress(socket.remoteAddress ?? '');
      const trusted = this.trusted !== null && this.trusted.has(address);
      info = { resolver: this, address, trusted };
      holder[peerCache] = info;
    }
    return info;
  }
}

/** Zone ids ("fe80::1%eth0") name an interface, not an address: they are not compared. */
function withoutZone(address: string): string {
  const percent = address.indexOf('%');
  return percent < 0 ? address : address.slice(0, percent);
}
