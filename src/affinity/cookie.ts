import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** What a verified affinity cookie says: which backend the client is pinned to, and its nonce. */
export interface AffinityCookie {
  readonly nonce: string;
  readonly backendId: string;
  /** With `onRecovery: return`, the backend a remapped client goes back to once it heals. */
  readonly homeId: string | null;
  /** Unix seconds after which the cookie is no longer honoured; 0 for a browser-session cookie. */
  readonly expiresAt: number;
  /**
   * Unix seconds when the proxy last stamped the client as seen (rebalance only; 0 when unstamped).
   * Coarse: re-stamped only once the stamp is older than a fraction of idleAfter.
   */
  readonly seenAt: number;
}

export interface CookieAttributes {
  name: string;
  maxAge: number | null; // ms
  path: string;
  domain: string | null;
  httpOnly: boolean;
  secure: boolean;
  sameSite: 'lax' | 'strict' | 'none';
}

const NONCE_BYTES = 12;
const NONCE_CHARS = 16; // base64url of 12 bytes
const MAC_CHARS = 22; // 16 bytes of HMAC-SHA256, base64url
const VERIFIED_CACHE_LIMIT = 50_000;

/**
 * Encodes and verifies the affinity cookie: `<nonce>.<backend id>[~<home id>].<expiry>[-<seen>].<mac>`
 * (expiry and seen in base 36).
 * The MAC (HMAC-SHA256, truncated to 128 bits) covers everything before it, so a client cannot pick
 * a backend, extend its expiry or reuse a nonce with another id. The cookie names a backend by its
 * stable id — never a URL or address. Verified values are cached, so a returning client costs one
 * map lookup rather than an HMAC per request.
 */
export class AffinityCookieCodec {
  private readonly secret: Buffer;
  private readonly verified = new Map<string, AffinityCookie>();
  private readonly nonceSource = new NonceSource();

  constructor(secret: string | Buffer) {
    this.secret = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret;
  }

  newNonce(): string {
    return this.nonceSource.next();
  }

  encode(cookie: AffinityCookie): string {
    const pin = cookie.homeId === null ? cookie.backendId : `${cookie.backendId}~${cookie.homeId}`;
    const times = cookie.seenAt === 0 ? cookie.expiresAt.toString(36) : `${cookie.expiresAt.toString(36)}-${cookie.seenAt.toString(36)}`;
    const payload = `${cookie.nonce}.${pin}.${times}`;
    return `${payload}.${this.mac(payload)}`;
  }

  /** The cookie's content when its MAC is valid and it has not expired at `nowSeconds`; otherwise null. */
  decode(value: string, nowSeconds: number): AffinityCookie | null {
    let cookie = this.verified.get(value);
    if (cookie === undefined) {
      const parsed = this.verify(value);
      if (parsed === null) return null;
      cookie = parsed;
      if (this.verified.size >= VERIFIED_CACHE_LIMIT) this.verified.clear();
      this.verified.set(value, cookie);
    }
    if (cookie.expiresAt !== 0 && cookie.expiresAt <= nowSeconds) return null;
    return cookie;
  }

  private verify(value: string): AffinityCookie | null {
    // nonce "." id "." expiry "." mac — the id may itself contain dots, so parse from both ends.
    if (value.length < NONCE_CHARS + MAC_CHARS + 5 || value.charCodeAt(NONCE_CHARS) !== 46) return null;
    const macDot = value.length - MAC_CHARS - 1;
    if (value.charCodeAt(macDot) !== 46) return null;
    const expiryDot = value.lastIndexOf('.', macDot - 1);
    if (expiryDot <= NONCE_CHARS + 1) return null;
    const payload = value.slice(0, macDot);
    // UTF-8, not latin1: latin1 keeps only the low byte, so "\u0141" would pass for "A".
    const expected = Buffer.from(this.mac(payload), 'utf8');
    const given = Buffer.from(value.slice(macDot + 1), 'utf8');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    const times = value.slice(expiryDot + 1, macDot);
    const dash = times.indexOf('-');
    const expiresAt = parseBase36(dash < 0 ? times : times.slice(0, dash));
    const seenAt = dash < 0 ? 0 : parseBase36(times.slice(dash + 1));
    if (expiresAt < 0 || seenAt < 0) return null;
    const pin = value.slice(NONCE_CHARS + 1, expiryDot);
    const tilde = pin.indexOf('~');
    return {
      nonce: value.slice(0, NONCE_CHARS),
      backendId: tilde < 0 ? pin : pin.slice(0, tilde),
      homeId: tilde < 0 ? null : pin.slice(tilde + 1),
      expiresAt,
      seenAt,
    };
  }

  private mac(payload: string): string {
    return createHmac('sha256', this.secret).update(payload).digest('base64url').slice(0, MAC_CHARS);
  }
}

/** A non-negative base-36 integer, or -1 for anything else (signed text was written by us, but be exact). */
function parseBase36(text: string): number {
  if (!/^[0-9a-z]{1,11}$/.test(text)) return -1;
  const value = parseInt(text, 36);
  return Number.isSafeInteger(value) ? value : -1;
}

/** Draws nonces from a refilled random buffer: one syscall per 512 new clients rather than one each. */
class NonceSource {
  private buffer = Buffer.alloc(0);
  private offset = 0;

  next(): string {
    if (this.offset + NONCE_BYTES > this.buffer.length) {
      this.buffer = randomBytes(NONCE_BYTES * 512);
      this.offset = 0;
    }
    const nonce = this.buffer.toString('base64url', this.offset, this.offset + NONCE_BYTES);
    this.offset += NONCE_BYTES;
    return nonce;
  }
}

/** Finds one cookie's value in a Cookie header without splitting the whole header. */
export function findCookie(header: string, name: string): string | undefined {
  let from = 0;
  while (from < header.length) {
    const at = header.indexOf(name, from);
    if (at < 0) return undefined;
    const before = at === 0 ? 59 : header.charCodeAt(at - 1);
    const eq = at + name.length;
    if ((before === 59 /* ; */ || before === 32 || before === 9) && header.charCodeAt(eq) === 61 /* = */) {
      const end = header.indexOf(';', eq + 1);
      let value = header.slice(eq + 1, end < 0 ? header.length : end).trim();
      if (value.length >= 2 && value.charCodeAt(0) === 34 && value.charCodeAt(value.length - 1) === 34) {
        value = value.slice(1, -1);
      }
      return value;
    }
    from = eq;
  }
  return undefined;
}

/** The last instant an HTTP date can spell: its year has four digits. */
const LATEST_HTTP_DATE_MS = Date.UTC(9999, 11, 31, 23, 59, 59);

/** The Set-Cookie line for a cookie value; expiry is computed from `nowMs` on every call, never cached. */
export function serializeSetCookie(attributes: CookieAttributes, value: string, nowMs: number): string {
  let line = `${attributes.name}=${value}; Path=${attributes.path}`;
  if (attributes.maxAge !== null) {
    const seconds = Math.floor(attributes.maxAge / 1000);
    // maxAge may be up to 2^53 ms; past year 9999 toUTCString gives a 5-digit year or "Invalid Date".
    const expires = new Date(Math.min(nowMs + seconds * 1000, LATEST_HTTP_DATE_MS));
    line += `; Max-Age=${seconds}; Expires=${expires.toUTCString()}`;
  }
  if (attributes.domain !== null) line += `; Domain=${attributes.domain}`;
  if (attributes.httpOnly) line += '; HttpOnly';
  if (attributes.secure) line += '; Secure';
  line += attributes.sameSite === 'lax' ? '; SameSite=Lax' : attributes.sameSite === 'strict' ? '; SameSite=Strict' : '; SameSite=None';
  return line;
}

/** A random secret for when none is configured; cookies then die with the process. Text, so workers can be sent it. */
export function randomSecret(): string {
  return randomBytes(32).toString('hex');
}
