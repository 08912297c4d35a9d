import { afterAll, describe, expect, it } from 'vitest';
import { PinTable } from '../src/affinity/pin-table.js';
import { Backend } from '../src/upstream/backend.js';

const backends = [1, 2].map((i) => new Backend({ id: `b${i}`, url: `http://127.0.0.1:${3000 + i}`, weight: 1, drain: false, drainDeadline: null, healthPath: null }, { connectTimeout: 1000, keepAliveTimeout: 1000, maxConnections: 0 }, () => {}));
const [a, b] = backends as [Backend, Backend];
afterAll(() => Promise.all(backends.map((x) => x.dispatcher.close())));

describe('PinTable', () => {
  it('remembers a pin until it idles out for sessionTtl', () => {
    const table = new PinTable(60_000, 100);
    table.set('k', a, 1000);
    expect(table.get('k', 1059)).toBe(a);
    // touched at 1059, so it lives until 1119
    expect(table.get('k', 1118)).toBe(a);
    expect(table.get('k', 1177)).toBe(a);
    expect(table.get('k', 1237)).toBeUndefined();
    expect(table.size).toBe(0);
  });

  it('never holds more than maxSessions and drops the least recently seen first', () => {
    const table = new PinTable(3_600_000, 128);
    for (let i = 0; i < 128; i++) table.set(`k${i}`, a, 1000 + i);
    // touching k0 long after makes it recent
    expect(table.get('k0', 2000)).toBe(a);
    for (let i = 128; i < 1000; i++) {
      table.set(`k${i}`, b, 2000 + i);
      expect(table.size).toBeLessThanOrEqual(128);
    }
    expect(table.get('k999', 3000)).toBe(b);
    expect(table.get('k1', 3000)).toBeUndefined();
    expect(table.size).toBeGreaterThan(100);
  });

  it('sweeps only idle entries, and counts pins per backend', () => {
    const table = new PinTable(10_000, 100);
    table.set('old', a, 1000);
    table.set('new', b, 1008);
    expect(table.sweep(1012)).toBe(1);
    expect([...table.countByBackend()]).toEqual([[b, 1]]);
    expect(table.snapshot()).toEqual([['new', 'b2']]);
  });

  it('tells onWrite about its own pins but not about pins stored from elsewhere', () => {
    const table = new PinTable(60_000, 100);
    const writes: string[] = [];
    table.onWrite = (key, backend) => writes.push(`${key}=${backend.id}`);
    table.set('mine', a, 1000);
    table.store('theirs', b, 1000);
    expect(writes).toEqual(['mine=b1']);
    expect(table.get('theirs', 1001)).toBe(b);
  });
});
