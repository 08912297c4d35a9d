import { BlockList, isIP, SocketAddress } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { AddressSet, normaliseAddress } from '../src/affinity/client-address.js';
import { formatAddress, parseAddress } from '../src/affinity/ip-address.js';

// fast-check draws a fresh seed per run and prints it with any counterexample; FC_SEED replays one.
const seed = process.env.FC_SEED === undefined ? {} : { seed: Number(process.env.FC_SEED) };
const runs = (numRuns: number) => ({ numRuns, ...seed });

/** Node's own spelling of an address (libuv's inet_ntop, as for a socket's peer), normalised as limpet keys clients. */
const nodeSpelling = (text: string) => normaliseAddress(new SocketAddress({ address: text, family: isIP(text) === 6 ? 'ipv6' : 'ipv4' }).address);

/** Eight 16-bit groups, zero runs and IPv4-mapped or -compatible shapes made likely. */
const groups = fc.oneof(
  fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 }),
  fc.array(fc.oneof(fc.constant(0), fc.constant(0), fc.nat(0xffff)), { minLength: 8, maxLength: 8 }),
  fc.tuple(fc.nat(0xffff), fc.nat(0xffff)).map(([a, b]) => [0, 0, 0, 0, 0, 0xffff, a, b]),
  fc.tuple(fc.nat(0xffff), fc.nat(0xffff)).map(([a, b]) => [0, 0, 0, 0, 0, 0, a, b]),
);
const hex = (words: number[], pad: boolean, upper: boolean) =>
  words.map((w) => (pad ? w.toString(16).padStart(4, '0') : w.toString(16))).join(':')[upper ? 'toUpperCase' : 'toLowerCase']();
const bytesOf = (words: number[]) => Uint8Array.from(words.flatMap((w) => [w >> 8, w & 0xff]));
const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((o) => o.join('.'));

describe('IP addresses without node:net', () => {
  it('spells any 16 bytes as Node spells a peer address', () => {
    fc.assert(
      fc.property(groups, (words) => {
        expect(formatAddress(bytesOf(words))).toBe(nodeSpelling(hex(words, true, false)));
      }),
      runs(3000),
    );
  });

  it('reads every spelling of an address back to its bytes', () => {
    fc.assert(
      fc.property(groups, fc.boolean(), fc.boolean(), (words, pad, upper) => {
        const bytes = bytesOf(words);
        expect(parseAddress(hex(words, pad, upper))).toEqual(bytes);
        expect(parseAddress(formatAddress(bytes))).toEqual(bytes);
        expect(parseAddress(new SocketAddress({ address: hex(words, true, false), family: 'ipv6' }).address)).toEqual(bytes);
      }),
      runs(2000),
    );
    fc.assert(
      fc.property(v4, (text) => {
        expect(formatAddress(parseAddress(text)!)).toBe(text);
      }),
      runs(500),
    );
  });

  it('takes as an address exactly what node:net takes (zone ids aside)', () => {
    const alphabet = fc.constantFrom(...'0123456789abcdefABCDEF:.'.split(''), '::', '0.0.0.0', 'ffff', '1.2.3.4', '00', '256');
    const text = fc.oneof(fc.array(alphabet, { maxLength: 14 }).map((parts) => parts.join('')), groups.map((w) => hex(w, false, false)), v4);
    const mangled = fc.tuple(text, fc.nat(), fc.string({ maxLength: 2 })).map(([t, at, insert]) => t.slice(0, at % (t.length + 1)) + insert + t.slice(at % (t.length + 1)));
    fc.assert(
      fc.property(fc.oneof(text, mangled), (candidate) => {
        const ours = parseAddress(candidate) !== null;
        expect(ours, candidate).toBe(isIP(candidate) !== 0 && !candidate.includes('%'));
      }),
      runs(5000),
    );
  });

  it('AddressSet answers as BlockList does', () => {
    const address = fc.oneof(v4, groups.map((w) => nodeSpelling(hex(w, false, false))));
    const entry = fc.tuple(address, fc.option(fc.nat(128), { nil: undefined })).map(([a, bits]) => {
      const limit = a.includes(':') ? 128 : 32;
      return bits === undefined ? a : `${a}/${bits % (limit + 1)}`;
    });
    fc.assert(
      fc.property(fc.array(entry, { minLength: 1, maxLength: 4 }), fc.array(address, { minLength: 1, maxLength: 8 }), (entries, addresses) => {
        const list = new BlockList();
        for (const e of entries) {
          const [a, bits] = e.split('/') as [string, string | undefined];
          const family = a.includes(':') ? 'ipv6' : 'ipv4';
          if (bits === undefined) list.addAddress(a, family);
          else list.addSubnet(a, Number(bits), family);
        }
        const set = new AddressSet(entries);
        for (const a of addresses) expect(set.has(a), `${a} in ${entries.join(', ')}`).toBe(list.check(a, a.includes(':') ? 'ipv6' : 'ipv4'));
      }),
      runs(2000),
    );
  });
});
