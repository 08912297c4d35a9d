// What the PROXY protocol costs limpet per connection, and whether by: ip stickiness follows the
// address it claims, with a real HAProxy (`mode tcp`) as the L4 balancer in front.
//
//   npm run build && node dist/bench/proxy-protocol.js
//
// Cost: wrk opens a new connection per request (`Connection: close`) to HAProxy, which relays each
// one to limpet. Four ways, in interleaved rounds: HAProxy sending no header to a limpet without
// `proxyProtocol` (the baseline), `send-proxy` (v1) and `send-proxy-v2` to a limpet that lists
// HAProxy's source address, and no header from a peer that limpet does not list (what the key costs
// everyone else). limpet is pinned alone to one core; HAProxy, wrk and the backends share the
// other. Reported: limpet's CPU time and instructions per connection (the same harness as
// `npm run bench`), so the difference to the baseline is the price of the header.
//
// Stickiness: BENCH_CLIENTS clients, each from its own loopback address, send 4 requests each on
// new connections through HAProxy `send-proxy-v2` to limpet (by: ip, three backends); then the same
// through HAProxy without a header to a limpet without the key, where every client is HAProxy.
//
// Environment: BENCH_ROUNDS (3), BENCH_DURATION seconds per run (5), BENCH_CONNECTIONS (50),
// BENCH_CLIENTS (500).
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  CLIENT_CPU, describeMachine, describeRun, findExecutable, fmtCpuPerReq, fmtRate, freePort, intFromEnv, isSkipped, limpetTarget, measure,
  pinningDescription, SERVER_CPU, startBackends, stopChildren, summarise, writeResult, type RunResult, type Summary, type Target,
} from './harness.js';
import { startHaproxyRelay, type Relay, type RelaySettings } from './haproxy-relay.js';
import { chooseLoadTool, pinnedCommand } from './load.js';
import { v1, v2 } from './proxy-headers.js';
import { readProxyHeader } from '../src/runtime/proxy-protocol.js';

const ROUNDS = intFromEnv('BENCH_ROUNDS', 3);
const SECONDS = intFromEnv('BENCH_DURATION', 5);
const CONNECTIONS = intFromEnv('BENCH_CONNECTIONS', 50);
const CLIENTS = intFromEnv('BENCH_CLIENTS', 500);
const REQUESTS_PER_CLIENT = 4;
const BALANCER = '127.0.0.200';
const UNLISTED = '127.0.0.201';

interface Way {
  name: string;
  description: string;
  limpet: 'off' | 'on';
  send: RelaySettings['send'];
  source: string;
}

const WAYS: Way[] = [
  { name: 'no header, key off', description: 'HAProxy sends no header; limpet without proxyProtocol (baseline)', limpet: 'off', send: 'none', source: BALANCER },
  { name: 'send-proxy (v1)', description: 'HAProxy send-proxy; limpet lists HAProxy', limpet: 'on', send: 'send-proxy', source: BALANCER },
  { name: 'send-proxy-v2', description: 'HAProxy send-proxy-v2; limpet lists HAProxy', limpet: 'on', send: 'send-proxy-v2', source: BALANCER },
  { name: 'no header, unlisted', description: 'HAProxy sends no header from an address limpet does not list (key on)', limpet: 'on', send: 'none', source: UNLISTED },
];

const haproxy = findExecutable('haproxy');
if (haproxy === undefined) {
  console.error('haproxy not found (Debian: haproxy)');
  process.exit(2);
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-bench-pp-'));
const relays: Relay[] = [];
// The harness ends its own children on SIGINT/SIGTERM by exiting; HAProxy is not one of them.
process.on('exit', () => {
  for (const relay of relays) relay.child.kill('SIGTERM');
});
try {
  const backends = await startBackends(3, ['--raw']);
  const limpets = {
    off: await limpetTarget(backends, tmp, { name: 'limpet-off', description: 'limpet', nodeArgs: [], extraYaml: [], cpus: SERVER_CPU }),
    on: await limpetTarget(backends, tmp, { name: 'limpet-on', description: 'limpet', nodeArgs: [], extraYaml: [`proxyProtocol: { from: ["${BALANCER}"] }`], cpus: SERVER_CPU }),
  };
  for (const target of Object.values(limpets)) if (isSkipped(target)) throw new Error(`${target.name}: ${target.reason}`);
  const limpetOf = (way: Way) => limpets[way.limpet] as Target;
  const relayTo = async (target: Target, send: RelaySettings['send'], source: string): Promise<string> => {
    const port = await freePort();
    relays.push(await startHaproxyRelay(haproxy, { port, target: Number(new URL(target.origin).port), send, source }, pinnedCommand([], CLIENT_CPU)));
    return `http://127.0.0.1:${port}`;
  };
  const targets: Target[] = [];
  for (const way of WAYS) {
    const limpet = limpetOf(way);
    targets.push({ name: way.name, description: way.description, origin: await relayTo(limpet, way.send, way.source), proxyPid: limpet.proxyPid, serverPid: limpet.serverPid });
  }

  const tool = chooseLoadTool();
  console.log(`PROXY protocol cost per connection: ${describeMachine()}; ${pinningDescription()}`);
  console.log(`${tool}, ${CONNECTIONS} connections, a new connection per request, ${SECONDS} s × ${ROUNDS} rounds\n`);
  const runs = new Map<string, RunResult[]>(targets.map((target) => [target.name, []]));
  const ourPids = [backends.pid, ...Object.values(limpets).map((t) => (t as Target).serverPid), ...relays.map((r) => r.child.pid!)];
  // Not recorded: every path through limpet compiled and warm before the first measured run.
  for (const target of targets) await measure(target, { tool, connections: CONNECTIONS, seconds: 2, headers: { Connection: 'close' }, path: '/' }, { ourPids });
  for (let round = 1; round <= ROUNDS; round++) {
    console.log(`round ${round}`);
    for (const target of targets) {
      const run = await measure(target, { tool, connections: CONNECTIONS, seconds: SECONDS, headers: { Connection: 'close' }, path: '/' }, { ourPids });
      runs.get(target.name)!.push(run);
      console.log(describeRun(target.name, run));
    }
  }
  const summaries = new Map<string, Summary>([...runs].map(([name, list]) => [name, summarise(list)]));
  const baseline = summaries.get(WAYS[0]!.name)!;
  const costRows = WAYS.map((way) => {
    const s = summaries.get(way.name)!;
    const delta = (a: number | null, b: number | null, digits: number) => (a === null || b === null ? '—' : `${a - b >= 0 ? '+' : ''}${(a - b).toFixed(digits)}`);
    return `| ${way.name} | ${fmtRate(s.requestsPerSec)} | ${fmtCpuPerReq(s.cpuUsPerRequest)} | ${delta(s.cpuUsPerRequest, baseline.cpuUsPerRequest, 1)} µs | ${s.kInstructionsPerRequest ?? '—'} k | ${delta(s.kInstructionsPerRequest, baseline.kInstructionsPerRequest, 1)} k | ${s.errors + s.non2xx}${s.disturbedRounds > 0 ? ` (${s.disturbedRounds} disturbed)` : ''} |`;
  });

  console.log('\nStickiness by claimed address');
  const sticky = await stickiness(await relayTo(limpets.on as Target, 'send-proxy-v2', BALANCER));
  const unsticky = await stickiness(targets[0]!.origin);
  const stickRow = (name: string, s: Stickiness) =>
    `| ${name} | ${s.clients} | ${(100 * s.oneBackend / s.clients).toFixed(1)} % | ${s.perBackend.join(' / ')} | ${s.errors} |`;

  const parse = parseCost();
  const markdown = [
    `PROXY protocol through ${spawnSync(haproxy, ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0]} (mode tcp), ${new Date().toISOString().slice(0, 10)}; ${describeMachine()}.`,
    '',
    `Cost per connection: ${tool}, ${CONNECTIONS} connections, a new connection per request, ${SECONDS} s × ${ROUNDS} rounds, medians; limpet alone on one core.`,
    '',
    '| way | req/s | limpet CPU per connection | vs baseline | instructions per connection | vs baseline | errors |',
    '|---|---|---|---|---|---|---|',
    ...costRows,
    '',
    `The header reader alone (readProxyHeader, in this process): ${parse.map(({ name, ns }) => `${name} ${ns} ns`).join(', ')} per header.`,
    '',
    `Stickiness: ${CLIENTS} clients, each from its own loopback address, ${REQUESTS_PER_CLIENT} requests each on new connections, by: ip over three backends.`,
    '',
    '| through HAProxy | clients | on one backend for all their requests | clients per backend | errors |',
    '|---|---|---|---|---|',
    stickRow('send-proxy-v2, proxyProtocol on', sticky),
    stickRow('no header, proxyProtocol off', unsticky),
    '',
  ].join('\n');
  console.log(`\n${markdown}`);
  console.log(`written ${writeResult('proxy-protocol-latest.md', markdown)}`);
} finally {
  await Promise.all(relays.map((relay) => relay.close()));
  stopChildren();
  rmSync(tmp, { recursive: true, force: true });
}

/** Nanoseconds per call of the pure header reader on typical headers, header and request in one buffer. */
function parseCost(): { name: string; ns: number }[] {
  const request = Buffer.from('GET / HTTP/1.1\r\nHost: app.example\r\n\r\n');
  const headers = [
    { name: 'v1 TCP4', bytes: v1('TCP4 192.0.2.10 198.51.100.1 40000 443') },
    { name: 'v1 TCP6', bytes: v1('TCP6 2001:db8::10 2001:db8::1 40000 443') },
    { name: 'v2 TCP4 with an AWS TLV', bytes: v2({ tlvs: [{ type: 0xea, value: Buffer.from('\x01vpce-08d2bf15fac5001c9', 'latin1') }] }) },
    { name: 'v2 TCP6', bytes: v2({ source: '2001:db8::10' }) },
  ];
  return headers.map(({ name, bytes }) => {
    const input = Buffer.concat([bytes, request]);
    const calls = 200_000;
    for (let i = 0; i < calls; i++) readProxyHeader(input);
    const start = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) readProxyHeader(input);
    return { name, ns: Math.round(Number(process.hrtime.bigint() - start) / calls) };
  });
}

interface Stickiness {
  clients: number;
  /** Clients all of whose requests one backend answered. */
  oneBackend: number;
  /** Clients per backend (by their first answer), in backend order. */
  perBackend: number[];
  errors: number;
}

/** Every client sends its requests to `origin` + /id from its own address, a new connection each. */
async function stickiness(origin: string): Promise<Stickiness> {
  const answers: string[][] = Array.from({ length: CLIENTS }, () => []);
  let errors = 0;
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < CLIENTS; i = next++) {
      const localAddress = `127.0.${100 + Math.floor(i / 250)}.${(i % 250) + 1}`;
      for (let r = 0; r < REQUESTS_PER_CLIENT; r++) {
        try {
          answers[i]!.push(await getId(origin, localAddress));
        } catch {
          errors++;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: 20 }, worker));
  const first = new Map<string, number>();
  for (const list of answers) if (list[0] !== undefined) first.set(list[0], (first.get(list[0]) ?? 0) + 1);
  return {
    clients: CLIENTS,
    oneBackend: answers.filter((list) => list.length === REQUESTS_PER_CLIENT && new Set(list).size === 1).length,
    perBackend: ['b1', 'b2', 'b3'].map((id) => first.get(id) ?? 0),
    errors,
  };
}

function getId(origin: string, localAddress: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(`${origin}/id`, { agent: false, localAddress }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`status ${res.statusCode}`))));
      })
      .on('error', reject);
  });
}
