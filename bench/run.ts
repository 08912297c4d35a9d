// End-to-end benchmark: the same keep-alive load against the backend directly, limpet, a hand-written
// http-proxy sticky proxy and a bare undici pass-through, interleaved round by round.
// `npm run bench`; see bench/README.md for the method and how to read the numbers.
//
// Environment: BENCH_ROUNDS (default 3), BENCH_DURATION seconds per run (default 5),
// BENCH_CONNECTIONS (default 50), BENCH_TOOL (wrk | autocannon; default wrk when on PATH).
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { chooseLoadTool, onPath, runLoad, type LoadResult, type LoadTool } from './load.js';

const here = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const distRoot = path.resolve(here, '..');
const repoRoot = path.resolve(distRoot, '..');

const ROUNDS = positiveInt('BENCH_ROUNDS', 3);
const SECONDS = positiveInt('BENCH_DURATION', 5);
const CONNECTIONS = positiveInt('BENCH_CONNECTIONS', 50);
const WARMUP_SECONDS = 1;
const READY_TIMEOUT_MS = 15_000;
const BACKEND_COUNT = 3;

/** CPU layout: the server under test alone on one core, everything else on the other. */
const PIN = onPath('taskset') && os.availableParallelism() >= 2;
const SERVER_CPU = PIN ? '0' : undefined;
const CLIENT_CPU = PIN ? '1' : undefined;

function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Child processes

const children = new Set<ChildProcess>();

function startChild(argv: string[], cpus: string | undefined): ChildProcess {
  const command = cpus === undefined ? argv : ['taskset', '-c', cpus, ...argv];
  const child = spawn(command[0]!, command.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], cwd: repoRoot });
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

function stopChildren(): void {
  for (const child of children) child.kill('SIGTERM');
}
process.on('exit', stopChildren);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    stopChildren();
    process.exit(130);
  });
}

/** Output a child has written so far, kept for error messages. */
function recordOutput(child: ChildProcess): () => string {
  let text = '';
  const append = (chunk: Buffer) => {
    text = (text + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  return () => text.trim();
}

/** Resolves with the first stdout line matching `pattern`; rejects if the child exits or times out first. */
function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const match = pattern.exec(buffered);
      if (match !== null) finish(() => resolve(match));
    };
    const onExit = (code: number | null, signal: string | null) =>
      finish(() => reject(new Error(`exited with ${signal ?? code} before it was ready`)));
    const timer = setTimeout(() => finish(() => reject(new Error(`not ready after ${timeoutMs} ms`))), timeoutMs);
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      settle();
    };
    child.stdout?.on('data', onData);
    child.on('exit', onExit);
  });
}

function getStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Polls `GET url` until it answers 200; rejects if the child exits or the deadline passes. */
async function waitUntilServing(child: ChildProcess, url: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = 0;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited with ${child.signalCode ?? child.exitCode} before serving`);
    }
    last = await getStatus(url);
    if (last === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`GET ${url} did not answer 200 within ${READY_TIMEOUT_MS / 1000} s (last status: ${last || 'no answer'})`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const execFileAsync = promisify(execFile);

/** Moves every thread of a running process onto `cpus`. */
async function repin(pid: number, cpus: string | undefined): Promise<void> {
  if (cpus !== undefined) await execFileAsync('taskset', ['-a', '-p', '-c', cpus, String(pid)]);
}

/**
 * User + system CPU time a process has used so far, in seconds (Linux /proc). With
 * `withReapedChildren`, also that of its children that have exited and been waited for.
 */
function cpuSeconds(pid: number | 'self', withReapedChildren = false): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the parenthesised command name; utime, stime, cutime, cstime are fields 14-17 overall.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]) + (withReapedChildren ? Number(fields[13]) + Number(fields[14]) : 0);
    return Number.isFinite(ticks) ? ticks / CLOCK_TICKS : undefined;
  } catch {
    return undefined;
  }
}

/** Live child processes of `pid` (a cluster primary's workers). */
function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** CPU seconds of a process and its live children (a cluster primary and its workers). */
function treeCpuSeconds(pid: number): number | undefined {
  const own = cpuSeconds(pid);
  if (own === undefined) return undefined;
  return childPids(pid).reduce((sum, child) => sum + (cpuSeconds(child) ?? 0), own);
}

/** USER_HZ; 100 on every mainstream Linux configuration. */
const CLOCK_TICKS = (() => {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(value) && value > 0 ? value : 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds spent in processes since boot, summed over all CPUs, from /proc/stat. */
function machineBusySeconds(): number | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    // user nice system idle ...: only time charged to processes. Interrupt time is left out because
    // the benchmark's own loopback traffic is handled there and no process is charged for it.
    const [user, nice, system] = line.trim().split(/\s+/).slice(1).map(Number);
    const busy = (user! + nice! + system!) / CLOCK_TICKS;
    return Number.isFinite(busy) ? busy : undefined;
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds used so far by every process of this benchmark: the harness, its finished load
 * generators (reaped children), the backends and every proxy, measured or idle.
 */
function benchmarkCpuSeconds(pids: number[]): number | undefined {
  let total = cpuSeconds('self', true);
  for (const pid of pids) {
    const used = treeCpuSeconds(pid);
    total = total === undefined || used === undefined ? undefined : total + used;
  }
  return total;
}

/** Share of all CPUs that was busy over the next `ms` milliseconds (Linux /proc/stat). */
async function machineBusyPercent(ms: number): Promise<number | undefined> {
  const sample = () => {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    const idle = fields[3]! + (fields[4] ?? 0);
    return { idle, total: fields.reduce((sum, n) => sum + n, 0) };
  };
  try {
    const a = sample();
    await new Promise((resolve) => setTimeout(resolve, ms));
    const b = sample();
    return b.total === a.total ? undefined : Math.round(100 * (1 - (b.idle - a.idle) / (b.total - a.total)));
  } catch {
    return undefined;
  }
}

/** RSS and peak RSS of a process plus its live children (a cluster primary and its workers), summed. */
function memoryMb(pid: number): { rssMb: number; peakRssMb: number } | undefined {
  let rssKb = 0;
  let peakKb = 0;
  for (const one of [pid, ...childPids(pid)]) {
    try {
      const status = readFileSync(`/proc/${one}/status`, 'utf8');
      const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
      rssKb += kb('VmRSS');
      peakKb += kb('VmHWM');
    } catch {
      if (one === pid) return undefined;
    }
  }
  return { rssMb: round(rssKb / 1024, 1), peakRssMb: round(peakKb / 1024, 1) };
}

// ---------------------------------------------------------------------------------------------
// Targets

interface Target {
  name: string;
  description: string;
  url: string;
  /** The process whose memory is reported (proxies only). */
  proxyPid: number | undefined;
  /** The process on the server core whose CPU time is measured (the proxy, or the backend for direct). */
  serverPid: number;
  /** Called around each load run, e.g. to move the backend onto the server core. */
  beforeRun?: () => Promise<void>;
  afterRun?: () => Promise<void>;
}

interface Skipped {
  name: string;
  description: string;
  reason: string;
}

interface Backends {
  pid: number;
  urls: string[];
}

async function startBackends(): Promise<Backends> {
  const child = startChild([process.execPath, path.join(here, 'backend.js'), String(BACKEND_COUNT)], CLIENT_CPU);
  const output = recordOutput(child);
  try {
    const line = await waitForLine(child, /^\{"ports":.*\}$/m, READY_TIMEOUT_MS);
    const { ports } = JSON.parse(line[0]) as { ports: number[] };
    return { pid: child.pid!, urls: ports.map((port) => `http://127.0.0.1:${port}`) };
  } catch (error) {
    throw new Error(`backends: ${(error as Error).message}\n${output()}`);
  }
}

const DESCRIPTIONS = {
  direct: 'the backend itself, no proxy',
  limpet: 'limpet (dist/src/cli.js), affinity by ip, 3 backends, health checks every 2 s',
  'limpet metrics off': 'the same limpet with per-request metrics recording replaced by a no-op (bench/metrics-off.ts preload)',
  'limpet 2 workers': 'the same limpet with workers: 2, allowed both cores (the load generator and backends share CPU 1)',
  'http-proxy': 'http-proxy + keep-alive agent, ip-hash stickiness, 502 on error',
  undici: 'node:http server + undici.Pool.stream to one backend, nothing else',
} as const;

function directTarget(backends: Backends): Target {
  return {
    name: 'direct',
    description: DESCRIPTIONS.direct,
    url: `${backends.urls[0]}/`,
    proxyPid: undefined,
    serverPid: backends.pid,
    // The backend gets the server core while it is the thing being measured.
    beforeRun: () => repin(backends.pid, SERVER_CPU),
    afterRun: () => repin(backends.pid, CLIENT_CPU),
  };
}

/** Starts one of the baseline proxies in bench/ (same CLI shape). */
async function baselineTarget(name: 'http-proxy' | 'undici', script: string, backends: Backends): Promise<Target | Skipped> {
  const child = startChild(
    [process.execPath, path.join(here, script), '--listen', '127.0.0.1:0', '--backends', backends.urls.join(',')],
    SERVER_CPU,
  );
  const output = recordOutput(child);
  try {
    const line = await waitForLine(child, /^listening (http:\/\/\S+)$/m, READY_TIMEOUT_MS);
    const url = `${line[1]}/`;
    await waitUntilServing(child, url);
    return { name, description: DESCRIPTIONS[name], url, proxyPid: child.pid, serverPid: child.pid! };
  } catch (error) {
    child.kill('SIGTERM');
    return { name, description: DESCRIPTIONS[name], reason: `${(error as Error).message} ${output()}`.trim() };
  }
}

interface LimpetVariant {
  name: 'limpet' | 'limpet metrics off' | 'limpet 2 workers';
  nodeArgs: string[];
  extraYaml: string[];
  cpus: string | undefined;
}

const LIMPET_VARIANTS: LimpetVariant[] = [
  { name: 'limpet', nodeArgs: [], extraYaml: [], cpus: SERVER_CPU },
  { name: 'limpet metrics off', nodeArgs: ['--import', pathToFileURL(path.join(here, 'metrics-off.js')).href], extraYaml: [], cpus: SERVER_CPU },
  { name: 'limpet 2 workers', nodeArgs: [], extraYaml: ['workers: 2'], cpus: PIN ? '0,1' : undefined },
];

async function limpetTarget(backends: Backends, tmp: string, variant: LimpetVariant = LIMPET_VARIANTS[0]!): Promise<Target | Skipped> {
  const name = variant.name;
  const description = DESCRIPTIONS[name];
  const cli = path.join(distRoot, 'src', 'cli.js');
  if (!existsSync(cli)) return { name, description, reason: `${path.relative(repoRoot, cli)} is not built` };
  const [port, adminPort] = [await freePort(), await freePort()];
  const configFile = path.join(tmp, `${name.replace(/\s+/g, '-')}.yaml`);
  writeFileSync(configFile, [
    `listen: 127.0.0.1:${port}`,
    `admin: { listen: "127.0.0.1:${adminPort}" }`,
    'log: { level: warn }',
    'affinity: { by: ip }',
    ...variant.extraYaml,
    'backends:',
    ...backends.urls.map((url, i) => `  - { id: b${i + 1}, url: "${url}" }`),
    '',
  ].join('\n'));
  const child = startChild([process.execPath, ...variant.nodeArgs, cli, '--config', configFile], variant.cpus);
  const output = recordOutput(child);
  const url = `http://127.0.0.1:${port}/`;
  try {
    await waitUntilServing(child, url);
    return { name, description, url, proxyPid: child.pid, serverPid: child.pid! };
  } catch (error) {
    child.kill('SIGTERM');
    // The first line naming an error says why; stack frames and Node's banner do not.
    const lines = output().split('\n').map((line) => line.trim()).filter((line) => line !== '');
    const cause = lines.find((line) => /error|cannot|invalid|unknown/i.test(line) && !line.startsWith('at ')) ?? lines.at(-1);
    return { name, description, reason: `${(error as Error).message}${cause === undefined ? '' : `: ${cause}`}` };
  }
}

// ---------------------------------------------------------------------------------------------
// Selection microbenchmark (bench/selection.ts, when present)

async function runSelection(): Promise<unknown> {
  const file = path.join(here, 'selection.js');
  if (!existsSync(file)) {
    console.log(`selection microbenchmark: skipped (${path.relative(repoRoot, file)} not built)\n`);
    return { skipped: 'not built' };
  }
  let module: { runSelectionBench?: unknown };
  try {
    module = (await import(new URL('./selection.js', import.meta.url).href)) as { runSelectionBench?: unknown };
  } catch (error) {
    console.log(`selection microbenchmark: skipped (import failed: ${(error as Error).message})\n`);
    return { skipped: `import failed: ${(error as Error).message}` };
  }
  if (typeof module.runSelectionBench !== 'function') {
    console.log('selection microbenchmark: skipped (dist/bench/selection.js exports no runSelectionBench)\n');
    return { skipped: 'no runSelectionBench export' };
  }
  console.log('selection microbenchmark:');
  try {
    const result: unknown = await (module.runSelectionBench as () => unknown)();
    const table = rowsTable(result);
    if (table !== undefined) console.log(table);
    console.log('');
    return result ?? null;
  } catch (error) {
    console.log(`selection microbenchmark: failed (${(error as Error).message}); continuing\n`);
    return { failed: (error as Error).message };
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

/** A Markdown table for an array of flat records (the selection bench's rows), else undefined. */
function rowsTable(value: unknown): string | undefined {
  if (!Array.isArray(value) || value.length === 0) return undefined;
  const rows = value.filter((row): row is Record<string, unknown> => typeof row === 'object' && row !== null);
  if (rows.length !== value.length) return undefined;
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const cell = (v: unknown) =>
    typeof v === 'number' ? (Number.isInteger(v) || Math.abs(v) >= 1000 ? fmtRate(v) : v.toFixed(1)) : String(v ?? '');
  return [
    `| ${columns.join(' | ')} |`,
    `|${columns.map(() => '---').join('|')}|`,
    ...rows.map((row) => `| ${columns.map((c) => cell(row[c])).join(' | ')} |`),
  ].join('\n');
}

/** One load run plus what it cost the process on the server core. */
interface RunResult extends LoadResult {
  /** Length of the run, in seconds. */
  seconds: number;
  /** CPU time (user + system) the server under test used during the run, in seconds. */
  serverCpuSeconds: number | null;
  /** That CPU time divided by the requests completed, in microseconds. */
  cpuUsPerRequest: number | null;
  /**
   * CPU seconds the machine spent during the run on processes outside this benchmark (pinning keeps
   * the benchmark's processes apart, not other work off the cores). Large values mean a disturbed run.
   */
  otherCpuSeconds: number | null;
}

interface Summary {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  serverCpuSeconds: number | null;
  cpuUsPerRequest: number | null;
  errors: number;
  non2xx: number;
  /** Rounds during which other processes used noticeable CPU (see isDisturbed). */
  disturbedRounds: number;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

function medianOrNull(values: (number | null)[], digits: number): number | null {
  const known = values.filter((v): v is number => v !== null);
  return known.length === 0 ? null : round(median(known), digits);
}

function summarise(runs: RunResult[]): Summary {
  return {
    requestsPerSec: Math.round(median(runs.map((r) => r.requestsPerSec))),
    p50Ms: round(median(runs.map((r) => r.p50Ms)), 3),
    p99Ms: round(median(runs.map((r) => r.p99Ms)), 3),
    serverCpuSeconds: medianOrNull(runs.map((r) => r.serverCpuSeconds), 2),
    cpuUsPerRequest: medianOrNull(runs.map((r) => r.cpuUsPerRequest), 1),
    errors: runs.reduce((sum, r) => sum + r.errors, 0),
    non2xx: runs.reduce((sum, r) => sum + r.non2xx, 0),
    disturbedRounds: runs.filter(isDisturbed).length,
  };
}

const fmtRate = (n: number) => Math.round(n).toLocaleString('en-US');
const fmtMs = (ms: number) => (ms < 10 ? ms.toFixed(2) : ms.toFixed(1)) + ' ms';

const fmtCpu = (seconds: number | null) => (seconds === null ? '—' : `${seconds.toFixed(2)} s`);
const fmtCpuPerReq = (us: number | null) => (us === null ? '—' : `${us.toFixed(1)} µs`);

/** A run is flagged when other processes used more than this share of one core during it. */
const DISTURBED_SHARE = 0.05;

function isDisturbed(r: RunResult): boolean {
  return r.otherCpuSeconds !== null && r.otherCpuSeconds > DISTURBED_SHARE * r.seconds;
}

function describeRun(name: string, r: RunResult): string {
  const problems = r.errors + r.non2xx > 0 ? `  (!) ${r.errors} socket errors, ${r.non2xx} non-2xx` : '';
  const cpu = r.serverCpuSeconds === null ? '' : `   server CPU ${fmtCpu(r.serverCpuSeconds)} (${fmtCpuPerReq(r.cpuUsPerRequest)}/req)`;
  const disturbed = isDisturbed(r) ? `  (!) disturbed: other processes used ${fmtCpu(r.otherCpuSeconds)} CPU` : '';
  return `  ${name.padEnd(18)} ${fmtRate(r.requestsPerSec).padStart(8)} req/s   p50 ${fmtMs(r.p50Ms).padStart(8)}   p99 ${fmtMs(r.p99Ms).padStart(8)}${cpu}${problems}${disturbed}`;
}

/** a / b for each metric; null where b is unknown or zero (autocannon reports whole milliseconds). */
interface Ratio {
  label: string;
  requestsPerSec: number | null;
  p50: number | null;
  p99: number | null;
  cpuPerRequest: number | null;
}

function divide(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : round(a / b, 3);
}

function ratio(label: string, a: Summary | undefined, b: Summary | undefined): Ratio | undefined {
  if (a === undefined || b === undefined) return undefined;
  return {
    label,
    requestsPerSec: divide(a.requestsPerSec, b.requestsPerSec),
    p50: divide(a.p50Ms, b.p50Ms),
    p99: divide(a.p99Ms, b.p99Ms),
    cpuPerRequest: divide(a.cpuUsPerRequest, b.cpuUsPerRequest),
  };
}

const fmtRatio = (value: number | null) => (value === null ? '—' : value.toFixed(2));

// ---------------------------------------------------------------------------------------------

function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

function loadCommand(tool: LoadTool): string {
  return tool === 'wrk'
    ? `wrk -t1 -c${CONNECTIONS} -d${SECONDS}s --latency`
    : `autocannon (programmatic, child process) connections=${CONNECTIONS} duration=${SECONDS}s`;
}

async function main(): Promise<void> {
  const started = Date.now();
  const tool = chooseLoadTool();
  const date = new Date().toISOString();
  const machine = { cpu: cpuModel(), cores: os.availableParallelism(), node: process.version, platform: `${os.type()} ${os.release()}` };
  const pinning = PIN
    ? 'taskset: server under test (proxy, or the backend in the direct case) on CPU 0; backends + load generator on CPU 1'
    : 'none (taskset unavailable or fewer than 2 CPUs)';
  console.log(`limpet end-to-end benchmark — ${date}`);
  console.log(`machine: ${machine.cpu}, ${machine.cores} cores, node ${machine.node}`);
  console.log(`load: ${tool} — ${loadCommand(tool)}; ${WARMUP_SECONDS} s warm-up per target; ${ROUNDS} interleaved rounds, median reported`);
  console.log(`pinning: ${pinning}`);
  // Pinning keeps the measured processes apart, not other work off the cores: say so when there is some.
  const loadBefore = os.loadavg().map((n) => round(n, 2));
  const busyBefore = await machineBusyPercent(1000);
  console.log(`before start: CPU ${busyBefore ?? '?'}% busy over 1 s, load average ${loadBefore.join(' ')}\n`);
  if (busyBefore !== undefined && busyBefore >= 10) {
    console.log(`warning: something else is using ${busyBefore}% of the CPUs; results will be noisy\n`);
  }

  const selection = await runSelection();

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-bench-'));
  try {
    const backends = await startBackends();
    const prepared = await Promise.all([
      Promise.resolve(directTarget(backends)),
      ...LIMPET_VARIANTS.map((variant) => limpetTarget(backends, tmp, variant)),
      baselineTarget('http-proxy', 'http-proxy-sticky.js', backends),
      baselineTarget('undici', 'undici-passthrough.js', backends),
    ]);
    const targets = prepared.filter((t): t is Target => 'url' in t);
    const ourPids = [backends.pid, ...targets.flatMap((t) => (t.proxyPid === undefined ? [] : [t.proxyPid]))];
    const skipped = prepared.filter((t): t is Skipped => 'reason' in t);
    for (const s of skipped) console.log(`skipped: ${s.name} — ${s.reason}\n`);

    const measure = async (target: Target, seconds: number): Promise<RunResult> => {
      await target.beforeRun?.();
      try {
        const cpuBefore = treeCpuSeconds(target.serverPid);
        const machineBefore = machineBusySeconds();
        const oursBefore = benchmarkCpuSeconds(ourPids);
        const load = await runLoad({ tool, url: target.url, connections: CONNECTIONS, seconds, cpus: CLIENT_CPU });
        const oursAfter = benchmarkCpuSeconds(ourPids);
        const machineAfter = machineBusySeconds();
        const cpuAfter = treeCpuSeconds(target.serverPid);
        const cpu = cpuBefore === undefined || cpuAfter === undefined ? null : round(cpuAfter - cpuBefore, 2);
        const perRequest = cpu === null || load.requests === 0 ? null : round((cpu * 1e6) / load.requests, 1);
        const other = [machineBefore, machineAfter, oursBefore, oursAfter].includes(undefined)
          ? null
          : round(Math.max(0, machineAfter! - machineBefore! - (oursAfter! - oursBefore!)), 2);
        return { ...load, seconds, serverCpuSeconds: cpu, cpuUsPerRequest: perRequest, otherCpuSeconds: other };
      } finally {
        await target.afterRun?.();
      }
    };

    console.log('warm-up');
    for (const target of targets) console.log(describeRun(target.name, await measure(target, WARMUP_SECONDS)));

    const runs = new Map<string, RunResult[]>(targets.map((t) => [t.name, []]));
    for (let r = 1; r <= ROUNDS; r++) {
      console.log(`round ${r}/${ROUNDS}`);
      // Every target once per round; the starting target rotates so none is always first or last.
      const order = targets.map((_, i) => targets[(i + r - 1) % targets.length]!);
      for (const target of order) {
        const result = await measure(target, SECONDS);
        runs.get(target.name)!.push(result);
        console.log(describeRun(target.name, result));
      }
    }

    const memory = new Map(targets.map((t) => [t.name, t.proxyPid === undefined ? undefined : memoryMb(t.proxyPid)]));
    const medians = new Map(targets.map((t) => [t.name, summarise(runs.get(t.name)!)]));
    const ratios = [
      ratio('limpet / http-proxy', medians.get('limpet'), medians.get('http-proxy')),
      ratio('limpet / direct', medians.get('limpet'), medians.get('direct')),
      ratio('limpet / undici pass-through', medians.get('limpet'), medians.get('undici')),
      ratio('http-proxy / undici pass-through', medians.get('http-proxy'), medians.get('undici')),
      ratio('limpet / limpet metrics off', medians.get('limpet'), medians.get('limpet metrics off')),
      ratio('limpet 2 workers / limpet', medians.get('limpet 2 workers'), medians.get('limpet')),
    ].filter((r): r is Ratio => r !== undefined);

    const table = [
      `Median of ${ROUNDS} interleaved rounds; ${loadCommand(tool)}; ${machine.cpu}, ${machine.cores} cores, node ${machine.node}; ${date.slice(0, 10)}.`,
      '',
      '| target | req/s | p50 | p99 | server CPU per run | CPU per request | RSS after run | errors / non-2xx | disturbed rounds |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...prepared.map((t) => {
        const m = medians.get(t.name);
        if (m === undefined) return `| ${t.name} | skipped | | | | | | | |`;
        const mem = memory.get(t.name);
        const rss = mem === undefined ? '—' : `${mem.rssMb} MB`;
        return `| ${t.name} | ${fmtRate(m.requestsPerSec)} | ${fmtMs(m.p50Ms)} | ${fmtMs(m.p99Ms)} | ${fmtCpu(m.serverCpuSeconds)} | ${fmtCpuPerReq(m.cpuUsPerRequest)} | ${rss} | ${m.errors} / ${m.non2xx} | ${m.disturbedRounds} / ${ROUNDS} |`;
      }),
    ];
    if (ratios.length > 0) {
      table.push('', '| ratio | req/s | p50 | p99 | CPU per request |', '|---|---:|---:|---:|---:|');
      for (const r of ratios) {
        table.push(`| ${r.label} | ${fmtRatio(r.requestsPerSec)} | ${fmtRatio(r.p50)} | ${fmtRatio(r.p99)} | ${fmtRatio(r.cpuPerRequest)} |`);
      }
    }
    console.log(`\nResults (Markdown)\n\n${table.join('\n')}\n`);
    for (const t of targets) {
      const mem = memory.get(t.name);
      if (mem !== undefined) console.log(`${t.name} memory after run: RSS ${mem.rssMb} MB, peak ${mem.peakRssMb} MB`);
    }

    const results = {
      date,
      node: machine.node,
      cpu: machine.cpu,
      cores: machine.cores,
      platform: machine.platform,
      loadTool: tool,
      loadCommand: loadCommand(tool),
      connections: CONNECTIONS,
      durationSeconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      rounds: ROUNDS,
      pinning,
      targets: Object.fromEntries([
        ...targets.map((t) => [t.name, {
          description: t.description,
          median: medians.get(t.name),
          memory: memory.get(t.name) ?? null,
          rounds: runs.get(t.name),
        }]),
        ...skipped.map((s) => [s.name, { description: s.description, skipped: s.reason }]),
      ]),
      ratios,
      otherLoadAtStart: { cpuBusyPercent: busyBefore ?? null, loadAverage: loadBefore },
      selection,
      wallSeconds: Math.round((Date.now() - started) / 1000),
    };
    const resultsDir = path.join(repoRoot, 'bench', 'results');
    mkdirSync(resultsDir, { recursive: true });
    const out = path.join(resultsDir, 'latest.json');
    writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
    console.log(`\nwrote ${path.relative(process.cwd(), out) || out} (${results.wallSeconds} s)`);
  } finally {
    stopChildren();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
