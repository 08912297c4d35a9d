// What `stateFile` keeps and what it costs. Not a load test: two figures.
//
// 1. Kill -9 and restart. N client addresses (ip affinity, onRecovery: stay) behind three backends;
//    one backend is killed so its clients move, then brought back on the same port (they stay
//    where they moved); once the state file holds every client, limpet is killed with SIGKILL and
//    started again on the same config. How many of the moved clients went back to the backend they
//    had left — with stateFile, and without it for contrast.
// 2. A 100k-pin table: the state file's size, the wall time of one whole atomic write (encode,
//    write, fsync, rename), its CPU time (the cost per second under steady churn, as writes come at
//    most once a second), the longest the event loop was held during it (what a request could
//    wait), and the time to read and decode it at start.
//
//   node dist/bench/state-file.js [clients] [pins]      (default 400 100000; 0 clients: figure 2 only)
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { PinTable } from '../src/affinity/pin-table.js';
import { parseConfig } from '../src/config/load.js';
import { listedBackends } from '../src/discovery/backend-discovery.js';
import type { Logger } from '../src/observe/log.js';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';
import { readStateFile, StateFile } from '../src/state/state-file.js';
import { Backend } from '../src/upstream/backend.js';
import { freePort, waitUntilServing } from './harness.js';

const CLIENTS = Number(process.argv[2] ?? 400);
const PINS = Number(process.argv[3] ?? 100_000);
const ROUNDS = 7;
const here = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const cli = path.resolve(here, '..', 'src', 'cli.js');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-state-bench-'));
const quiet = { info: () => {}, warn: (line: unknown) => console.error(line) } as unknown as Logger;

/** 127.0.60.2 onwards: any 127.x.y.z is local on Linux. */
const address = (i: number) => `127.0.${60 + Math.floor(i / 250)}.${(i % 250) + 2}`;

function startBackend(id: string, port = 0): Promise<http.Server> {
  const server = http.createServer((_req, res) => res.writeHead(200, { 'x-backend': id }).end(id));
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

function stopBackend(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function get(port: number, from?: string, pathname = '/'): Promise<{ status: number; backend: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathname, localAddress: from, agent: false }, (res) => {
      let body = '';
      res.on('data', (chunk: Buffer) => (body += chunk.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, backend: String(res.headers['x-backend']), body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The backend each client is served by (50 at a time, a new connection each). */
async function servedBy(port: number): Promise<string[]> {
  const served: string[] = [];
  for (let start = 0; start < CLIENTS; start += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, CLIENTS - start) }, async (_, j) => {
        const res = await get(port, address(start + j));
        if (res.status !== 200) throw new Error(`client ${start + j}: ${res.status}`);
        return res.backend;
      }),
    );
    served.push(...batch);
  }
  return served;
}

async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const children = new Set<ChildProcess>();

async function startLimpet(config: string, adminPort: number): Promise<ChildProcess> {
  const child = spawn(process.execPath, [...RUNTIME_FLAGS, cli, '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  await waitUntilServing(child, `http://127.0.0.1:${adminPort}/healthz`);
  return child;
}

function killHard(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Figure 1, once with a state file and once without: how many moved clients went back after kill -9 and restart. */
async function killAndRestart(withStateFile: boolean): Promise<{ moved: number; wentBack: number; stayedMoved: number }> {
  const dir = mkdtempSync(path.join(tmp, 'run-'));
  const stateFile = path.join(dir, 'limpet.state');
  const servers = await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id)));
  const ports = servers.map((server) => (server.address() as AddressInfo).port);
  const port = await freePort();
  const adminPort = await freePort();
  const config = path.join(dir, 'limpet.yaml');
  writeFileSync(
    config,
    `listen: 127.0.0.1:${port}\nadmin: { listen: "127.0.0.1:${adminPort}" }\nlog: { level: warn }\naffinity: { by: ip, onRecovery: stay }\n` +
      (withStateFile ? `stateFile: ${stateFile}\n` : '') +
      'healthCheck: { interval: 200ms, timeout: 1s, rise: 1, fall: 3 }\npassive: { cooldown: 200ms }\n' +
      `backends:\n${ports.map((p, i) => `  - { id: app-${i + 1}, url: "http://127.0.0.1:${p}" }\n`).join('')}`,
  );
  let limpet = await startLimpet(config, adminPort);
  try {
    const before = await servedBy(port);
    const moved = before.flatMap((id, i) => (id === 'app-1' ? [i] : []));
    await stopBackend(servers[0] as http.Server);
    const away = await servedBy(port);
    servers[0] = await startBackend('app-1', ports[0]);
    await until(async () => JSON.parse((await get(adminPort, undefined, '/backends/app-1')).body).state === 'up', 'app-1 up again');
    const recovered = await servedBy(port);
    if (moved.some((i) => recovered[i] !== away[i])) throw new Error('a moved client went back on recovery: onRecovery: stay broken');
    if (withStateFile) {
      // What a crash keeps: wait until the file holds every client where it is now.
      await until(async () => {
        const kept = await readStateFile(stateFile, quiet);
        const pins = new Map(kept?.pins.map(([key, id]) => [key, id]));
        return recovered.every((id, i) => pins.get(address(i)) === id);
      }, 'the state file to hold every client');
    }
    await killHard(limpet);
    limpet = await startLimpet(config, adminPort);
    const after = await servedBy(port);
    const wentBack = moved.filter((i) => after[i] === 'app-1').length;
    const stayedMoved = moved.filter((i) => after[i] === recovered[i]).length;
    return { moved: moved.length, wentBack, stayedMoved };
  } finally {
    await killHard(limpet);
    await Promise.all(servers.map(stopBackend));
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] as number;
/** Median, and the best round in brackets: on a busy machine the best is the nearer to the cost itself. */
const figure = (values: number[], unit: string) => `${median(values).toFixed(0)} ${unit} (best ${Math.min(...values).toFixed(0)})`;

/** Figure 2: one whole write of a table of `PINS` pins, and reading it back. */
async function writeAndRead(): Promise<{ bytes: number; walls: number[]; cpus: number[]; held: number[]; reads: number[] }> {
  const config = parseConfig(
    `affinity: { by: ip }\nbackends:\n${[1, 2, 3].map((i) => `  - { id: app-${i}, url: "http://127.0.0.1:${3000 + i}" }\n`).join('')}`,
    path.join(tmp, 'limpet.yaml'),
    {},
  );
  const backends = listedBackends(config.backends).map((entry) => new Backend(entry, { connectTimeout: 1000, keepAliveTimeout: 1000, maxConnections: 0 }, () => {}));
  const table = new PinTable(config.affinity.sessionTtl, PINS);
  const now = Math.floor(Date.now() / 1000);
  for (let i = 0; i < PINS; i++) {
    const n = (i * 2654435761) >>> 0;
    table.set(`${10 + ((n >>> 24) & 0x7f)}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`, backends[i % 3] as Backend, now - Math.floor((PINS - i) / 100));
  }
  const file = path.join(tmp, 'big.state');
  // The same snapshot the proxy hands the file: its pins' records, and its runtime drains.
  const sink = new StateFile(file, { currentConfig: config, durableState: () => ({ pins: table.records(), drains: [{ id: 'app-2', draining: true, deadlineAt: Date.now() + 600_000 }] }) }, quiet);
  const walls: number[] = [];
  const cpus: number[] = [];
  const held: number[] = [];
  const reads: number[] = [];
  for (let round = 0; round < ROUNDS; round++) {
    const loop = monitorEventLoopDelay({ resolution: 1 });
    loop.enable();
    // Let the monitor's timer run first, so a stall at the very start of the write is measured too.
    await new Promise((resolve) => setTimeout(resolve, 20));
    loop.reset();
    const cpu = process.cpuUsage();
    const start = performance.now();
    sink.drainChanged();
    await sink.write();
    walls.push(performance.now() - start);
    const used = process.cpuUsage(cpu);
    cpus.push((used.user + used.system) / 1000);
    loop.disable();
    held.push(loop.max / 1e6);
    const readStart = performance.now();
    const kept = await readStateFile(file, quiet);
    reads.push(performance.now() - readStart);
    if (kept?.pins.length !== PINS) throw new Error(`read back ${kept?.pins.length} pins of ${PINS}`);
  }
  await sink.close();
  for (const backend of backends) void backend.dispatcher.close();
  return { bytes: statSync(file).size, walls, cpus, held, reads };
}

try {
  console.log(`limpet stateFile: ${CLIENTS} ip clients, kill -9 and restart; then one write of ${PINS} pins (median of ${ROUNDS})\n`);
  if (CLIENTS > 0) {
    const kept = await killAndRestart(true);
    const lost = await killAndRestart(false);
    const percent = (part: number, whole: number) => `${((100 * part) / whole).toFixed(1)} %`;
    console.log('| kill -9 and restart | clients moved off app-1 | went back to app-1 | still where they moved |');
    console.log('|---|---|---|---|');
    for (const [name, run] of [['with stateFile', kept], ['without stateFile', lost]] as const) {
      console.log(`| ${name} | ${run.moved} of ${CLIENTS} | ${run.wentBack} (${percent(run.wentBack, run.moved)}) | ${run.stayedMoved} (${percent(run.stayedMoved, run.moved)}) |`);
    }
    console.log('');
  }
  const big = await writeAndRead();
  console.log(`| ${PINS} pins | file | one write (wall, fsync included) | its CPU | event loop held at most | read and decode at start |`);
  console.log('|---|---|---|---|---|---|');
  console.log(
    `| state file | ${(big.bytes / 1e6).toFixed(2)} MB (${(big.bytes / PINS).toFixed(1)} B/pin) | ${figure(big.walls, 'ms')} | ${figure(big.cpus, 'ms')} | ${figure(big.held, 'ms')} | ${figure(big.reads, 'ms')} |`,
  );
  console.log(`\n${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, load average ${os.loadavg()[0]!.toFixed(1)}; node ${process.version}`);
} finally {
  for (const child of children) child.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
}
