// Peer comparison: limpet against nginx, HAProxy and the Node proxies a user would otherwise write,
// over keep-alive and reconnect-per-request load, tiny and 100 KB responses, 50 and 500
// connections, in one interleaved run; then latency at half of limpet's peak rate.
// `npm run bench:compare`; see bench/README.md for the method, the targets' configs and the knobs.
//
// Environment: BENCH_ROUNDS (default 3), BENCH_DURATION seconds per run (default 2),
// BENCH_ONLY (targets) and BENCH_SCENARIOS (scenarios): comma-separated names or prefixes, `*`
// allowed (e.g. BENCH_ONLY=limpet-1,nginx BENCH_SCENARIOS='ka-*-50'), BENCH_HALF_LOAD_DURATION
// seconds per half-load run (default 5, 0 skips it), BENCH_TOOL (wrk | autocannon),
// BENCH_LIMPET_BASELINE (another build's dist/src/cli.js: adds target limpet-1-baseline, the same
// settings as limpet-1, so a change is measured against its parent in one interleaved run).
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  baselineTarget, CLIENT_CPU, describeRun, directTarget, divide, fmtCpuPerReq, fmtMs, fmtRate, fmtRatio, intFromEnv,
  isTarget, limpetTarget, describeMachine, machine as readMachine, measure, medianOrNull, otherLoadAtStart, PIN, pinningDescription,
  countersUnavailable, round, SERVER_CPU, startBackends, stopChildren, summarise, writeResult,
  type Backends, type RunResult, type Skipped, type Summary, type Target,
} from './harness.js';
import { chooseLoadTool, type LoadTool } from './load.js';
import { pacedGenerator, runPacedLoad, type PacedGenerator, type PacedResult } from './paced-load.js';
import { startHaproxy, startNginx, type PeerStart } from './peers.js';

const ROUNDS = intFromEnv('BENCH_ROUNDS', 3);
const SECONDS = intFromEnv('BENCH_DURATION', 2);
const HALF_LOAD_SECONDS = intFromEnv('BENCH_HALF_LOAD_DURATION', 5, 0);
const WARMUP_SECONDS = 1;
const BACKEND_COUNT = 3;
const LARGE_BODY_BYTES = 100 * 1024;
/** limpet's p99 at half load may exceed the backend's own by at most this much. */
const ADDED_P99_TARGET_MS = 1;
/** Wall-clock cost of one load run beyond its duration (starting wrk, connecting, /proc reads). */
const RUN_OVERHEAD_SECONDS = 0.15;

/** The name every ratio is taken from, and the target whose peak sets the half-load rate. */
const LIMPET = 'limpet-1';
/** The featureless pass-through: at half load it shows the p99 Node's HTTP stack alone adds. */
const PASS_THROUGH = 'undici';
const DIRECT = 'direct';

// ---------------------------------------------------------------------------------------------
// Scenarios

interface Scenario {
  name: string;
  label: string;
  keepAlive: boolean;
  path: string;
  /** Body length every response must have. */
  bodyBytes: number;
  connections: number;
}

const SCENARIOS: Scenario[] = [true, false].flatMap((keepAlive) =>
  [{ size: 'tiny', path: '/', bodyBytes: 3, what: '"ok" (3 B)' }, { size: '100k', path: '/100k', bodyBytes: LARGE_BODY_BYTES, what: '100 KB' }].flatMap((body) =>
    [50, 500].map((connections) => ({
      name: `${keepAlive ? 'ka' : 'close'}-${body.size}-${connections}`,
      label: `${keepAlive ? 'keep-alive' : 'new connection per request'}, ${body.what} responses, ${connections} connections`,
      keepAlive,
      path: body.path,
      bodyBytes: body.bodyBytes,
      connections,
    }))));

// ---------------------------------------------------------------------------------------------
// Targets

type Stickiness = 'ip' | 'cookie' | 'none';

interface TargetSpec {
  name: string;
  description: string;
  sticky: Stickiness;
  start: (spec: TargetSpec, backends: Backends, tmp: string) => Promise<PeerStart>;
}

const CORES = os.availableParallelism();
/** "All cores": unpinned, i.e. every CPU this process may use. */
const ALL_CPUS = undefined;
const PINNED = PIN ? 'pinned to CPU 0' : 'unpinned (no taskset)';

const nodeBaseline = (script: string) =>
  async (spec: TargetSpec, backends: Backends): Promise<PeerStart> =>
    ({ prepared: await baselineTarget(spec.name, spec.description, script, backends, SERVER_CPU) });

const limpet = (workers: string, cpus: string | undefined, extraYaml: string[] = [], cli?: string) =>
  async (spec: TargetSpec, backends: Backends, tmp: string): Promise<PeerStart> =>
    ({ prepared: await limpetTarget(backends, tmp, { name: spec.name, description: spec.description, nodeArgs: [], extraYaml: [`workers: ${workers}`, ...extraYaml], cpus, cli }) });

const BASELINE_CLI = process.env.BENCH_LIMPET_BASELINE;

const nginx = (workerProcesses: '1' | 'auto', cpus: string | undefined) =>
  (spec: TargetSpec, backends: Backends, tmp: string) => startNginx(spec.name, spec.description, backends, tmp, workerProcesses, cpus);

const haproxy = (stickiness: 'source' | 'cookie', threads: number, cpus: string | undefined) =>
  (spec: TargetSpec, backends: Backends, tmp: string) => startHaproxy(spec.name, spec.description, backends, tmp, stickiness, threads, cpus);

const TARGETS: TargetSpec[] = [
  {
    name: DIRECT,
    description: 'the raw backend itself (bench/backend.ts --raw), moved onto CPU 0 for its runs',
    sticky: 'none',
    start: async (spec, backends) => ({ prepared: directTarget(backends, spec.description) }),
  },
  {
    name: LIMPET,
    description: `limpet, workers: 1, affinity by ip, health checks every 2 s, metrics on; ${PINNED}`,
    sticky: 'ip',
    start: limpet('1', SERVER_CPU),
  },
  ...(BASELINE_CLI === undefined ? [] : [{
    name: 'limpet-1-baseline',
    description: `limpet-1 from another build (${BASELINE_CLI}); ${PINNED}`,
    sticky: 'ip' as const,
    start: limpet('1', SERVER_CPU, [], path.resolve(BASELINE_CLI)),
  }]),
  {
    name: 'limpet-1-cap32',
    description: `limpet-1 with limits.maxBackendConnections: 32 (at most 32 connections to each backend, further requests queue); ${PINNED}`,
    sticky: 'ip',
    start: limpet('1', SERVER_CPU, ['limits: { maxBackendConnections: 32 }']),
  },
  {
    name: 'limpet-auto',
    description: `limpet, workers: auto (${CORES} workers + primary), otherwise the same; all cores`,
    sticky: 'ip',
    start: limpet('auto', ALL_CPUS),
  },
  {
    name: 'limpet-auto-kernel',
    description: `limpet, workers: auto with workerBalance: kernel (workers accept directly, no hand-off by the primary); all cores`,
    sticky: 'ip',
    start: limpet('auto', ALL_CPUS, ['workerBalance: kernel']),
  },
  {
    name: 'http-proxy',
    description: `bench/http-proxy-sticky.ts: http-proxy + keep-alive agent, FNV-1a ip hash; ${PINNED}`,
    sticky: 'ip',
    start: nodeBaseline('http-proxy-sticky.js'),
  },
  {
    name: 'reply-from',
    description: `bench/reply-from-sticky.ts: fastify 5 + @fastify/reply-from 12 (undici), the same ip hash via getUpstream; ${PINNED}`,
    sticky: 'ip',
    start: nodeBaseline('reply-from-sticky.js'),
  },
  {
    name: PASS_THROUGH,
    description: `bench/undici-passthrough.ts: node:http + undici.Pool.stream to one backend, no stickiness; ${PINNED}`,
    sticky: 'none',
    start: nodeBaseline('undici-passthrough.js'),
  },
  {
    name: 'nginx-1',
    description: `nginx, hash $remote_addr consistent, upstream keepalive, worker_processes 1; ${PINNED}`,
    sticky: 'ip',
    start: nginx('1', SERVER_CPU),
  },
  {
    name: 'nginx-auto',
    description: `nginx, the same with worker_processes auto (${CORES}); all cores`,
    sticky: 'ip',
    start: nginx('auto', ALL_CPUS),
  },
  {
    name: 'haproxy-source-1',
    description: `HAProxy, balance source + hash-type consistent, nbthread 1; ${PINNED}`,
    sticky: 'ip',
    start: haproxy('source', 1, SERVER_CPU),
  },
  {
    name: 'haproxy-source-auto',
    description: `HAProxy, the same with nbthread ${CORES}; all cores`,
    sticky: 'ip',
    start: haproxy('source', CORES, ALL_CPUS),
  },
  {
    name: 'haproxy-cookie-1',
    description: `HAProxy, cookie SRV insert indirect nocache (the load sends the cookie), nbthread 1; ${PINNED}`,
    sticky: 'cookie',
    start: haproxy('cookie', 1, SERVER_CPU),
  },
  {
    name: 'haproxy-cookie-auto',
    description: `HAProxy, the same cookie insert with nbthread ${CORES}; all cores`,
    sticky: 'cookie',
    start: haproxy('cookie', CORES, ALL_CPUS),
  },
];

/**
 * The items named by a comma-separated list in `variable` (all when unset). An entry matches a name
 * exactly, as a dash-separated prefix (`nginx` → nginx-1, nginx-auto) or as a `*` pattern.
 */
function selectFromEnv<T extends { name: string }>(items: T[], variable: string): T[] {
  const raw = process.env[variable]?.trim();
  if (raw === undefined || raw === '') return items;
  const escape = (text: string) => text.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
  const patterns = raw.split(',').map((entry) => entry.trim()).filter((entry) => entry !== '')
    .map((entry) => new RegExp(`^${entry.split('*').map(escape).join('.*')}(-.*)?$`));
  const chosen = items.filter((item) => patterns.some((pattern) => pattern.test(item.name)));
  if (chosen.length === 0) throw new Error(`${variable}="${raw}" matches none of: ${items.map((item) => item.name).join(', ')}`);
  return chosen;
}

// ---------------------------------------------------------------------------------------------
// Sanity and stickiness checks, before any load

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request on a fresh connection (so every check also exercises connection setup). */
function request(url: string, options: { localAddress?: string; headers?: Record<string, string> } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 3000, ...options }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within 3 s`)));
    req.on('error', reject);
  });
}

interface CheckResult {
  /** What was verified, for the report. */
  notes: string[];
  /** Headers the load sends to this target (the stickiness cookie). */
  loadHeaders: Record<string, string>;
}

const ID_BYTES = 2;
const CLIENT_ADDRESSES = Array.from({ length: 8 }, (_, i) => `127.0.0.${i + 1}`);
const REQUESTS_PER_ADDRESS = 3;

async function expectOk(url: string, bodyBytes: number, options: Parameters<typeof request>[1] = {}): Promise<Reply> {
  const reply = await request(url, options);
  if (reply.status !== 200) throw new Error(`GET ${url} answered ${reply.status}`);
  if (reply.body.length !== bodyBytes) throw new Error(`GET ${url} returned ${reply.body.length} bytes, expected ${bodyBytes}`);
  return reply;
}

/** Throws unless the target proxies both routes in full, honours `Connection: close` and is as sticky as claimed. */
async function checkTarget(target: Target, sticky: Stickiness): Promise<CheckResult> {
  const notes: string[] = [];
  await expectOk(`${target.origin}/`, 3);
  await expectOk(`${target.origin}/100k`, LARGE_BODY_BYTES);
  notes.push(`GET / → 200, 3 bytes; GET /100k → 200, ${LARGE_BODY_BYTES} bytes`);
  // wrk opens a new connection only when the response says `Connection: close`.
  const closing = await expectOk(`${target.origin}/`, 3, { headers: { connection: 'close' } });
  if (closing.headers.connection?.toLowerCase() !== 'close') {
    throw new Error(`answers "Connection: close" requests with connection: ${closing.headers.connection ?? '(none)'}; the load generator would keep reusing the connection`);
  }
  notes.push('answers Connection: close with connection: close');

  const loadHeaders: Record<string, string> = {};
  if (sticky === 'ip') {
    const chosen = new Map<string, string>();
    for (const address of CLIENT_ADDRESSES) {
      const seen = new Set<string>();
      for (let i = 0; i < REQUESTS_PER_ADDRESS; i++) seen.add(await backendId(target, { localAddress: address }));
      if (seen.size !== 1) throw new Error(`not sticky: client ${address} reached ${[...seen].join(', ')}`);
      chosen.set(address, [...seen][0]!);
    }
    const spread = countValues([...chosen.values()]);
    notes.push(`ip stickiness: ${CLIENT_ADDRESSES.length} client addresses × ${REQUESTS_PER_ADDRESS} new connections each kept their backend (${spread})`);
    if (new Set(chosen.values()).size === 1) notes.push('warning: every address hashed to the same backend');
  } else if (sticky === 'cookie') {
    const first = await request(`${target.origin}/id`);
    const cookie = /(?:^|[;,]\s*)(SRV=[^;,]+)/.exec([first.headers['set-cookie'] ?? []].flat().join('; '))?.[1];
    if (first.status !== 200 || cookie === undefined) {
      throw new Error(`a new client got no SRV cookie (status ${first.status}, set-cookie: ${String(first.headers['set-cookie'] ?? '(none)')})`);
    }
    const pinned = first.body.toString('latin1');
    for (let i = 0; i < 5; i++) {
      const reply = await expectOk(`${target.origin}/id`, ID_BYTES, { headers: { cookie } });
      const id = reply.body.toString('latin1');
      if (id !== pinned) throw new Error(`not sticky: cookie ${cookie} from ${pinned} reached ${id}`);
      if (reply.headers['set-cookie'] !== undefined) throw new Error('sets the cookie again on a client that already has it');
    }
    const newClients = new Set<string>();
    for (let i = 0; i < 6; i++) newClients.add(await backendId(target));
    notes.push(
      `cookie stickiness: a new client gets ${cookie.split('=')[0]}=…; 5 requests with it all reached ${pinned} without a new Set-Cookie; ` +
      `6 new clients without it spread over ${[...newClients].sort().join(', ')}`,
    );
    loadHeaders.Cookie = cookie;
  }
  return { notes, loadHeaders };
}

/** Which backend answered `GET /id` (bench/backend.ts answers `b1`, `b2`, …). */
async function backendId(target: Target, options: Parameters<typeof request>[1] = {}): Promise<string> {
  return (await expectOk(`${target.origin}/id`, ID_BYTES, options)).body.toString('latin1');
}

function countValues(values: string[]): string {
  const counts = new Map<string, number>();
  for (const value of values) counts.set(value, (counts.get(value) ?? 0) + 1);
  return [...counts].sort().map(([value, n]) => `${value}×${n}`).join(', ');
}

// ---------------------------------------------------------------------------------------------
// Results

interface ScenarioSummary extends Summary {
  /** CPU time of the target's process tree over the run length (1 = one full core). */
  serverCpuShare: number | null;
  peakRssMb: number | null;
  clientCoreBusy: number | null;
  acceptsPerRequest: number | null;
}

function summariseScenario(runs: RunResult[]): ScenarioSummary {
  const base = summarise(runs);
  return {
    ...base,
    serverCpuShare: base.serverCpuSeconds === null ? null : round(base.serverCpuSeconds / SECONDS, 2),
    peakRssMb: medianOrNull(runs.map((r) => r.peakRssMb), 1),
    clientCoreBusy: medianOrNull(runs.map((r) => r.clientCoreBusy), 2),
    acceptsPerRequest: medianOrNull(runs.map((r) => r.acceptsPerRequest), 2),
  };
}

/** limpet-1 ÷ target for each metric (req/s: above 1 = limpet faster; the others: below 1 = limpet lower). */
interface LimpetRatio {
  requestsPerSec: number | null;
  p99: number | null;
  cpuPerRequest: number | null;
  instructionsPerRequest: number | null;
  peakRss: number | null;
}

function limpetRatio(limpetSummary: ScenarioSummary | undefined, other: ScenarioSummary): LimpetRatio | null {
  if (limpetSummary === undefined) return null;
  return {
    requestsPerSec: divide(limpetSummary.requestsPerSec, other.requestsPerSec),
    p99: divide(limpetSummary.p99Ms, other.p99Ms),
    cpuPerRequest: divide(limpetSummary.cpuUsPerRequest, other.cpuUsPerRequest),
    instructionsPerRequest: divide(limpetSummary.kInstructionsPerRequest, other.kInstructionsPerRequest),
    peakRss: divide(limpetSummary.peakRssMb, other.peakRssMb),
  };
}

const fmtPercent = (share: number | null) => (share === null ? '—' : `${Math.round(share * 100)} %`);
const fmtMb = (mb: number | null) => (mb === null ? '—' : `${mb.toFixed(1)} MB`);

const SCENARIO_COLUMNS = [
  'target', 'req/s', 'p50', 'p99', 'server CPU', 'CPU / req', 'instr / req', 'peak RSS', 'load core busy', 'TCP accepts / req',
  'errors / non-2xx', 'disturbed', 'limpet ÷ it: req/s', 'p99', 'CPU / req', 'instr / req', 'peak RSS',
];
const fmtKilo = (k: number | null) => (k === null ? '—' : `${Math.round(k)} k`);

function scenarioTable(
  scenario: Scenario,
  names: string[],
  summaries: Map<string, ScenarioSummary>,
  skippedReasons: Map<string, string>,
): string[] {
  const limpetSummary = summaries.get(LIMPET);
  const lines = [
    `#### ${scenario.name}: ${scenario.label}`,
    '',
    `| ${SCENARIO_COLUMNS.join(' | ')} |`,
    `|---|${SCENARIO_COLUMNS.slice(1).map(() => '---:').join('|')}|`,
  ];
  for (const name of names) {
    const skipped = skippedReasons.get(name);
    const m = summaries.get(name);
    if (skipped !== undefined || m === undefined) {
      const reason = skipped === undefined ? 'skipped' : `skipped: ${skipped.replaceAll('|', '/')}`;
      lines.push(`| ${name} | ${reason} |${' |'.repeat(SCENARIO_COLUMNS.length - 2)}`);
      continue;
    }
    const r = name === LIMPET ? null : limpetRatio(limpetSummary, m);
    const ratioCells = r === null
      ? '— | — | — | — | —'
      : `${fmtRatio(r.requestsPerSec)} | ${fmtRatio(r.p99)} | ${fmtRatio(r.cpuPerRequest)} | ${fmtRatio(r.instructionsPerRequest)} | ${fmtRatio(r.peakRss)}`;
    lines.push(
      `| ${name} | ${fmtRate(m.requestsPerSec)} | ${fmtMs(m.p50Ms)} | ${fmtMs(m.p99Ms)} | ${fmtPercent(m.serverCpuShare)} | ${fmtCpuPerReq(m.cpuUsPerRequest)} | ` +
      `${fmtKilo(m.kInstructionsPerRequest)} | ` +
      `${name === DIRECT ? '—' : fmtMb(m.peakRssMb)} | ${fmtPercent(m.clientCoreBusy)} | ${m.acceptsPerRequest ?? '—'} | ${m.errors} / ${m.non2xx} | ${m.disturbedRounds} / ${ROUNDS} | ${ratioCells} |`,
    );
  }
  return lines;
}

/** One row per peer, one column per scenario: limpet-1 ÷ peer for one metric. */
function overviewTable(
  title: string,
  scenarios: Scenario[],
  names: string[],
  results: Map<string, Map<string, ScenarioSummary>>,
  pick: (ratio: LimpetRatio) => number | null,
): string[] {
  const lines = [
    `**${title}**`,
    '',
    `| limpet-1 ÷ | ${scenarios.map((s) => s.name).join(' | ')} |`,
    `|---|${scenarios.map(() => '---:').join('|')}|`,
  ];
  for (const name of names.filter((n) => n !== LIMPET)) {
    const cells = scenarios.map((s) => {
      const summaries = results.get(s.name)!;
      const other = summaries.get(name);
      const ratio = other === undefined ? null : limpetRatio(summaries.get(LIMPET), other);
      return ratio === null ? '—' : fmtRatio(pick(ratio));
    });
    lines.push(`| ${name} | ${cells.join(' | ')} |`);
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------
// Latency at half load

interface HalfLoadTarget {
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  /** Requests that left more than 2 ms after their slot, summed over the rounds (0 = the rate was held). */
  lateRequests: number;
  errors: number;
  rounds: PacedResult[];
}

type HalfLoad =
  | { skipped: string }
  | {
    rate: number;
    connections: number;
    seconds: number;
    /** Which paced generator ran, and why not the native one when it did not. */
    generator: PacedGenerator;
    generatorNote: string | null;
    direct: HalfLoadTarget;
    limpet: HalfLoadTarget;
    /** The bare undici pass-through, when it is among the targets. */
    passThrough: HalfLoadTarget | null;
    /** limpet's median p99 minus the backend's. */
    addedP99Ms: number;
    /** The same for the pass-through: what any Node proxy adds here. */
    passThroughAddedP99Ms: number | null;
    targetMs: number;
    withinTarget: boolean;
  };

const HALF_LOAD_CONNECTIONS = 50;

async function measureHalfLoad(direct: Target, limpetOne: Target, passThrough: Target | undefined, peak: number): Promise<HalfLoad> {
  const rate = Math.max(1, Math.round(peak / 2));
  const built = pacedGenerator();
  const generatorNote = built.generator === 'node' ? `the Node pacer, which sends in 1 ms bursts: ${built.why}` : null;
  console.log(
    `\nlatency at half load: ${fmtRate(rate)} req/s (half of ${LIMPET}'s ka-tiny-50 median), ` +
    `${HALF_LOAD_CONNECTIONS} keep-alive connections, ${HALF_LOAD_SECONDS} s per run, paced by ` +
    (generatorNote === null ? 'bench/paced-load.c' : `${generatorNote} (!)`),
  );
  const measured = passThrough === undefined ? [direct, limpetOne] : [direct, limpetOne, passThrough];
  const runs = new Map<string, PacedResult[]>(measured.map((target) => [target.name, []]));
  for (let r = 1; r <= ROUNDS; r++) {
    // The first target rotates with the round, so none always runs first.
    const order = measured.map((_, i) => measured[(i + r - 1) % measured.length]!);
    for (const target of order) {
      await target.beforeRun?.();
      try {
        const result = await runPacedLoad(
          { url: `${target.origin}/`, rate, connections: HALF_LOAD_CONNECTIONS, seconds: HALF_LOAD_SECONDS, cpus: CLIENT_CPU },
          built.generator,
        );
        runs.get(target.name)!.push(result);
        const problems = result.errors + result.non2xx > 0 ? `  (!) ${result.errors} errors, ${result.non2xx} non-2xx` : '';
        const late = result.lateRequests > 0 ? `  (${result.lateRequests} requests left > 2 ms late)` : '';
        console.log(
          `  ${target.name.padEnd(20)} ${fmtRate(result.requestsPerSec).padStart(8)} req/s   p50 ${fmtMs(result.p50Ms).padStart(8)}   ` +
          `p99 ${fmtMs(result.p99Ms).padStart(8)}   p99.9 ${fmtMs(result.p999Ms).padStart(8)}${problems}${late}`,
        );
      } finally {
        await target.afterRun?.();
      }
    }
  }
  const summary = (name: string): HalfLoadTarget => {
    const rounds = runs.get(name)!;
    return {
      p50Ms: medianOrNull(rounds.map((r) => r.p50Ms), 3)!,
      p99Ms: medianOrNull(rounds.map((r) => r.p99Ms), 3)!,
      p999Ms: medianOrNull(rounds.map((r) => r.p999Ms), 3)!,
      lateRequests: rounds.reduce((sum, r) => sum + r.lateRequests, 0),
      errors: rounds.reduce((sum, r) => sum + r.errors + r.non2xx, 0),
      rounds,
    };
  };
  const directSummary = summary(direct.name);
  const limpetSummary = summary(limpetOne.name);
  const added = round(limpetSummary.p99Ms - directSummary.p99Ms, 3);
  const passThroughSummary = passThrough === undefined ? null : summary(passThrough.name);
  return {
    rate,
    connections: HALF_LOAD_CONNECTIONS,
    seconds: HALF_LOAD_SECONDS,
    generator: built.generator,
    generatorNote,
    direct: directSummary,
    limpet: limpetSummary,
    passThrough: passThroughSummary,
    addedP99Ms: added,
    passThroughAddedP99Ms: passThroughSummary === null ? null : round(passThroughSummary.p99Ms - directSummary.p99Ms, 3),
    targetMs: ADDED_P99_TARGET_MS,
    withinTarget: added <= ADDED_P99_TARGET_MS,
  };
}

function halfLoadTable(half: HalfLoad): string[] {
  if ('skipped' in half) return [`Latency at half load: skipped (${half.skipped}).`];
  const row = (name: string, t: HalfLoadTarget) =>
    `| ${name} | ${fmtMs(t.p50Ms)} | ${fmtMs(t.p99Ms)} | ${fmtMs(t.p999Ms)} | ${fmtRate(t.lateRequests)} | ${t.errors} |`;
  const generator = half.generatorNote === null ? 'bench/paced-load.c (microsecond pacing)' : `${half.generatorNote} (!)`;
  return [
    `**Latency at half load**: ${fmtRate(half.rate)} req/s (half of ${LIMPET}'s ka-tiny-50 req/s), paced over ${half.connections} keep-alive connections ` +
    `by ${generator}, ${half.seconds} s per run, median of ${ROUNDS}.`,
    '',
    '| target | p50 | p99 | p99.9 | requests sent > 2 ms late | errors / non-2xx |',
    '|---|---:|---:|---:|---:|---:|',
    row(DIRECT, half.direct),
    row(LIMPET, half.limpet),
    ...(half.passThrough === null ? [] : [row(PASS_THROUGH, half.passThrough)]),
    `| added by limpet | | ${fmtMs(half.addedP99Ms)} (target ≤ ${half.targetMs} ms: ${half.withinTarget ? 'met' : 'not met'}) | | | |`,
    ...(half.passThroughAddedP99Ms === null ? [] : [`| added by the ${PASS_THROUGH} pass-through | | ${fmtMs(half.passThroughAddedP99Ms)} | | | |`]),
  ];
}

// ---------------------------------------------------------------------------------------------

function loadCommand(tool: LoadTool, scenario: Scenario): string {
  const close = scenario.keepAlive ? '' : " -H 'Connection: close'";
  return tool === 'wrk'
    ? `wrk -t1 -c${scenario.connections} -d${SECONDS}s --latency${close} <target>${scenario.path}`
    : `autocannon connections=${scenario.connections} duration=${SECONDS}s${scenario.keepAlive ? '' : ' headers={connection: close}'} <target>${scenario.path}`;
}

async function main(): Promise<void> {
  const started = Date.now();
  const tool = chooseLoadTool();
  const date = new Date().toISOString();
  const machine = readMachine();
  const scenarios = selectFromEnv(SCENARIOS, 'BENCH_SCENARIOS');
  const specs = selectFromEnv(TARGETS, 'BENCH_ONLY');
  const halfLoadWanted = HALF_LOAD_SECONDS > 0;

  const loadSeconds = ROUNDS * scenarios.length * specs.length * (SECONDS + RUN_OVERHEAD_SECONDS)
    + specs.length * (WARMUP_SECONDS + RUN_OVERHEAD_SECONDS)
    + (halfLoadWanted ? ROUNDS * 3 * (HALF_LOAD_SECONDS + 1) : 0);
  console.log(`limpet peer comparison — ${date}`);
  console.log(`machine: ${describeMachine(machine)}`);
  console.log(`load: ${tool}, ${SECONDS} s per run, ${WARMUP_SECONDS} s warm-up per target, ${ROUNDS} interleaved rounds, median reported`);
  console.log(`scenarios: ${scenarios.map((s) => s.name).join(', ')}`);
  console.log(`targets: ${specs.map((s) => s.name).join(', ')}`);
  console.log(`pinning: ${pinningDescription()}; targets marked "all cores" unpinned`);
  console.log(`instructions per request: ${countersUnavailable ?? 'perf stat on each server process tree'}`);
  console.log(`expected duration: about ${Math.ceil(loadSeconds / 60)} min`);
  const otherLoad = await otherLoadAtStart();

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-compare-'));
  // Also when the run dies early (e.g. its output pipe closes), not only through `finally`.
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
  try {
    const backends = await startBackends(BACKEND_COUNT, ['--raw']);
    const starts = await Promise.all(specs.map((spec) => spec.start(spec, backends, tmp)));
    const configs = new Map(specs.map((spec, i) => [spec.name, starts[i]!.config]));
    const versions = new Map(specs.map((spec, i) => [spec.name, starts[i]!.version]));

    // Every target must proxy correctly before it gets load; one that does not is skipped.
    const targets: Target[] = [];
    const skipped: Skipped[] = [];
    const checks = new Map<string, CheckResult>();
    for (const [i, spec] of specs.entries()) {
      const prepared = starts[i]!.prepared;
      if (!isTarget(prepared)) {
        skipped.push(prepared);
        continue;
      }
      try {
        checks.set(spec.name, await checkTarget(prepared, spec.sticky));
        targets.push(prepared);
      } catch (error) {
        skipped.push({ name: spec.name, description: spec.description, reason: `failed its check: ${(error as Error).message}` });
      }
    }
    console.log('checks');
    for (const target of targets) {
      const version = versions.get(target.name);
      console.log(`  ${target.name}${version === undefined ? '' : ` (${version})`}: ${checks.get(target.name)!.notes.join('; ')}`);
    }
    for (const s of skipped) console.log(`  skipped: ${s.name} — ${s.reason}`);
    console.log('');
    if (targets.length === 0) throw new Error('no target could be started');

    const ourPids = [backends.pid, ...targets.flatMap((t) => (t.proxyPid === undefined ? [] : [t.proxyPid]))];
    const run = (target: Target, scenario: Scenario, seconds: number) =>
      measure(target, {
        tool,
        path: scenario.path,
        connections: scenario.connections,
        seconds,
        headers: { ...checks.get(target.name)!.loadHeaders, ...(scenario.keepAlive ? {} : { Connection: 'close' }) },
      }, { ourPids, trackPeakRss: true });

    console.log(`warm-up (${SCENARIOS[0]!.name})`);
    for (const target of targets) console.log(describeRun(target.name, await run(target, SCENARIOS[0]!, WARMUP_SECONDS)));

    const runs = new Map(scenarios.map((s) => [s.name, new Map<string, RunResult[]>(targets.map((t) => [t.name, []]))]));
    for (let r = 1; r <= ROUNDS; r++) {
      for (const [si, scenario] of scenarios.entries()) {
        console.log(`round ${r}/${ROUNDS} — ${scenario.name}: ${scenario.label}`);
        // The starting target rotates with round and scenario, so none is always first or last.
        const shift = (r - 1 + si) % targets.length;
        const order = targets.map((_, i) => targets[(i + shift) % targets.length]!);
        for (const target of order) {
          const result = await run(target, scenario, SECONDS);
          runs.get(scenario.name)!.get(target.name)!.push(result);
          const extras = `   load core ${fmtPercent(result.clientCoreBusy)}, ${result.acceptsPerRequest ?? '?'} accepts/req${result.peakRssMb == null ? '' : `, peak ${fmtMb(result.peakRssMb)}`}`;
          console.log(describeRun(target.name, result) + extras);
        }
      }
    }

    const results = new Map(scenarios.map((s) => [s.name, new Map(targets.map((t) => [t.name, summariseScenario(runs.get(s.name)!.get(t.name)!)]))]));

    let halfLoad: HalfLoad;
    const direct = targets.find((t) => t.name === DIRECT);
    const limpetOne = targets.find((t) => t.name === LIMPET);
    const peak = results.get('ka-tiny-50')?.get(LIMPET)?.requestsPerSec;
    if (!halfLoadWanted) halfLoad = { skipped: 'BENCH_HALF_LOAD_DURATION=0' };
    else if (direct === undefined || limpetOne === undefined || peak === undefined) {
      halfLoad = { skipped: `needs the ${DIRECT} and ${LIMPET} targets and the ka-tiny-50 scenario` };
    } else halfLoad = await measureHalfLoad(direct, limpetOne, targets.find((t) => t.name === PASS_THROUGH), peak);

    const names = specs.map((s) => s.name);
    const skippedReasons = new Map(skipped.map((s) => [s.name, s.reason]));
    const markdown = [
      `Median of ${ROUNDS} interleaved rounds, ${SECONDS} s per run, ${tool}; ${describeMachine(machine)}; ${date.slice(0, 10)}. ` +
      `Backends: bench/backend.ts --raw on CPU 1 with the load generator${PIN ? '' : ' (unpinned)'}.`,
      '',
      ...scenarios.flatMap((s) => [...scenarioTable(s, names, results.get(s.name)!, skippedReasons), '']),
      ...overviewTable('limpet-1 ÷ peer, req/s (above 1: limpet faster)', scenarios, names, results, (r) => r.requestsPerSec),
      '',
      ...overviewTable('limpet-1 ÷ peer, CPU per request (below 1: limpet cheaper)', scenarios, names, results, (r) => r.cpuPerRequest),
      '',
      ...(countersUnavailable !== null
        ? [`Instructions per request: not counted (${countersUnavailable}).`]
        : overviewTable('limpet-1 ÷ peer, instructions per request (below 1: limpet does less work; steadier than CPU time on a noisy machine)',
          scenarios, names, results, (r) => r.instructionsPerRequest)),
      '',
      ...halfLoadTable(halfLoad),
      ...(skipped.length === 0 ? [] : ['', 'Skipped:', '', ...skipped.map((s) => `- ${s.name}: ${s.reason}`)]),
      '',
    ].join('\n');
    console.log(`\nResults (Markdown)\n\n${markdown}`);

    const json = {
      date,
      ...machine,
      loadTool: tool,
      durationSeconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      rounds: ROUNDS,
      pinning: pinningDescription(),
      instructionCounts: countersUnavailable ?? 'perf stat -e instructions,cycles on the server process tree, user + kernel',
      backends: `${BACKEND_COUNT} × bench/backend.ts --raw in one process`,
      scenarios: scenarios.map((s) => ({ ...s, loadCommand: loadCommand(tool, s) })),
      targets: Object.fromEntries(specs.map((spec) => [spec.name, {
        description: spec.description,
        stickiness: spec.sticky,
        version: versions.get(spec.name) ?? null,
        config: configs.get(spec.name) ?? null,
        checks: checks.get(spec.name)?.notes ?? null,
        loadHeaders: checks.get(spec.name)?.loadHeaders ?? null,
        skipped: skippedReasons.get(spec.name) ?? null,
      }])),
      results: Object.fromEntries(scenarios.map((s) => [s.name, Object.fromEntries(targets.map((t) => {
        const median = results.get(s.name)!.get(t.name)!;
        return [t.name, {
          median,
          limpetRatio: t.name === LIMPET ? null : limpetRatio(results.get(s.name)!.get(LIMPET), median),
          rounds: runs.get(s.name)!.get(t.name),
        }];
      }))])),
      halfLoad,
      otherLoadAtStart: otherLoad,
      wallSeconds: Math.round((Date.now() - started) / 1000),
    };
    const jsonFile = writeResult('compare-latest.json', `${JSON.stringify(json, null, 2)}\n`);
    const mdFile = writeResult('compare-latest.md', `# limpet peer comparison — ${date}\n\n${markdown}`);
    console.log(`wrote ${jsonFile} and ${mdFile} (${json.wallSeconds} s)`);
  } finally {
    stopChildren();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
