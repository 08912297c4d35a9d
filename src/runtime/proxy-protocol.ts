import { formatAddress, parseAddress, type AddressBytes } from '../affinity/ip-address.js';

/**
 * The PROXY protocol header (versions 1 and 2, haproxy.org's proxy-protocol.txt) that an L4
 * balancer writes before a connection's first byte to say who the client is. This is a strict,
 * pure reader of the bytes received so far: no I/O, no clock, one call per arrival of bytes.
 */

/** Why bytes are not a header limpet accepts; each a bounded metric label. */
export type ProxyHeaderFault = 'missing' | 'malformed' | 'oversized';

export type ProxyHeaderRead =
  /** Could still become a valid header: wait for more bytes. */
  | { readonly kind: 'incomplete' }
  | { readonly kind: 'invalid'; readonly fault: ProxyHeaderFault }
  /**
   * A valid header of `length` bytes. `source` is the client's normalised address, or null when the
   * header names none (v2 LOCAL, the balancer's own connection; v1 UNKNOWN): the socket's peer is then the client.
   */
  | { readonly kind: 'header'; readonly length: number; readonly source: string | null };

/** Whether bytes begin a PROXY header: `v1`/`v2` once the whole signature is there, `partial` while they still could. */
export type ProxySignature = 'none' | 'partial' | 'v1' | 'v2';

const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1');
const V2_SIGNATURE = Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1');
/** The longest v1 line, CRLF included: the specification's worst case, "PROXY UNKNOWN" and two full IPv6 addresses and ports. */
const V1_MAX_LENGTH = 107;
/** The longest v2 header accepted, TLVs included: what nginx reads at most. Balancers send well under 300 bytes. */
const V2_MAX_LENGTH = 4096;
const V2_FIXED_LENGTH = 16;
const V2_LOCAL = 0x20;
const V2_PROXY = 0x21;
const V2_TCP4 = 0x11;
const V2_TCP6 = 0x21;
const V2_TCP4_ADDRESSES = 12;
const V2_TCP6_ADDRESSES = 36;
const TLV_CRC32C = 0x03;

const INCOMPLETE: ProxyHeaderRead = { kind: 'incomplete' };
const MISSING: ProxyHeaderRead = { kind: 'invalid', fault: 'missing' };
const MALFORMED: ProxyHeaderRead = { kind: 'invalid', fault: 'malformed' };
const OVERSIZED: ProxyHeaderRead = { kind: 'invalid', fault: 'oversized' };

export function proxySignature(bytes: Buffer): ProxySignature {
  const v1 = prefixOf(bytes, V1_SIGNATURE);
  if (v1 === 'whole') return 'v1';
  const v2 = prefixOf(bytes, V2_SIGNATURE);
  if (v2 === 'whole') return 'v2';
  return v1 === 'partial' || v2 === 'partial' ? 'partial' : 'none';
}

/** Reads the header at the start of `bytes`, the first bytes of a connection. */
export function readProxyHeader(bytes: Buffer): ProxyHeaderRead {
  switch (proxySignature(bytes)) {
    case 'v1':
      return readV1(bytes);
    case 'v2':
      return readV2(bytes);
    case 'partial':
      return INCOMPLETE;
    case 'none':
      return MISSING;
  }
}

function prefixOf(bytes: Buffer, signature: Buffer): 'none' | 'partial' | 'whole' {
  const n = Math.min(bytes.length, signature.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== signature[i]) return 'none';
  return n === signature.length ? 'whole' : 'partial';
}

/** `PROXY TCP4|TCP6 <source> <destination> <source port> <destination port>\r\n`, or `PROXY UNKNOWN[ anything]\r\n`. */
const V1_LINE = /^(?:UNKNOWN(?: [\x20-\x7e]*)?|(TCP[46]) ([0-9A-Fa-f.:]+) ([0-9A-Fa-f.:]+) (0|[1-9]\d{0,4}) (0|[1-9]\d{0,4}))$/;

function readV1(bytes: Buffer): ProxyHeaderRead {
  const newline = bytes.subarray(0, V1_MAX_LENGTH).indexOf(0x0a);
  if (newline < 0) return bytes.length >= V1_MAX_LENGTH ? OVERSIZED : INCOMPLETE;
  if (bytes[newline - 1] !== 0x0d) return MALFORMED;
  const match = V1_LINE.exec(bytes.toString('latin1', V1_SIGNATURE.length, newline - 1));
  if (match === null) return MALFORMED;
  const [, family, source, destination, sourcePort, destinationPort] = match;
  if (family === undefined) return { kind: 'header', length: newline + 1, source: null };
  if (Number(sourcePort) > 65535 || Number(destinationPort) > 65535) return MALFORMED;
  const six = family === 'TCP6';
  const client = addressOf(source as string, six);
  if (client === null || addressOf(destination as string, six) === null) return MALFORMED;
  // An IPv4-mapped TCP6 source is keyed as IPv4, as a socket's peer is.
  return { kind: 'header', length: newline + 1, source: formatAddress(client) };
}

/** `text` as an address of the family TCP4 or TCP6 names: a dotted quad, or IPv6 text. */
function addressOf(text: string, six: boolean): AddressBytes | null {
  return text.includes(':') === six ? parseAddress(text) : null;
}

function readV2(bytes: Buffer): ProxyHeaderRead {
  if (bytes.length < V2_FIXED_LENGTH) return INCOMPLETE;
  const command = bytes[12] as number;
  if (command !== V2_PROXY && command !== V2_LOCAL) return MALFORMED;
  const length = V2_FIXED_LENGTH + bytes.readUInt16BE(14);
  if (length > V2_MAX_LENGTH) return OVERSIZED;
  if (bytes.length < length) return INCOMPLETE;
  // LOCAL: the balancer's own connection (health checks). Its address block and TLVs mean nothing.
  if (command === V2_LOCAL) return { kind: 'header', length, source: null };
  const family = bytes[13] as number;
  let source: string;
  let tlvs: number;
  if (family === V2_TCP4) {
    tlvs = V2_FIXED_LENGTH + V2_TCP4_ADDRESSES;
    if (length < tlvs) return MALFORMED;
    source = `${bytes[16]}.${bytes[17]}.${bytes[18]}.${bytes[19]}`;
  } else if (family === V2_TCP6) {
    tlvs = V2_FIXED_LENGTH + V2_TCP6_ADDRESSES;
    if (length < tlvs) return MALFORMED;
    source = formatAddress(bytes, 16);
  } else {
    // UDP, UNIX sockets or an unspecified family: no client address limpet could key a client by.
    // HAProxy and nginx accept these and take the balancer for the client, which pins every
    // client behind it together; limpet refuses them instead.
    return MALFORMED;
  }
  return tlvsValid(bytes, tlvs, length) ? { kind: 'header', length, source } : MALFORMED;
}

/**
 * TLVs are skipped, but each must lie inside the header and the last must end where it ends, and a
 * CRC32C TLV must match the header (as HAProxy checks it).
 */
function tlvsValid(bytes: Buffer, start: number, end: number): boolean {
  let at = start;
  while (at < end) {
    if (at + 3 > end) return false;
    const type = bytes[at] as number;
    const length = bytes.readUInt16BE(at + 1);
    const value = at + 3;
    at = value + length;
    if (at > end) return false;
    if (type === TLV_CRC32C && (length !== 4 || !crc32cMatches(bytes, end, value))) return false;
  }
  return true;
}

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** Whether the CRC32C (Castagnoli) of the header, its checksum field taken as zero, is the checksum field. */
function crc32cMatches(bytes: Buffer, end: number, checksumAt: number): boolean {
  let crc = 0xffffffff;
  for (let i = 0; i < end; i++) {
    const byte = i >= checksumAt && i < checksumAt + 4 ? 0 : (bytes[i] as number);
    crc = (CRC32C_TABLE[(crc ^ byte) & 0xff] as number) ^ (crc >>> 8);
  }
  return (crc ^ 0xffffffff) >>> 0 === bytes.readUInt32BE(checksumAt);
}
