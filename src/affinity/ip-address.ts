/**
 * IP addresses as 16 bytes (an IPv4 address as IPv4-mapped IPv6, ::ffff:a.b.c.d), read from text
 * or bytes and written the way Node spells a socket's peer. Pure; no node:net: its SocketAddress,
 * which BlockList builds for every check, costs several microseconds a call on Node 20, and limpet
 * asks once per connection (PROXY protocol, trustedProxies) and per X-Forwarded-For hop.
 */

export type AddressBytes = Uint8Array;

const MAPPED = 10; // bytes 10 and 11 of an IPv4-mapped address are 0xff

/** A dotted-quad IPv4 address (no leading zeros) or an IPv6 address in any RFC 4291 text form, no zone id; null when it is neither. */
export function parseAddress(text: string): AddressBytes | null {
  const bytes = new Uint8Array(16);
  if (text.includes(':')) return parseIPv6(text, bytes) ? bytes : null;
  bytes[MAPPED] = 0xff;
  bytes[MAPPED + 1] = 0xff;
  return parseIPv4(text, 0, text.length, bytes, 12) ? bytes : null;
}

/** Whether `bytes` is an IPv4 address (IPv4-mapped). */
function isIPv4Bytes(bytes: AddressBytes, at = 0): boolean {
  for (let i = 0; i < MAPPED; i++) if (bytes[at + i] !== 0) return false;
  return bytes[at + MAPPED] === 0xff && bytes[at + MAPPED + 1] === 0xff;
}

/**
 * The 16 bytes at `at` as limpet keys a client: IPv4 dotted (also when IPv4-mapped), IPv6 the way
 * Node (libuv's inet_ntop) spells a socket's peer — the longest run of zero groups, the first of
 * equals, as "::", hex in lower case, an IPv4-compatible tail (::a.b.c.d) dotted.
 */
export function formatAddress(bytes: AddressBytes, at = 0): string {
  if (isIPv4Bytes(bytes, at)) return dotted(bytes, at + 12);
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((bytes[at + i] as number) << 8) | (bytes[at + i + 1] as number));
  let best = -1;
  let bestLength = 0;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && words[end] === 0) end++;
    if (end - i > bestLength) [best, bestLength] = [i, end - i];
    i = end;
  }
  if (bestLength < 2) best = -1;
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (best >= 0 && i >= best && i < best + bestLength) {
      if (i === best) text += ':';
      continue;
    }
    if (i !== 0) text += ':';
    if (i === 6 && best === 0 && bestLength === 6) return text + dotted(bytes, at + 12);
    text += (words[i] as number).toString(16);
  }
  return best >= 0 && best + bestLength === 8 ? `${text}:` : text;
}

function dotted(bytes: AddressBytes, at: number): string {
  return `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`;
}

/** Reads `text[start, end)` as a dotted quad into `out[at, at + 4)`. */
function parseIPv4(text: string, start: number, end: number, out: AddressBytes, at: number): boolean {
  let parts = 0;
  let octet = 0;
  let digits = 0;
  for (let i = start; i <= end; i++) {
    const c = i === end ? 46 /* . */ : text.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || parts === 4) return false;
      out[at + parts++] = octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && octet === 0) return false; // a leading zero
      octet = octet * 10 + c - 48;
      if (octet > 255) return false;
      digits++;
    } else return false;
  }
  return parts === 4;
}

/** Reads IPv6 text into `out` in one pass over its characters (no splitting: this runs per connection). */
function parseIPv6(text: string, out: AddressBytes): boolean {
  const n = text.length;
  let words = 0;
  /** Where "::" stands, in words; -1 when there is none. */
  let gap = -1;
  let i = 0;
  if (text.charCodeAt(0) === COLON) {
    if (text.charCodeAt(1) !== COLON) return false;
    gap = 0;
    i = 2;
  }
  while (i < n) {
    const start = i;
    let value = 0;
    for (let digit = hexDigit(text.charCodeAt(i)); digit >= 0 && i - start < 5; digit = hexDigit(text.charCodeAt(++i))) value = value * 16 + digit;
    if (text.charCodeAt(i) === DOT) {
      // A dotted IPv4 address may end the text, as its last two words.
      if (words > 6 || !parseIPv4(text, start, n, out, words * 2)) return false;
      words += 2;
      break;
    }
    if (i === start || i - start > 4 || words === 8) return false;
    out[words * 2] = value >> 8;
    out[words * 2 + 1] = value & 0xff;
    words++;
    if (i === n) break;
    if (text.charCodeAt(i++) !== COLON || i === n) return false;
    if (text.charCodeAt(i) === COLON) {
      if (gap >= 0) return false;
      gap = words;
      i++;
    }
  }
  if (gap < 0) return words === 8;
  if (words > 7) return false;
  // The words after "::" belong at the end; zeros in between.
  const after = (words - gap) * 2;
  out.copyWithin(16 - after, gap * 2, words * 2);
  out.fill(0, gap * 2, 16 - after);
  return true;
}

const COLON = 58;
const DOT = 46;

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48;
  if (c >= 97 && c <= 102) return c - 87;
  if (c >= 65 && c <= 70) return c - 55;
  return -1;
}

/** Whether the first `bits` bits of `a` and `b` are the same. */
export function samePrefix(a: AddressBytes, b: AddressBytes, bits: number): boolean {
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((a[whole] as number) & mask) === ((b[whole] as number) & mask);
}
