// Memory on big transfers: how much limpet's RSS grows for one 20 MiB upload and one 20 MiB
// download through it, after a warm-up.
//
//   npm run build && node dist/bench/transfer-memory.js
//
// limpet runs as a child process (as the `limpet` command starts it, with its runtime flags); its
// RSS and peak RSS (VmRSS, VmHWM) are read from /proc. The backend and the client run in this
// process: the backend reads uploads and streams downloads in 64 KiB writes, honouring
// backpressure; the client sends and reads as fast as loopback allows. The warm-up (small GETs, a
// 1 MiB upload and download) runs every code path once, so what grows afterwards is what the big
// transfers themselves cost, not first-use compilation and pool set-up.
//
// Environment: TRANSFER_MIB (default 20), TRANSFER_ROUNDS (default 3: the big pair runs this many
// times, each measured from the RSS just before it), TRANSFER_LIMPET_CLI (another build's
// dist/src/cli.js, e.g. the branch point's, to measure it instead), TRANSFER_NODE_ARGS (extra
// node flags for limpet, e.g. --trace-gc).
import http from 'node:http';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { distRoot, freePort, intFromEnv, isSkipped, startServerTarget, stopChildren } from './harness.js';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';

const MIB = 1024 * 1024;
const SIZE = intFromEnv('TRANSFER_MIB', 20) * MIB;
const ROUNDS = intFromEnv('TRANSFER_ROUNDS', 3);
const CHUNK = Buffer.alloc(64 * 1024, 'x');

/** Reads uploads (answers the byte count) and streams downloads of `?bytes=N`. */
function startBackend(): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method === 'POST') {
      let length = 0;
      req.on('data', (chunk: Buffer) => (length += chunk.length));
      req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end(String(length)));
      return;
    }
    const bytes = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('bytes') ?? 3);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bytes) });
    let left = bytes;
    const write = (): void => {
      while (left > 0) {
        const piece = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
        left -= piece.length;
        if (left === 0) res.end(piece);
        else if (!res.write(piece)) return void res.once('drain', write);
      }
    };
    write();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

/** GETs `bytes` through the proxy and reads them all; resolves with the count read. */
function download(origin: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    http.get(`${origin}/download?bytes=${bytes}`, { agent }, (res) => {
      let length = 0;
      res.on('data', (chunk: Buffer) => (length += chunk.length));
      res.on('end', () => resolve(length));
      res.on('error', reject);
    }).on('error', reject);
  });
}

/** POSTs `bytes` through the proxy in 64 KiB writes, honouring backpressure; resolves with the count the backend read. */
function upload(origin: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${origin}/upload`, { method: 'POST', agent, headers: { 'content-length': String(bytes) } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(Number(body)));
    });
    req.on('error', reject);
    let left = bytes;
    const write = (): void => {
      while (left > 0) {
        const piece = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
        left -= piece.length;
        if (left === 0) req.end(piece);
        else if (!req.write(piece)) return void req.once('drain', write);
      }
    };
    write();
  });
}

/** VmRSS and VmHWM of a process, in MB. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

const mb = (value: number) => `${value.toFixed(1)} MB`;

const cli = process.env.TRANSFER_LIMPET_CLI ?? path.join(distRoot, 'src', 'cli.js');
const nodeArgs = (process.env.TRANSFER_NODE_ARGS ?? '').split(' ').filter(Boolean);
const backend = await startBackend();
const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-transfer-'));
try {
  const [port, adminPort] = [await freePort(), await freePort()];
  const config = path.join(tmp, 'limpet.yaml');
  writeFileSync(config, [
    `listen: 127.0.0.1:${port}`,
    `admin: { listen: "127.0.0.1:${adminPort}" }`,
    'log: { level: warn }',
    'affinity: { by: ip }',
    'backends:',
    `  - { id: b1, url: "http://127.0.0.1:${(backend.address() as AddressInfo).port}" }`,
    '',
  ].join('\n'));
  const argv = [process.execPath, ...RUNTIME_FLAGS, ...nodeArgs, cli, '--config', config];
  const target = await startServerTarget('limpet', cli, argv, undefined, `http://127.0.0.1:${port}`);
  if (isSkipped(target)) throw new Error(`limpet did not start: ${target.reason}`);
  const pid = target.serverPid;
  const origin = target.origin;

  for (let i = 0; i < 200; i++) await download(origin, 3);
  for (let i = 0; i < 3; i++) {
    await upload(origin, MIB);
    await download(origin, MIB);
  }
  const settled = memory(pid);
  process.stdout.write(`limpet: ${path.relative(process.cwd(), cli) || cli}${nodeArgs.length > 0 ? ` (node ${nodeArgs.join(' ')})` : ''}\n`);
  process.stdout.write(`after warm-up: RSS ${mb(settled.rss)}\n`);
  const growth: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const before = memory(pid);
    const peakKnown = resetPeak(pid);
    const sent = await upload(origin, SIZE);
    const received = await download(origin, SIZE);
    if (sent !== SIZE || received !== SIZE) throw new Error(`transfer incomplete: uploaded ${sent}, downloaded ${received} of ${SIZE}`);
    const after = memory(pid);
    growth.push(after.rss - before.rss);
    process.stdout.write(
      `round ${round}: ${SIZE / MIB} MiB up + ${SIZE / MIB} MiB down: RSS ${mb(before.rss)} → ${mb(after.rss)} (+${mb(after.rss - before.rss)})` +
        `${peakKnown ? `, peak ${mb(after.peak)} (+${mb(after.peak - before.rss)})` : ''}\n`,
    );
  }
  const total = memory(pid).rss - settled.rss;
  process.stdout.write(`RSS growth over warm-up: first round +${mb(growth[0]!)}, after ${ROUNDS} rounds +${mb(total)}\n`);
} finally {
  agent.destroy();
  backend.close();
  stopChildren();
  rmSync(tmp, { recursive: true, force: true });
}
