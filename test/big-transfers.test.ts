import { afterEach, describe, expect, it } from 'vitest';
import { startBulkPeer, type BulkPeer } from '../bench/bulk-transfers.js';
import { startProxy } from './support/proxy.js';
import type { Limpet } from '../src/limpet.js';

const BULK_PEER = new URL('../bench/bulk-peer.mjs', import.meta.url).pathname;
const MIB = 1024 * 1024;

let proxy: Limpet | null = null;
let peer: BulkPeer | null = null;

afterEach(async () => {
  await proxy?.close();
  proxy = null;
  peer?.child.kill();
  peer = null;
});

describe('big transfers', () => {
  // The proxy runs in this process, the backend and the client in another: the buffers this process
  // holds are the proxy's. Without freeing relayed bodies as it goes, V8 lets dead ones pile up to
  // about 32 MB before a scavenge, and 40 MiB of transfers reach that at least once.
  it('frees relayed body buffers as it goes: a 20 MiB upload and a 20 MiB download never hold 16 MB of buffers', async () => {
    const bulk = (peer = await startBulkPeer(BULK_PEER));
    const started = await startProxy(`affinity: { by: ip }\nbackends:\n  - { id: b1, url: "${bulk.backend}" }`);
    proxy = started.limpet;
    const url = `http://127.0.0.1:${started.port}`;
    // Warm-up: every code path once.
    expect(await bulk.transfer('upload', url, MIB)).toBe(MIB);
    expect(await bulk.transfer('download', url, MIB)).toBe(MIB);

    const before = process.memoryUsage().arrayBuffers;
    let most = before;
    const sampler = setInterval(() => (most = Math.max(most, process.memoryUsage().arrayBuffers)), 1);
    try {
      expect(await bulk.transfer('upload', url, 20 * MIB)).toBe(20 * MIB);
      expect(await bulk.transfer('download', url, 20 * MIB)).toBe(20 * MIB);
    } finally {
      clearInterval(sampler);
    }
    console.log(`buffers held while relaying 40 MiB: at most ${((most - before) / MIB).toFixed(1)} MB more than before`);
    expect(most - before).toBeLessThan(16 * MIB);
  });
});
