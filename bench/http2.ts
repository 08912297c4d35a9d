// HTTP/2 at the edge (`npm run bench:http2`; see bench/README.md):
// 1. Throughput on one core: h2load through limpet over HTTP/2, beside HTTP/1.1 over TLS through the
//    same limpet (h2load --h1), and beside nginx and HAProxy with HTTP/2, each pinned to one core, in
//    one interleaved run: requests/s, p50/p99, server CPU per request and requests per core-second.
// 2. Memory per idle HTTP/2 connection: limpet beside a bare node:http2 server (the floor any Node
//    proxy stands on), and limpet's idle HTTPS/1.1 connection.
// 3. A rapid-reset flood (CVE-2023-44487): a client opening and cancelling streams as fast as it can,
//    reconnecting whenever it is thrown out, while h2load plays another client; what limpet did, and
//    nginx and HAProxy under the same flood.
//
// Environment: BENCH_ROUNDS (default 3), BENCH_DURATION seconds per run (default 5),
// BENCH_IDLE_CONNECTIONS (default 3000; needs ulimit -n above 2×), BENCH_FLOOD_SECONDS (default 10),
// BENCH_SECTIONS (default "throughput,idle,flood": which parts to run).
// Needs h2load (Debian nghttp2-client) and openssl; nginx and HAProxy are skipped when absent.
//
// `node dist/bench/http2.js flood URL SECONDS` is the flooding client (a child process of its own).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http2, { constants } from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { fileURLToPath } from 'node:url';
import {
  CLIENT_CPU, describeMachine, describeRun, distRoot, findExecutable, fmtCpuPerReq, fmtMs, fmtRate, fmtRatio, freePort, intFromEnv, isTarget, limpetTarget,
  measure, median, otherLoadAtStart, pinningDescription, recordOutput, SERVER_CPU, startBackends, startChild, startServerTarget, stopChildren,
  summarise, treeCpuSeconds, waitForLine, writeResult, type Backends, type RunResult, type Skipped, type Summary, type Target,
} from './harness.js';
import { capture, parseH2load, pinnedCommand, type LoadResult } from './load.js';
import { startHaproxy, startNginx, type PeerTls } from './peers.js';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';

const ROUNDS = intFromEnv('BENCH_ROUNDS', 3);
const SECONDS = intFromEnv('BENCH_DURATION', 5);
const IDLE_CONNECTIONS = intFromEnv('BENCH_IDLE_CONNECTIONS', 3000);
const FLOOD_SECONDS = intFromEnv('BENCH_FLOOD_SECONDS', 10);
const SECTIONS = new Set((process.env.BENCH_SECTIONS ?? 'throughput,idle,flood').split(',').map((name) => name.trim()));
const BACKEND_COUNT = 3;
const LIMPET = 'limpet';

interface Scenario {
  name: string;
  label: string;
  connections: number;
  /** Concurrent streams per connection over HTTP/2; 0: HTTP/1.1 over TLS. */
  streams: number;
}

const SCENARIOS: Scenario[] = [
  { name: 'h2', label: 'HTTP/2, 50 connections × 10 concurrent streams', connections: 50, streams: 10 },
  { name: 'h1', label: 'HTTP/1.1 over TLS, 50 keep-alive connections', connections: 50, streams: 0 },
];

/** A self-signed certificate for 127.0.0.1 (openssl), with cert and key also in one file for HAProxy. */
function certificate(dir: string): PeerTls {
  const openssl = findExecutable('openssl');
  if (openssl === undefined) throw new Error('openssl is needed (Debian: openssl)');
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync(openssl, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
  const combined = path.join(dir, 'combined.pem');
  writeFileSync(combined, readFileSync(cert, 'utf8') + readFileSync(key, 'utf8'));
  return { cert, key, combined };
}

// ---------------------------------------------------------------------------------------------
// 1. Throughput

interface Row {
  summary: Summary;
  /** Requests per CPU-second of the server: its throughput per core, whether or not it filled its core. */
  perCoreSecond: number | null;
}

async function throughput(backends: Backends, tls: PeerTls, tmp: string): Promise<{ markdown: string[]; rows: Map<string, Map<string, Row>> }> {
  const prepared: (Target | Skipped)[] = [
    await limpetTarget(backends, tmp, { name: LIMPET, description: 'limpet, one process, affinity by ip, TLS with HTTP/2', nodeArgs: [], extraYaml: [], tls, cpus: SERVER_CPU }),
    (await startNginx('nginx', 'nginx, one worker, hash $remote_addr consistent, listen ssl http2', backends, tmp, '1', SERVER_CPU, tls)).prepared,
    (await startHaproxy('haproxy', 'HAProxy, one thread, balance source, bind ssl alpn h2,http/1.1', backends, tmp, 'source', 1, SERVER_CPU, tls)).prepared,
  ];
  const targets = prepared.filter(isTarget);
  for (const skipped of prepared.filter((t): t is Skipped => !isTarget(t))) console.log(`  skipped: ${skipped.name} — ${skipped.reason}`);
  const ourPids = [backends.pid, ...targets.map((t) => t.serverPid)];
  // Counted runs (h2load -n), sized to last about SECONDS at each target's last rate.
  const rates = new Map<string, number>();
  const run = async (target: Target, scenario: Scenario, requests: number) => {
    const result = await measure(target, { tool: 'h2load', path: '/', connections: scenario.connections, streams: scenario.streams, seconds: SECONDS, requests }, { ourPids });
    rates.set(`${target.name} ${scenario.name}`, result.requestsPerSec);
    return result;
  };
  const sized = (target: Target, scenario: Scenario) => Math.max(2_000, Math.round((rates.get(`${target.name} ${scenario.name}`) ?? 1_000) * SECONDS));

  console.log('warm-up');
  for (const target of targets) for (const scenario of SCENARIOS) console.log(describeRun(`${target.name} ${scenario.name}`, await run(target, scenario, 3_000)));
  const runs = new Map(SCENARIOS.map((s) => [s.name, new Map<string, RunResult[]>(targets.map((t) => [t.name, []]))]));
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [si, scenario] of SCENARIOS.entries()) {
      console.log(`round ${r}/${ROUNDS} — ${scenario.label}`);
      const shift = (r - 1 + si) % targets.length;
      for (const target of targets.map((_, i) => targets[(i + shift) % targets.length]!)) {
        const result = await run(target, scenario, sized(target, scenario));
        runs.get(scenario.name)!.get(target.name)!.push(result);
        console.log(describeRun(target.name, result));
      }
    }
  }
  const rows = new Map(
    SCENARIOS.map((s) => [
      s.name,
      new Map(
        targets.map((t) => {
          const summary = summarise(runs.get(s.name)!.get(t.name)!);
          return [t.name, { summary, perCoreSecond: summary.cpuUsPerRequest === null ? null : Math.round(1e6 / summary.cpuUsPerRequest) }];
        }),
      ),
    ]),
  );
  const markdown = [
    '| target | protocol | req/s | p50 | p99 | server CPU per request | requests per core-second | errors |',
    '|---|---|---:|---:|---:|---:|---:|---:|',
    ...SCENARIOS.flatMap((s) =>
      targets.map((t) => {
        const { summary, perCoreSecond } = rows.get(s.name)!.get(t.name)!;
        return `| ${t.name} | ${s.label} | ${fmtRate(summary.requestsPerSec)} | ${fmtMs(summary.p50Ms)} | ${fmtMs(summary.p99Ms)} | ${fmtCpuPerReq(summary.cpuUsPerRequest)} | ${perCoreSecond === null ? '—' : fmtRate(perCoreSecond)} | ${summary.errors + summary.non2xx} |`;
      }),
    ),
  ];
  const limpetH2 = rows.get('h2')!.get(LIMPET);
  const ratio = (row: Row | undefined) => (limpetH2?.perCoreSecond == null || row?.perCoreSecond == null ? null : limpetH2.perCoreSecond / row.perCoreSecond);
  markdown.push(
    '',
    `limpet over HTTP/2 ÷ …, requests per core-second: limpet over HTTP/1.1 ${fmtRatio(ratio(rows.get('h1')!.get(LIMPET)))}` +
      targets.filter((t) => t.name !== LIMPET).map((t) => `, ${t.name} over HTTP/2 ${fmtRatio(ratio(rows.get('h2')!.get(t.name)))}`).join(''),
  );
  return { markdown, rows };
}

// ---------------------------------------------------------------------------------------------
// 2. Memory per idle connection

function residentKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

/** An HTTP/2 connection that made one request and stays open. */
async function idleHttp2(origin: string): Promise<() => void> {
  const session = http2.connect(origin, { rejectUnauthorized: false });
  session.on('error', () => {});
  await new Promise<void>((resolve, reject) => {
    const stream = session.request({ ':path': '/' });
    stream.on('response', () => stream.resume());
    stream.on('end', resolve);
    stream.on('error', reject);
  });
  return () => session.destroy();
}

/** An HTTPS/1.1 keep-alive connection that made one request and stays open. */
async function idleHttps1(origin: string): Promise<() => void> {
  const { port } = new URL(origin);
  const socket: TLSSocket = tlsConnect({ host: '127.0.0.1', port: Number(port), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
  await new Promise<void>((resolve, reject) => {
    let reply = '';
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n\r\n')) resolve();
    });
    socket.on('error', reject);
    socket.write('GET / HTTP/1.1\r\nHost: bench\r\n\r\n');
  });
  return () => socket.destroy();
}

/** RSS growth of `pid` per idle connection, after a warm-up of 100 connections opened and closed. */
async function bytesPerIdleConnection(pid: number, open: () => Promise<() => void>): Promise<number> {
  for (let i = 0; i < 100; i++) (await open())();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  const before = residentKb(pid);
  const closers: (() => void)[] = [];
  for (let opened = 0; opened < IDLE_CONNECTIONS; opened += 100) {
    closers.push(...(await Promise.all(Array.from({ length: Math.min(100, IDLE_CONNECTIONS - opened) }, open))));
  }
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const after = residentKb(pid);
  for (const close of closers) close();
  return Math.round(((after - before) * 1024) / IDLE_CONNECTIONS);
}

/** A server for the idle measurements, fresh for each: `pid` to read, `origin` to connect to, `stop`. */
interface IdleServer {
  pid: number;
  origin: string;
  stop(): void;
}

/** The floor: Node's own HTTP/2 server, as a Node proxy would build it (allowHTTP1, so it takes HTTPS/1.1 too). */
async function bareHttp2Server(tls: PeerTls): Promise<IdleServer> {
  const port = await freePort();
  const child = startChild(
    [
      process.execPath,
      '-e',
      `const fs = require('fs'); require('http2').createSecureServer({ cert: fs.readFileSync(${JSON.stringify(tls.cert)}), key: fs.readFileSync(${JSON.stringify(tls.key)}), allowHTTP1: true }, (q, s) => s.end('ok')).listen(${port}, '127.0.0.1', () => console.log('listening'));`,
    ],
    undefined,
  );
  await waitForLine(child, /^listening$/m);
  return { pid: child.pid!, origin: `https://127.0.0.1:${port}`, stop: () => child.kill('SIGTERM') };
}

async function limpetServer(backends: Backends, tls: PeerTls, tmp: string): Promise<IdleServer> {
  const limpet = await limpetTarget(backends, tmp, { name: 'limpet-idle', description: 'limpet for idle connections', nodeArgs: [], extraYaml: ['timeouts: { clientIdle: 10m }'], tls, cpus: undefined });
  if (!isTarget(limpet)) throw new Error(`limpet did not start: ${limpet.reason}`);
  return { pid: limpet.serverPid, origin: limpet.origin, stop: () => process.kill(limpet.serverPid, 'SIGTERM') };
}

/** Each figure from a server process of its own, so one kind of connection does not reuse memory another freed. */
async function idleMemory(backends: Backends, tls: PeerTls, tmp: string): Promise<string[]> {
  const measureOn = async (start: () => Promise<IdleServer>, open: (origin: string) => Promise<() => void>) => {
    const server = await start();
    try {
      return fmtBytes(await bytesPerIdleConnection(server.pid, () => open(server.origin)));
    } finally {
      server.stop();
    }
  };
  const bare = () => bareHttp2Server(tls);
  const limpet = () => limpetServer(backends, tls, tmp);
  return [
    `| server | per idle HTTP/2 connection | per idle HTTPS/1.1 connection |`,
    '|---|---:|---:|',
    `| bare node:http2 (createSecureServer, allowHTTP1) | ${await measureOn(bare, idleHttp2)} | ${await measureOn(bare, idleHttps1)} |`,
    `| limpet | ${await measureOn(limpet, idleHttp2)} | ${await measureOn(limpet, idleHttps1)} |`,
  ];
}

const fmtBytes = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB`;

// ---------------------------------------------------------------------------------------------
// 3. Rapid-reset flood

/** What the flooding client saw. */
interface FloodReport {
  connections: number;
  streams: number;
  /** GOAWAY error codes received, by code; "none" for a connection closed without one. */
  goaways: Record<string, number>;
  streamsPerConnection: { median: number; max: number };
}

/**
 * The flooding client: opens streams and cancels them at once (RST_STREAM CANCEL) in bursts of 100,
 * a PING after each burst so it reads what the server says, and reconnects whenever it is thrown out.
 */
async function flood(url: string, seconds: number): Promise<void> {
  const until = Date.now() + seconds * 1000;
  const report: FloodReport = { connections: 0, streams: 0, goaways: {}, streamsPerConnection: { median: 0, max: 0 } };
  const perConnection: number[] = [];
  while (Date.now() < until) {
    const session = http2.connect(url, { rejectUnauthorized: false });
    session.on('error', () => {});
    let code = 'none';
    session.once('goaway', (errorCode: number) => (code = String(errorCode)));
    const connected = await new Promise<boolean>((resolve) => {
      session.once('connect', () => resolve(true));
      session.once('close', () => resolve(false));
    });
    if (!connected) continue;
    report.connections++;
    let opened = 0;
    while (!session.closed && !session.destroyed && Date.now() < until) {
      for (let i = 0; i < 100; i++) {
        const stream = session.request({ ':path': `/flood/${opened++}` });
        stream.on('error', () => {});
        stream.close(constants.NGHTTP2_CANCEL);
      }
      await new Promise<void>((resolve) => {
        if (!session.ping(() => resolve())) resolve();
      });
    }
    session.destroy();
    report.streams += opened;
    perConnection.push(opened);
    report.goaways[code] = (report.goaways[code] ?? 0) + 1;
  }
  report.streamsPerConnection = { median: perConnection.length === 0 ? 0 : median(perConnection), max: Math.max(0, ...perConnection) };
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

/** The proxy's own metrics, as Prometheus text. */
async function scrape(adminPort: number): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/metrics`);
  return response.text();
}

function sampleOf(text: string, pattern: RegExp): number {
  return text.split('\n').filter((line) => pattern.test(line)).reduce((sum, line) => sum + Number(line.split(' ').at(-1)), 0);
}

/** h2load as the other client, `FLOOD_SECONDS` long, connected during a second of warm-up so the timed part has every client serving. */
async function otherClient(origin: string): Promise<LoadResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'limpet-h2load-'));
  try {
    const log = path.join(dir, 'requests.tsv');
    const command = ['h2load', '-t1', '-c10', '-m10', '--warm-up-time=1', '-D', String(FLOOD_SECONDS), `--log-file=${log}`, `${origin}/`];
    const output = await capture(pinnedCommand(command, CLIENT_CPU), (FLOOD_SECONDS + 30) * 1000);
    return parseH2load(output, readFileSync(log, 'utf8'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The other client alone, then again while the flooding client runs; and what the flood cost the server. */
async function floodOne(target: Target): Promise<{ quiet: LoadResult; flooded: LoadResult; report: FloodReport; cpuShare: number }> {
  const quiet = await otherClient(target.origin);
  const cpuBefore = treeCpuSeconds(target.serverPid) ?? 0;
  const flooder = startChild([process.execPath, fileURLToPath(import.meta.url), 'flood', target.origin, String(FLOOD_SECONDS)], CLIENT_CPU);
  const floodOutput = recordOutput(flooder);
  const reportLine = waitForLine(flooder, /^\{.*\}$/m, (FLOOD_SECONDS + 30) * 1000);
  const flooded = await otherClient(target.origin);
  const line = await reportLine.catch((error: Error) => {
    throw new Error(`${error.message}\n${floodOutput()}`);
  });
  const cpu = (treeCpuSeconds(target.serverPid) ?? 0) - cpuBefore;
  return { quiet, flooded, report: JSON.parse(line[0]) as FloodReport, cpuShare: cpu / (FLOOD_SECONDS + 1) };
}

/** A fresh limpet (TLS, HTTP/2, default limits) with an admin port whose counters say what it did. */
async function floodLimpet(backends: Backends, tls: PeerTls, tmp: string): Promise<{ target: Target; adminPort: number }> {
  const port = await freePort();
  const adminPort = await freePort();
  const config = path.join(tmp, 'limpet-flood.yaml');
  writeFileSync(
    config,
    [
      `listen: 127.0.0.1:${port}`,
      `admin: { listen: "127.0.0.1:${adminPort}" }`,
      'log: { level: warn }',
      'affinity: { by: ip }',
      `tls: { cert: "${tls.cert}", key: "${tls.key}" }`,
      'backends:',
      ...backends.origins.map((origin, i) => `  - { id: b${i + 1}, url: "${origin}" }`),
      '',
    ].join('\n'),
  );
  const argv = [process.execPath, ...RUNTIME_FLAGS, path.join(distRoot, 'src', 'cli.js'), '--config', config];
  const target = await startServerTarget(LIMPET, 'limpet under a rapid-reset flood', argv, SERVER_CPU, `https://127.0.0.1:${port}`);
  if (!isTarget(target)) throw new Error(`limpet did not start: ${target.reason}`);
  return { target, adminPort };
}

/** The same flood against limpet, nginx and HAProxy, each fresh and alone on the server core. */
async function rapidReset(backends: Backends, tls: PeerTls, tmp: string): Promise<string[]> {
  const describeGoaways = (report: FloodReport) =>
    Object.entries(report.goaways)
      .map(([code, count]) => `${count} × ${code === String(constants.NGHTTP2_ENHANCE_YOUR_CALM) ? 'ENHANCE_YOUR_CALM' : code === 'none' ? 'none read before the flood ended' : `code ${code}`}`)
      .join(', ');
  const rows: string[] = [];
  let limpetCounters = '';
  const limpet = await floodLimpet(backends, tls, tmp);
  const before = await scrape(limpet.adminPort);
  const peers = [
    { name: LIMPET, start: async () => limpet.target },
    { name: 'nginx', start: async () => (await startNginx('nginx-flood', 'nginx under a rapid-reset flood', backends, tmp, '1', SERVER_CPU, tls)).prepared },
    { name: 'haproxy', start: async () => (await startHaproxy('haproxy-flood', 'HAProxy under a rapid-reset flood', backends, tmp, 'source', 1, SERVER_CPU, tls)).prepared },
  ];
  for (const peer of peers) {
    const target = await peer.start();
    if (!isTarget(target)) {
      rows.push(`| ${peer.name} | skipped: ${target.reason} | | | | | |`);
      continue;
    }
    console.log(`  flooding ${peer.name}`);
    const { quiet, flooded, report, cpuShare } = await floodOne(target);
    rows.push(
      `| ${peer.name} | ${fmtRate(quiet.requestsPerSec)} → ${fmtRate(flooded.requestsPerSec)} | ${fmtMs(quiet.p99Ms)} → ${fmtMs(flooded.p99Ms)} | ` +
        `${quiet.errors + quiet.non2xx} / ${flooded.errors + flooded.non2xx} | ${fmtRate(report.connections)} connections, ${fmtRate(report.streams)} streams | ` +
        `${describeGoaways(report)} | ${report.streamsPerConnection.median} (at most ${report.streamsPerConnection.max}) | ${Math.round(100 * cpuShare)} % |`,
    );
    if (peer.name === LIMPET) {
      const after = await scrape(limpet.adminPort);
      const delta = (pattern: RegExp) => sampleOf(after, pattern) - sampleOf(before, pattern);
      limpetCounters =
        `limpet counted ${fmtRate(delta(/^limpet_http2_streams_reset_total /))} streams reset and closed ${fmtRate(delta(/^limpet_http2_reset_floods_total /))} connections for it; ` +
        `of the cancelled streams, ${fmtRate(delta(/^limpet_requests_total\{backend="none",code="499"\}/))} were stopped before any backend was chosen and ` +
        `${fmtRate(delta(/^limpet_requests_total\{backend="b\d+",code="499"\}/))} had been handed to a backend's pool (and aborted).`;
    }
    process.kill(target.serverPid, 'SIGTERM');
  }
  return [
    '| server | the other client, req/s alone → during the flood | its p99 | its failed requests, alone / during | the flood | GOAWAYs the flooder read | streams it had sent per connection | server core busy during the flood |',
    '|---|---:|---:|---:|---|---|---:|---:|',
    ...rows,
    '',
    limpetCounters,
  ];
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  if (findExecutable('h2load') === undefined) throw new Error('h2load is needed (Debian: apt-get install -y nghttp2-client)');
  const date = new Date().toISOString();
  console.log(`limpet HTTP/2 bench — ${date}`);
  console.log(`machine: ${describeMachine()}`);
  console.log(`pinning: ${pinningDescription()}`);
  console.log(`load: h2load -t1, runs of about ${SECONDS} s (a request count from the target's last rate), ${ROUNDS} interleaved rounds, median reported`);
  const otherLoad = await otherLoadAtStart();
  console.log(`before start: CPU ${otherLoad.cpuBusyPercent ?? '?'}% busy over 1 s, load average ${otherLoad.loadAverage.join(' ')}`);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-http2-'));
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
  try {
    const tls = certificate(tmp);
    const backends = await startBackends(BACKEND_COUNT, ['--raw']);
    const markdown = [`${describeMachine()}; ${date.slice(0, 10)}; load average at start ${otherLoad.loadAverage.join(' ')}. Backends: bench/backend.ts --raw on CPU 1 with h2load.`, ''];
    let throughputRows: Map<string, Map<string, Row>> | null = null;
    if (SECTIONS.has('throughput')) {
      const { markdown: table, rows } = await throughput(backends, tls, tmp);
      throughputRows = rows;
      markdown.push(`### Throughput, one core each (median of ${ROUNDS} interleaved rounds of about ${SECONDS} s each)`, '', ...table, '');
    }
    if (SECTIONS.has('idle')) {
      console.log(`\nidle connections (${IDLE_CONNECTIONS} each)`);
      const table = await idleMemory(backends, tls, tmp);
      console.log(table.join('\n'));
      markdown.push(`### Memory per idle connection (${IDLE_CONNECTIONS} connections, one request each)`, '', ...table, '');
    }
    if (SECTIONS.has('flood')) {
      console.log(`\nrapid-reset flood (${FLOOD_SECONDS} s)`);
      const table = await rapidReset(backends, tls, tmp);
      console.log(table.join('\n'));
      markdown.push(`### Rapid-reset flood (${FLOOD_SECONDS} s; the flooder opens and cancels streams in bursts of 100, a PING between bursts, and reconnects when thrown out; the other client: h2load -c10 -m10)`, '', ...table, '');
    }
    console.log(`\n${markdown.join('\n')}`);
    writeResult('http2-latest.md', `${markdown.join('\n')}\n`);
    const throughputJson = throughputRows === null ? null : Object.fromEntries([...throughputRows].map(([s, m]) => [s, Object.fromEntries(m)]));
    writeResult('http2-latest.json', `${JSON.stringify({ date, rounds: ROUNDS, seconds: SECONDS, throughput: throughputJson }, null, 2)}\n`);
  } finally {
    stopChildren();
  }
}

if (process.argv[2] === 'flood') await flood(process.argv[3]!, Number(process.argv[4]));
else await main();
process.exit(0);
