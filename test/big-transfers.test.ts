import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { startProxy } from './support/proxy.js';
import type { Limpet } from '../src/limpet.js';

const BULK_PEER = new URL('./support/bulk-peer.mjs', import.meta.url).pathname;
const MIB = 1024 * 1024;

let proxy: Limpet | null = null;
let peer: ChildProcess | null = null;

afterEach(async () => {
  await proxy?.close();
  proxy = null;
  peer?.kill();
  peer = null;
});

/** The backend and client of support/bulk-peer.mjs: `transfer` runs one transfer and resolves with its byte count. */
async function startBulkPeer(): Promise<{ backendPort: number; transfer: (what: 'upload' | 'download', url: string, bytes: number) => Promise<number> }> {
  const child = spawn(process.execPath, [BULK_PEER], { stdio: ['pipe', 'pipe', 'inherit'] });
  peer = child;
  const lines = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  lines.on('line', (line) => waiting.shift()?.(line));
  const next = () => new Promise<string>((resolve) => waiting.push(resolve));
  const backendPort = Number((await next()).split(' ')[1]);
  return {
    backendPort,
    transfer: async (what, url, bytes) => {
      const answer = next();
      child.stdin!.write(`${what} ${url} ${bytes}\n`);
      const [word, count] = (await answer).split(' ');
      if (word !== 'done') throw new Error(`${what} failed: ${count}`);
      return Number(count);
    },
  };
}

describe('big transfers', () => {
  // The proxy runs in this process, the backend and the client in another: the buffers this process
  // holds are the proxy's. Without freeing relayed bodies as it goes, V8 lets dead ones pile up to
  // about 32 MB before a scavenge, and 40 MiB of transfers reach that at least once.
  it('frees relayed body buffers as it goes: a 20 MiB upload and a 20 MiB download never hold 16 MB of buffers', async () => {
    const bulk = await startBulkPeer();
    const started = await startProxy(`affinity: { by: ip }\nbackends:\n  - { id: b1, url: "http://127.0.0.1:${bulk.backendPort}" }`);
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
