// What the PROXY protocol costs limpet per connection, and whether by: ip stickiness follows the
// address it claims, with a real HAProxy (`mode tcp`) as the L4 balancer in front.
//
//   npm run build && node dist/bench/proxy-protocol.js
//
// Cost: wrk opens a new connection per request (`Connection: close`) to HAProxy, which relays each
// one to limpet. Five ways, each with a limpet of its own: HAProxy sending no header to a limpet
// without `proxyProtocol` (the baseline), `send-proxy` (v1) and `send-proxy-v2` to a limpet that
// lists HAProxy's source address, and no header from a peer that limpet does not list (what the key
// costs everyone else); and the baseline again in another process, which shows how far two
// identical limpets differ (the noise floor). The five run at the same time, round after round, the limpets on one core
// and HAProxy, wrk and the backends on the other: on a machine shared with other work, whatever
// that work does to one way it does to all five in the same seconds. Reported: each limpet's CPU
// time per connection, from the nanosecond run times in /proc schedstat (the 10 ms ticks of /proc
// stat are too coarse for short rounds), and the median over rounds of each way's difference to
// the baseline of the same round — the price of the header.
//
// Stickiness: BENCH_CLIENTS clients, each from its own loopback address, send 4 requests each on
// new connections through HAProxy `send-proxy-v2` to limpet (by: ip, three backends); then the same
// through HAProxy without a header to a limpet without the key, where every client is HAProxy.
//
// Environment: BENCH_ROUNDS (10), BENCH_DURATION seconds per round (3), BENCH_CONNECTIONS per way
// (16), BENCH_CLIENTS (500).
import http from 'node:http';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import {
  CLIENT_CPU, describeMachine, findExecutable, fmtRate, freePort, intFromEnv, isSkipped, limpetTarget, median, pinningDescription, SERVER_CPU,
  startBackends, stopChildren, writeResult, type Target,
} from './harness.js';
import { startHaproxyRelay, type Relay, type RelaySettings } from './haproxy-relay.js';
import { chooseLoadTool, pinnedCommand, runLoad } from './load.js';
import { v1, v2 } from './proxy-headers.js';
import { readProxyHeader } from '../src/runtime/proxy-protocol.js';

const ROUNDS = intFromEnv('BENCH_ROUNDS', 10);
const SECONDS = intFromEnv('BENCH_DURATION', 3);
const CONNECTIONS = intFromEnv('BENCH_CONNECTIONS', 16);
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
  { name: 'the same, another process', description: 'the baseline again in a process of its own: how far two alike differ', limpet: 'off', send: 'none', source: BALANCER },
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
  // One limpet per way, so each one's CPU time is that way's alone; all on the server core.
  const limpets: Target[] = [];
  for (const [i, way] of WAYS.entries()) {
    const extraYaml = way.limpet === 'on' ? [`proxyProtocol: { from: ["${BALANCER}"] }`] : [];
    const target = await limpetTarget(backends, tmp, { name: `limpet-${i}`, description: way.description, nodeArgs: [], extraYaml, cpus: SERVER_CPU });
    if (isSkipped(target)) throw new Error(`${target.name}: ${target.reason}`);
    limpets.push(target);
  }
  const relayTo = async (target: Target, send: RelaySettings['send'], source: string): Promise<string> => {
    const port = await freePort();
    relays.push(await startHaproxyRelay(haproxy, { port, target: Number(new URL(target.origin).port), send, source }, pinnedCommand([], CLIENT_CPU)));
    return `http://127.0.0.1:${port}`;
  };
  const origins: string[] = [];
  for (const [i, way] of WAYS.entries()) origins.push(await relayTo(limpets[i]!, way.send, way.source));

  const tool = chooseLoadTool();
  console.log(`PROXY protocol cost per connection: ${describeMachine()}; ${pinningDescription()}`);
  console.log(`${tool}, ${CONNECTIONS} connections per way, all ways at once, a new connection per request, ${SECONDS} s × ${ROUNDS} rounds\n`);
  /** Runs every way at the same time; per way, limpet's CPU per connection (µs) and the load result. */
  const round = async (seconds: number) => {
    const before = limpets.map((limpet) => runNanoseconds(limpet.serverPid));
    const loads = await Promise.all(
      origins.map((origin) => runLoad({ tool, url: `${origin}/`, connections: CONNECTIONS, seconds, cpus: CLIENT_CPU, headers: { Connection: 'close' } })),
    );
    return loads.map((load, i) => ({ load, cpu: (runNanoseconds(limpets[i]!.serverPid) - before[i]!) / 1000 / Math.max(1, load.requests) }));
  };
  // Not recorded: every path through limpet compiled and warm before the first measured round.
  await round(2);
  const perWay = WAYS.map(() => ({ cpu: [] as number[], overBaseline: [] as number[], rate: [] as number[], errors: 0 }));
  for (let r = 1; r <= ROUNDS; r++) {
    const results = await round(SECONDS);
    results.forEach(({ load, cpu }, i) => {
      const way = perWay[i]!;
      way.cpu.push(cpu);
      // Paired with the baseline of the same seconds: what other work on the machine did to both cancels out.
      way.overBaseline.push(cpu - results[0]!.cpu);
      way.rate.push(load.requestsPerSec);
      way.errors += load.errors + load.non2xx;
    });
    console.log(`round ${r}: ${results.map(({ load, cpu }, i) => `${WAYS[i]!.name} ${fmtRate(load.requestsPerSec)} req/s ${cpu.toFixed(1)} µs/conn`).join('; ')}`);
  }
  const costRows = WAYS.map((way, i) => {
    const { cpu, overBaseline, rate, errors } = perWay[i]!;
    const change = median(overBaseline);
    const share = (100 * change) / median(perWay[0]!.cpu);
    return `| ${way.name} | ${fmtRate(median(rate))} | ${median(cpu).toFixed(1)} µs | ${i === 0 ? '—' : `${change >= 0 ? '+' : ''}${change.toFixed(1)} µs (${share >= 0 ? '+' : ''}${share.toFixed(1)} %)`} | ${errors} |`;
  });

  console.log('\nStickiness by claimed address');
  const sticky = await stickiness(origins[WAYS.findIndex((way) => way.send === 'send-proxy-v2')]!);
  const unsticky = await stickiness(origins[0]!);
  const stickRow = (name: string, s: Stickiness) =>
    `| ${name} | ${s.clients} | ${(100 * s.oneBackend / s.clients).toFixed(1)} % | ${s.perBackend.join(' / ')} | ${s.errors} |`;

  const parse = parseCost();
  const markdown = [
    `PROXY protocol through ${spawnSync(haproxy, ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0]} (mode tcp), ${new Date().toISOString().slice(0, 10)}; ${describeMachine()}.`,
    '',
    `Cost per connection: ${tool}, ${CONNECTIONS} connections per way, the ${WAYS.length} ways at once (one limpet each, all on one core), a new connection per request, ${SECONDS} s × ${ROUNDS} rounds; limpet's CPU time from /proc schedstat; medians, and the median of each round's difference to the baseline of the same round.`,
    '',
    '| way | req/s | limpet CPU per connection | over the baseline, same round | errors |',
    '|---|---|---|---|---|',
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

/** Time the threads of `pid` have run on a CPU so far, in nanoseconds (/proc schedstat: no 10 ms ticks). */
function runNanoseconds(pid: number): number {
  let total = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      total += Number(readFileSync(`/proc/${pid}/task/${task}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return total;
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
