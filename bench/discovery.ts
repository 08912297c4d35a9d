// Discovery under load: a real DNS server (dnsmasq) names the backends of a `dns` entry, and 20
// changes are made to its answer while cookie clients keep sending requests through limpet.
//
//   npm run build && node dist/bench/discovery.js
//
// Measured for each change, from the moment the DNS server's answer is rewritten (hosts file +
// SIGHUP): for an added address, the time until a new client is first placed on it (limpet must
// resolve again, then health-check it); for a removed address, the time until it takes no new client
// (it drains), and until it is gone from /backends (the drain deadline after that). Across all the
// changes: the responses that were not 200, and the clients that moved although their backend was
// never removed (there must be none: adding a backend moves no cookie client).
//
// limpet runs as the CLI in a child process with `discovery: { interval: 1s, drainDeadline: 2s }`
// and `healthCheck: { interval: 1s }`; backends are HTTP servers in this process on 127.0.1.x, all on
// one port like a headless service's pods. Environment: DISCOVERY_CHANGES (default 20),
// DISCOVERY_CLIENTS (cookie clients under load, default 40), DISCOVERY_INTERVAL (default 1s),
// DISCOVERY_WORKERS (limpet's workers, default 1).
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDnsmasq } from './dnsmasq.js';
import { distRoot, findExecutable, freePort, intFromEnv, isSkipped, startServerTarget, stopChildren } from './harness.js';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';

const CHANGES = intFromEnv('DISCOVERY_CHANGES', 20);
const CLIENTS = intFromEnv('DISCOVERY_CLIENTS', 40);
const INTERVAL = process.env.DISCOVERY_INTERVAL ?? '1s';
const WORKERS = intFromEnv('DISCOVERY_WORKERS', 1);
const DRAIN_DEADLINE = '2s';
const NAME = 'app.bench.limpet.test';
/** Addresses in DNS at the start, and the ones added and removed in turn. */
const ADDRESSES = Array.from({ length: 8 }, (_, i) => `127.0.1.${i + 2}`);
const FIRST = 4;

function quantiles(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  return `min ${at(0).toFixed(0)} ms, median ${at(0.5).toFixed(0)} ms, max ${(sorted.at(-1) ?? 0).toFixed(0)} ms (n=${sorted.length})`;
}

/** One GET; the backend that answered (its address), the status, and the cookie to keep. */
function get(origin: string, agent: http.Agent | false, cookie: string | null): Promise<{ status: number; backend: string; cookie: string | null }> {
  return new Promise((resolve) => {
    const req = http.get(`${origin}/`, { agent, headers: cookie === null ? {} : { cookie } }, (res) => {
      res.resume();
      const set = res.headers['set-cookie']?.[0]?.split(';')[0] ?? null;
      res.on('end', () => resolve({ status: res.statusCode ?? 0, backend: String(res.headers['x-backend'] ?? ''), cookie: set ?? cookie }));
      res.on('error', () => resolve({ status: 0, backend: '', cookie }));
    });
    req.on('error', () => resolve({ status: 0, backend: '', cookie }));
  });
}

async function startBackends(port: number): Promise<http.Server[]> {
  return Promise.all(
    ADDRESSES.map(
      (address) =>
        new Promise<http.Server>((resolve, reject) => {
          const server = http.createServer((_req, res) => res.writeHead(200, { 'x-backend': address, 'content-length': 2 }).end('ok'));
          server.once('error', reject);
          server.listen(port, address, () => resolve(server));
        }),
    ),
  );
}

async function backendStates(adminOrigin: string): Promise<Map<string, string>> {
  const body = await new Promise<string>((resolve) => {
    http.get(`${adminOrigin}/backends`, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      res.on('end', () => resolve(text));
    }).on('error', () => resolve('[]'));
  });
  return new Map((JSON.parse(body) as { id: string; state: string }[]).map((b) => [b.id.slice(NAME.length + 1), b.state]));
}

async function until(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<number> {
  const started = performance.now();
  while (!(await check())) {
    if (performance.now() - started > timeoutMs) throw new Error(`nothing happened within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  return performance.now() - started;
}

const dnsmasq = findExecutable('dnsmasq');
if (dnsmasq === undefined) throw new Error('dnsmasq not found: apt-get install dnsmasq-base');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-discovery-'));
const backendPort = await freePort('127.0.1.2');
const servers = await startBackends(backendPort);
let inDns = ADDRESSES.slice(0, FIRST);
const dns = await startDnsmasq(dnsmasq, { hosts: { [NAME]: inDns } });
try {
  const [port, adminPort] = [await freePort(), await freePort()];
  const configFile = path.join(tmp, 'limpet.yaml');
  writeFileSync(configFile, [
    `listen: 127.0.0.1:${port}`,
    `admin: { listen: "127.0.0.1:${adminPort}" }`,
    'log: { level: warn }',
    `workers: ${WORKERS}`,
    'affinity: { by: cookie, cookie: { secret: discovery-bench } }',
    'healthCheck: { interval: 1s, timeout: 500ms, rise: 1 }',
    `discovery: { interval: ${INTERVAL}, servers: ["${dns.address}"], drainDeadline: ${DRAIN_DEADLINE} }`,
    'backends:',
    `  - { dns: "${NAME}:${backendPort}" }`,
    '',
  ].join('\n'));
  const target = await startServerTarget('limpet', 'limpet', [process.execPath, ...RUNTIME_FLAGS, path.join(distRoot, 'src', 'cli.js'), '--config', configFile], undefined, `http://127.0.0.1:${port}`);
  if (isSkipped(target)) throw new Error(`limpet did not start: ${target.reason}`);
  const admin = `http://127.0.0.1:${adminPort}`;

  // Load: cookie clients, each on its own keep-alive connection, each noting every backend it is sent to.
  const removed = new Set<string>();
  let running = true;
  let responses = 0;
  const failures = new Map<number, number>();
  let movedFromRemoved = 0;
  const movedOtherwise: string[] = [];
  const load = Array.from({ length: CLIENTS }, async (_, i) => {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let cookie: string | null = null;
    let backend: string | null = null;
    while (running) {
      const answer = await get(target.origin, agent, cookie);
      responses++;
      if (answer.status !== 200) failures.set(answer.status, (failures.get(answer.status) ?? 0) + 1);
      else {
        if (backend !== null && answer.backend !== backend) {
          if (removed.has(backend)) movedFromRemoved++;
          else movedOtherwise.push(`client ${i}: ${backend} → ${answer.backend}`);
        }
        backend = answer.backend;
        cookie = answer.cookie;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    agent.destroy();
  });

  await until(async () => [...(await backendStates(admin)).values()].filter((s) => s === 'up').length === FIRST);
  const takesClients: number[] = [];
  const drains: number[] = [];
  const gone: number[] = [];
  let spare = ADDRESSES.slice(FIRST);
  for (let change = 0; change < CHANGES; change++) {
    const started = performance.now();
    if (change % 2 === 0) {
      // Add an address; a new client (no cookie) is placed on it once it is resolved and checked.
      const address = spare.shift()!;
      inDns = [...inDns, address];
      removed.delete(address);
      await dns.set({ hosts: { [NAME]: inDns } });
      await until(async () => (await get(target.origin, false, null)).backend === address);
      takesClients.push(performance.now() - started);
      process.stdout.write(`change ${change + 1}: added ${address}, taking new clients after ${(performance.now() - started).toFixed(0)} ms\n`);
    } else {
      // Remove the oldest address: it drains at once (no new client), and goes at the deadline.
      const address = inDns[0]!;
      inDns = inDns.slice(1);
      removed.add(address);
      await dns.set({ hosts: { [NAME]: inDns } });
      await until(async () => (await backendStates(admin)).get(address) === 'draining');
      drains.push(performance.now() - started);
      await until(async () => !(await backendStates(admin)).has(address));
      gone.push(performance.now() - started);
      spare = [...spare, address];
      process.stdout.write(`change ${change + 1}: removed ${address}, draining after ${drains.at(-1)!.toFixed(0)} ms, gone after ${gone.at(-1)!.toFixed(0)} ms\n`);
    }
  }
  running = false;
  await Promise.all(load);

  process.stdout.write([
    '',
    `limpet (${WORKERS} worker${WORKERS === 1 ? '' : 's'}) with discovery.interval ${INTERVAL}, drainDeadline ${DRAIN_DEADLINE}, healthCheck.interval 1s; ${CLIENTS} cookie clients under load, ${CHANGES} DNS changes`,
    `added address takes new clients: ${quantiles(takesClients)}`,
    `removed address stops taking new clients (draining): ${quantiles(drains)}`,
    `removed address gone (drain deadline passed): ${quantiles(gone)}`,
    `responses: ${responses}, not 200: ${[...failures.values()].reduce((a, b) => a + b, 0)}${failures.size > 0 ? ` (${[...failures].map(([s, n]) => `${s || 'no response'}: ${n}`).join(', ')})` : ''}`,
    `clients moved off a removed address: ${movedFromRemoved}; clients moved otherwise: ${movedOtherwise.length}${movedOtherwise.length > 0 ? ` (${movedOtherwise.slice(0, 5).join('; ')})` : ''}`,
    '',
  ].join('\n'));
  if (failures.size > 0 || movedOtherwise.length > 0) process.exitCode = 1;
} finally {
  stopChildren();
  await dns.close();
  for (const server of servers) server.close();
  rmSync(tmp, { recursive: true, force: true });
}
