import { pathToFileURL } from 'node:url';
import { PinTable } from '../src/affinity/pin-table.js';
import { Backend } from '../src/upstream/backend.js';
import { hashKey } from '../src/selection/hash.js';

/**
 * Memory per remembered pin and the cost of the pin table on the request path (ip/header modes).
 * Run with --expose-gc for stable memory figures: node --expose-gc dist/bench/pin-table.js
 */
export interface PinTableFigures {
  entries: number;
  bytesPerPin: number;
  hitNs: number;
  missAndSetNs: number;
  hashKeyNs: number;
}

function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

function ipv4(i: number): string {
  return `${10 + ((i >>> 24) & 0x7f)}.${(i >>> 16) & 0xff}.${(i >>> 8) & 0xff}.${i & 0xff}`;
}

function timeNs(ops: number, body: () => void): number {
  const start = process.hrtime.bigint();
  body();
  return Number(process.hrtime.bigint() - start) / ops;
}

export function runPinTableBench(entries = 1_000_000): PinTableFigures {
  const backends = [1, 2, 3].map((i) => new Backend({ id: `b${i}`, url: `http://127.0.0.1:${3000 + i}`, weight: 1, drain: false, drainDeadline: null, healthPath: null }, { connectTimeout: 1000, keepAliveTimeout: 1000, maxConnections: 0 }, () => {}));
  gc();
  const before = process.memoryUsage().heapUsed;
  const table = new PinTable(30 * 60_000, entries);
  const now = Math.floor(Date.now() / 1000);
  // Keys made here and kept only by the table, as a request's address string is: the figure includes them.
  for (let i = 0; i < entries; i++) table.set(ipv4(i * 2654435761), backends[i % 3] as Backend, now);
  gc();
  const after = process.memoryUsage().heapUsed;
  const bytesPerPin = (after - before) / entries;
  // Lookups use fresh strings, like the next request of the same client.
  const keys = Array.from({ length: entries }, (_, i) => ipv4(i * 2654435761));

  let sink = 0;
  const lookups = 2_000_000;
  const hitNs = timeNs(lookups, () => {
    for (let i = 0; i < lookups; i++) sink += table.get(keys[(i * 7919) % entries] as string, now)?.serial ?? 0;
  });
  const fresh = Array.from({ length: 200_000 }, (_, i) => `192.168.${(i >>> 8) & 0xff}.${i & 0xff}:${i}`);
  const small = new PinTable(30 * 60_000, 100_000);
  const missAndSetNs = timeNs(fresh.length, () => {
    for (const key of fresh) if (small.get(key, now) === undefined) small.set(key, backends[0] as Backend, now);
  });
  const hashKeyNs = timeNs(lookups, () => {
    for (let i = 0; i < lookups; i++) sink ^= hashKey(keys[i % entries] as string);
  });
  if (sink === 0.5) console.log(sink);
  for (const backend of backends) void backend.dispatcher.close();
  return { entries, bytesPerPin, hitNs, missAndSetNs, hashKeyNs };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if ((globalThis as { gc?: unknown }).gc === undefined) console.warn('run with --expose-gc for exact memory figures');
  const f = runPinTableBench(Number(process.env.PIN_ENTRIES ?? 1_000_000));
  console.log(`pin table, ${f.entries.toLocaleString('en')} remembered clients (IPv4 keys)`);
  console.log(`  memory per pin (key string included)     ${f.bytesPerPin.toFixed(0)} bytes`);
  console.log(`  lookup of a remembered client            ${f.hitNs.toFixed(0)} ns`);
  console.log(`  new client: miss + insert (with evictions) ${f.missAndSetNs.toFixed(0)} ns`);
  console.log(`  hashKey (for comparison)                 ${f.hashKeyNs.toFixed(0)} ns`);
}
