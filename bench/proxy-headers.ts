// PROXY protocol headers built byte by byte, and the named cases limpet, HAProxy and nginx are sent
// (test/proxy-protocol.test.ts asserts limpet's outcome of each; bench/proxy-protocol-peers.ts
// shows what the peers do with the same bytes).
import { isIPv4 } from 'node:net';

export const V2_SIGNATURE = Buffer.from('\r\n\r\n\0\r\nQUIT\n', 'latin1');

/** A v1 line: `PROXY <rest>\r\n`. */
export function v1(rest: string): Buffer {
  return Buffer.from(`PROXY ${rest}\r\n`, 'latin1');
}

export interface V2Fields {
  /** The byte after the signature: version (high nibble) and command (low): 0x21 PROXY, 0x20 LOCAL. */
  versionCommand?: number;
  /** Family (high nibble) and transport (low): 0x11 TCP over IPv4, 0x21 TCP over IPv6. */
  familyTransport?: number;
  source?: string;
  destination?: string;
  sourcePort?: number;
  destinationPort?: number;
  /** Type-length-value entries after the addresses. */
  tlvs?: { type: number; value: Buffer }[];
  /** Appends a CRC32C TLV; `'wrong'` gives it a checksum that does not match. */
  crc32c?: 'right' | 'wrong';
  /** Overrides the length field (bytes after the 16 fixed ones) with a false one. */
  lengthField?: number;
  /** Raw bytes in place of the addresses (to build a too-short block). */
  addressBlock?: Buffer;
}

/** A v2 header; without fields, PROXY over TCP/IPv4 from 192.0.2.10:40000 to 198.51.100.1:443. */
export function v2(fields: V2Fields = {}): Buffer {
  const family = fields.familyTransport ?? (fields.source !== undefined && !isIPv4(fields.source) ? 0x21 : 0x11);
  const source = fields.source ?? (family >> 4 === 2 ? '2001:db8::10' : '192.0.2.10');
  const destination = fields.destination ?? (family >> 4 === 2 ? '2001:db8::1' : '198.51.100.1');
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(fields.sourcePort ?? 40000, 0);
  ports.writeUInt16BE(fields.destinationPort ?? 443, 2);
  const addresses =
    fields.addressBlock ?? (family >> 4 === 1 ? Buffer.concat([ipv4Bytes(source), ipv4Bytes(destination), ports]) : family >> 4 === 2 ? Buffer.concat([ipv6Bytes(source), ipv6Bytes(destination), ports]) : Buffer.alloc(0));
  const tlvs = (fields.tlvs ?? []).map(({ type, value }) => tlv(type, value));
  if (fields.crc32c !== undefined) tlvs.push(tlv(0x03, Buffer.alloc(4)));
  const body = Buffer.concat([addresses, ...tlvs]);
  const fixed = Buffer.alloc(4);
  fixed[0] = fields.versionCommand ?? 0x21;
  fixed[1] = family;
  fixed.writeUInt16BE(fields.lengthField ?? body.length, 2);
  const header = Buffer.concat([V2_SIGNATURE, fixed, body]);
  if (fields.crc32c !== undefined) {
    const checksum = crc32c(header);
    header.writeUInt32BE(fields.crc32c === 'right' ? checksum : (checksum ^ 1) >>> 0, header.length - 4);
  }
  return header;
}

function tlv(type: number, value: Buffer): Buffer {
  const head = Buffer.alloc(3);
  head[0] = type;
  head.writeUInt16BE(value.length, 1);
  return Buffer.concat([head, value]);
}

function ipv4Bytes(address: string): Buffer {
  return Buffer.from(address.split('.').map(Number));
}

/** The 16 bytes of an IPv6 address, from its text (expanded here, not with limpet's code). */
export function ipv6Bytes(address: string): Buffer {
  const [head = '', tail] = address.split('::');
  const groups = (text: string) => (text === '' ? [] : text.split(':'));
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const last = right.length > 0 ? right[right.length - 1]! : left[left.length - 1]!;
  // A trailing dotted IPv4 part stands for two groups.
  const dotted = isIPv4(last) ? ipv4Bytes(last) : null;
  if (dotted !== null) (right.length > 0 ? right : left).splice(-1, 1, dotted.readUInt16BE(0).toString(16), dotted.readUInt16BE(2).toString(16));
  const zeros = 8 - left.length - right.length;
  const all = [...left, ...Array<string>(tail === undefined ? 0 : zeros).fill('0'), ...right];
  const bytes = Buffer.alloc(16);
  all.forEach((group, i) => bytes.writeUInt16BE(parseInt(group, 16), i * 2));
  return bytes;
}

/** CRC32C (Castagnoli), bit by bit: slow and plain, an oracle for limpet's table-driven one. */
export function crc32c(bytes: Buffer): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * First bytes a listed peer sends on a new connection, before a GET; what limpet makes of them: the
 * client address the backend is told (`peer`: the connection's own peer, for v2 LOCAL and v1
 * UNKNOWN), or why the connection is closed.
 */
export interface HeaderCase {
  name: string;
  bytes: Buffer;
  limpet: { client: string } | { refused: 'missing' | 'malformed' | 'oversized' };
}

const FULL_V6 = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';

const AWS_VPC_ENDPOINT = { type: 0xea, value: Buffer.from('\x01vpce-08d2bf15fac5001c9', 'latin1') };

export const HEADER_CASES: readonly HeaderCase[] = [
  { name: 'v1 TCP4', bytes: v1('TCP4 192.0.2.10 198.51.100.1 40000 443'), limpet: { client: '192.0.2.10' } },
  { name: 'v1 TCP6, long spelling', bytes: v1('TCP6 2001:DB8:0:0:0:0:0:10 2001:db8::1 40000 443'), limpet: { client: '2001:db8::10' } },
  { name: 'v1 TCP6, IPv4-mapped', bytes: v1('TCP6 ::ffff:192.0.2.10 ::ffff:198.51.100.1 40000 443'), limpet: { client: '192.0.2.10' } },
  { name: 'v1 UNKNOWN', bytes: v1('UNKNOWN'), limpet: { client: 'peer' } },
  { name: 'v1 UNKNOWN with addresses', bytes: v1('UNKNOWN 192.0.2.10 198.51.100.1 40000 443'), limpet: { client: 'peer' } },
  { name: 'v1 TCP6, longest', bytes: v1(`TCP6 ${FULL_V6} ${FULL_V6} 65535 65535`), limpet: { client: FULL_V6 } },
  { name: 'v1 UNKNOWN of 107 bytes', bytes: v1(`UNKNOWN ${FULL_V6} ${FULL_V6} 65535 65535`), limpet: { client: 'peer' } },
  { name: 'v2 TCP4', bytes: v2(), limpet: { client: '192.0.2.10' } },
  { name: 'v2 TCP6', bytes: v2({ source: '2001:db8::10' }), limpet: { client: '2001:db8::10' } },
  { name: 'v2 TCP6, IPv4-mapped', bytes: v2({ source: '::ffff:192.0.2.10', destination: '::ffff:198.51.100.1' }), limpet: { client: '192.0.2.10' } },
  { name: 'v2 LOCAL (a health check)', bytes: v2({ versionCommand: 0x20, familyTransport: 0x00 }), limpet: { client: 'peer' } },
  { name: 'v2 LOCAL with an address block', bytes: v2({ versionCommand: 0x20 }), limpet: { client: 'peer' } },
  { name: 'v2 with TLVs (AWS VPC endpoint, NOOP)', bytes: v2({ tlvs: [AWS_VPC_ENDPOINT, { type: 0x04, value: Buffer.alloc(7) }] }), limpet: { client: '192.0.2.10' } },
  { name: 'v2 with a matching CRC32C', bytes: v2({ tlvs: [AWS_VPC_ENDPOINT], crc32c: 'right' }), limpet: { client: '192.0.2.10' } },
  { name: 'no header: plain HTTP', bytes: Buffer.alloc(0), limpet: { refused: 'missing' } },
  { name: 'no header: a TLS record', bytes: Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0, 0, 1, 0]), limpet: { refused: 'missing' } },
  { name: 'v1 lower case', bytes: Buffer.from('proxy TCP4 192.0.2.10 198.51.100.1 40000 443\r\n'), limpet: { refused: 'missing' } },
  { name: 'v1 two spaces', bytes: v1('TCP4 192.0.2.10  198.51.100.1 40000 443'), limpet: { refused: 'malformed' } },
  { name: 'v1 LF without CR', bytes: Buffer.from('PROXY TCP4 192.0.2.10 198.51.100.1 40000 443\n'), limpet: { refused: 'malformed' } },
  { name: 'v1 unknown protocol', bytes: v1('UDP4 192.0.2.10 198.51.100.1 40000 443'), limpet: { refused: 'malformed' } },
  { name: 'v1 missing port', bytes: v1('TCP4 192.0.2.10 198.51.100.1 40000'), limpet: { refused: 'malformed' } },
  { name: 'v1 port 65536', bytes: v1('TCP4 192.0.2.10 198.51.100.1 65536 443'), limpet: { refused: 'malformed' } },
  { name: 'v1 port with a leading zero', bytes: v1('TCP4 192.0.2.10 198.51.100.1 040000 443'), limpet: { refused: 'malformed' } },
  { name: 'v1 address octet 256', bytes: v1('TCP4 192.0.2.256 198.51.100.1 40000 443'), limpet: { refused: 'malformed' } },
  { name: 'v1 TCP4 with IPv6 addresses', bytes: v1('TCP4 2001:db8::10 2001:db8::1 40000 443'), limpet: { refused: 'malformed' } },
  { name: 'v1 TCP6 with IPv4 addresses', bytes: v1('TCP6 192.0.2.10 198.51.100.1 40000 443'), limpet: { refused: 'malformed' } },
  { name: 'v1 IPv6 zone id', bytes: v1('TCP6 fe80::1%eth0 fe80::2 40000 443'), limpet: { refused: 'malformed' } },
  { name: 'v1 of 108 bytes', bytes: v1(`UNKNOWN ${'x'.repeat(92)}`), limpet: { refused: 'oversized' } },
  { name: 'v2 version 1', bytes: v2({ versionCommand: 0x11 }), limpet: { refused: 'malformed' } },
  { name: 'v2 command 2', bytes: v2({ versionCommand: 0x22 }), limpet: { refused: 'malformed' } },
  { name: 'v2 PROXY over UDP', bytes: v2({ familyTransport: 0x12 }), limpet: { refused: 'malformed' } },
  { name: 'v2 PROXY, UNIX socket', bytes: v2({ familyTransport: 0x31, addressBlock: Buffer.alloc(216) }), limpet: { refused: 'malformed' } },
  { name: 'v2 PROXY, unspecified family', bytes: v2({ familyTransport: 0x00 }), limpet: { refused: 'malformed' } },
  { name: 'v2 TCP4, address block of 8 bytes', bytes: v2({ addressBlock: Buffer.alloc(8) }), limpet: { refused: 'malformed' } },
  { name: 'v2 TCP6, address block of 12 bytes', bytes: v2({ familyTransport: 0x21, addressBlock: Buffer.alloc(12) }), limpet: { refused: 'malformed' } },
  { name: 'v2 TLV longer than the header', bytes: v2({ tlvs: [AWS_VPC_ENDPOINT], lengthField: 12 + 10 }), limpet: { refused: 'malformed' } },
  { name: 'v2 CRC32C that does not match', bytes: v2({ tlvs: [AWS_VPC_ENDPOINT], crc32c: 'wrong' }), limpet: { refused: 'malformed' } },
  { name: 'v2 of 5,019 bytes', bytes: v2({ tlvs: [{ type: 0xe0, value: Buffer.alloc(4988) }] }), limpet: { refused: 'oversized' } },
];
