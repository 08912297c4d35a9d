// Machinery shared by the end-to-end benchmarks (bench/run.ts, bench/compare.ts): child processes
// pinned to CPUs, readiness checks, CPU time and memory from /proc, one measured load run, medians
// and number formatting.
//
// Importing this module installs exit and signal handlers that stop every child it started.
import { freePort } from './free-port.js';
import { execFile, execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { onPath, pinnedCommand, runLoad, type LoadOptions, type LoadResult } from './load.js';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';

export const benchDir = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
export const distRoot = path.resolve(benchDir, '..');
export const repoRoot = path.resolve(distRoot, '..');
export const resultsDir = path.join(repoRoot, 'bench', 'results');

export const READY_TIMEOUT_MS = 15_000;

/** CPU layout: the server under test alone on one core, everything else on the other. */
export const PIN = onPath('taskset') && os.availableParallelism() >= 2;
export const SERVER_CPU = PIN ? '0' : undefined;
export const CLIENT_CPU = PIN ? '1' : undefined;

export function pinningDescription(): string {
  return PIN
    ? 'taskset: server under test (proxy, or the backend in the direct case) on CPU 0; backends + load generator on CPU 1'
    : 'none (taskset unavailable or fewer than 2 CPUs)';
}

/** An integer environment variable that must be at least `min` when set. */
export function intFromEnv(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer ≥ ${min}, got "${raw}"`);
  return value;
}

// ---------------------------------------------------------------------------------------------
// Child processes

const children = new Set<ChildProcess>();

export function startChild(argv: string[], cpus: string | undefined): ChildProcess {
  const command = pinnedCommand(argv, cpus);
  const child = spawn(command[0]!, command.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], cwd: repoRoot });
  children.add(child);
  child.on('exit', () => children.delete(child));
  // A missing executable is reported through readiness (the child "exits"), not as a crash.
  child.on('error', () => children.delete(child));
  return child;
}

export function stopChildren(): void {
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
export function recordOutput(child: ChildProcess): () => string {
  let text = '';
  const append = (chunk: Buffer) => {
    text = (text + chunk.toString('utf8')).slice(-4000);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  child.on('error', (error) => {
    text += `\n${error.message}`;
  });
  return () => text.trim();
}

/** Resolves with the first stdout line matching `pattern`; rejects if the child exits or times out first. */
export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs = READY_TIMEOUT_MS): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      const match = pattern.exec(buffered);
      if (match !== null) finish(() => resolve(match));
    };
    const onExit = (code: number | null, signal: string | null) =>
      finish(() => reject(new Error(`exited with ${signal ?? code} before it was ready`)));
    const onError = (error: Error) => finish(() => reject(error));
    const timer = setTimeout(() => finish(() => reject(new Error(`not ready after ${timeoutMs} ms`))), timeoutMs);
    const finish = (settle: () => void) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      child.off('error', onError);
      settle();
    };
    child.stdout?.on('data', onData);
    child.on('exit', onExit);
    child.on('error', onError);
  });
}

/** The status of `GET url`; over HTTPS the benchmarks' self-signed certificate is accepted. */
function getStatus(url: string): Promise<number> {
  return new Promise((resolve) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { agent: false, timeout: 1000, rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

/** Polls `GET url` until it answers 200; rejects if the child exits or the deadline passes. */
export async function waitUntilServing(child: ChildProcess, url: string): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let last = 0;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited with ${child.signalCode ?? child.exitCode} before serving`);
    }
    if (child.pid === undefined) throw new Error('could not be started');
    last = await getStatus(url);
    if (last === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`GET ${url} did not answer 200 within ${READY_TIMEOUT_MS / 1000} s (last status: ${last || 'no answer'})`);
}

export { freePort } from './free-port.js';

const execFileAsync = promisify(execFile);

/** Moves every thread of a running process onto `cpus`. */
export async function repin(pid: number, cpus: string | undefined): Promise<void> {
  if (cpus !== undefined) await execFileAsync('taskset', ['-a', '-p', '-c', cpus, String(pid)]);
}

/** Path of an executable: on PATH, else in the sbin directories a non-root PATH often lacks. */
export function findExecutable(name: string): string | undefined {
  if (onPath(name)) return name;
  return ['/usr/sbin', '/usr/local/sbin', '/sbin'].map((dir) => path.join(dir, name)).find((file) => existsSync(file));
}

// ---------------------------------------------------------------------------------------------
// /proc accounting

/** USER_HZ; 100 on every mainstream Linux configuration. */
const CLOCK_TICKS = (() => {
  try {
    const value = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return Number.isInteger(value) && value > 0 ? value : 100;
  } catch {
    return 100;
  }
})();

/**
 * User + system CPU time a process (all its threads) has used so far, in seconds. With
 * `withReapedChildren`, also that of its children that have exited and been waited for.
 */
export function cpuSeconds(pid: number | 'self', withReapedChildren = false): number | undefined {
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

/** Live descendants of `pid`: cluster workers, nginx workers, and their children. */
export function descendantPids(pid: number): number[] {
  const found: number[] = [];
  const visit = (parent: number) => {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${parent}/task`);
    } catch {
      return;
    }
    for (const task of tasks) {
      let listed: string;
      try {
        listed = readFileSync(`/proc/${parent}/task/${task}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const child of listed.trim().split(/\s+/).filter(Boolean).map(Number)) {
        found.push(child);
        visit(child);
      }
    }
  };
  visit(pid);
  return found;
}

/** CPU seconds of a process and its live descendants (a cluster primary and its workers, an nginx master and its workers). */
export function treeCpuSeconds(pid: number): number | undefined {
  const own = cpuSeconds(pid);
  if (own === undefined) return undefined;
  return descendantPids(pid).reduce((sum, child) => sum + (cpuSeconds(child) ?? 0), own);
}

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

/** Busy and total ticks of one CPU (`cpu` = "1") or of all CPUs (undefined), interrupts included. */
function cpuTicks(cpu: string | undefined): { busy: number; total: number } | undefined {
  try {
    const label = cpu === undefined ? 'cpu' : `cpu${cpu}`;
    const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`${label} `));
    if (line === undefined) return undefined;
    const fields = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = fields.reduce((sum, n) => sum + n, 0);
    return { busy: total - fields[3]! - fields[4]!, total };
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
export async function machineBusyPercent(ms: number): Promise<number | undefined> {
  const a = cpuTicks(undefined);
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = cpuTicks(undefined);
  if (a === undefined || b === undefined || b.total === a.total) return undefined;
  return Math.round((100 * (b.busy - a.busy)) / (b.total - a.total));
}

/** TCP connections accepted on this host so far (/proc/net/snmp PassiveOpens). */
/** Instructions and cycles a set of processes executed (user and kernel), from `perf stat`. */
export interface CpuCounters {
  instructions: number;
  cycles: number;
}

/**
 * Whether `perf stat` can count instructions here (it needs linux-perf and hardware counters,
 * which some VMs do not expose); null when it can, else why not.
 */
export const countersUnavailable: string | null = (() => {
  if (!onPath('perf')) return 'perf is not installed (Debian: linux-perf)';
  const probe = spawnSync('perf', ['stat', '-x,', '-e', 'instructions', 'true'], { encoding: 'utf8' });
  const count = Number(probe.stderr?.split('\n').find((line) => line.includes('instructions'))?.split(',')[0]);
  if (probe.status === 0 && Number.isFinite(count) && count > 0) return null;
  return `perf stat cannot count instructions here: ${(probe.stderr ?? '').trim().split('\n').at(-1) ?? `exit ${probe.status}`}`;
})();

/**
 * Starts counting instructions and cycles of `pids` (every thread); `stop()` ends the count and
 * resolves with the totals, or null when perf could not count them. Instruction counts barely
 * move with the machine's noise, so they compare work per request where timings wander.
 */
export function countCpu(pids: number[]): { stop: () => Promise<CpuCounters | null> } {
  if (countersUnavailable !== null || pids.length === 0) return { stop: async () => null };
  const child = spawn('perf', ['stat', '-x,', '-e', 'instructions,cycles', '-p', pids.join(',')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  return {
    stop: async () => {
      child.kill('SIGINT');
      await exited;
      const value = (event: string) => {
        const line = stderr.split('\n').find((l) => l.split(',')[2]?.startsWith(event));
        const n = Number(line?.split(',')[0]);
        return Number.isFinite(n) && n > 0 ? n : null;
      };
      const instructions = value('instructions');
      const cycles = value('cycles');
      return instructions === null || cycles === null ? null : { instructions, cycles };
    },
  };
}

function tcpPassiveOpens(): number | undefined {
  try {
    const lines = readFileSync('/proc/net/snmp', 'utf8').split('\n').filter((line) => line.startsWith('Tcp:'));
    const names = lines[0]!.split(/\s+/);
    const value = Number(lines[1]!.split(/\s+/)[names.indexOf('PassiveOpens')]);
    return Number.isFinite(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether the kernel's TIME_WAIT table is (nearly) full. Runs that reconnect per request fill it
 * within seconds; once at its cap (`net.ipv4.tcp_max_tw_buckets`), per-connection costs of some
 * servers jump several-fold, so such a run is flagged rather than trusted.
 */
function timeWaitTableFull(): boolean | undefined {
  try {
    const tw = Number(/TCP:.*\btw (\d+)/.exec(readFileSync('/proc/net/sockstat', 'utf8'))?.[1]);
    const cap = Number(readFileSync('/proc/sys/net/ipv4/tcp_max_tw_buckets', 'utf8'));
    return Number.isFinite(tw) && Number.isFinite(cap) && cap > 0 ? tw >= 0.95 * cap : undefined;
  } catch {
    return undefined;
  }
}

/** RSS and peak RSS (VmHWM) of a process plus its live descendants, summed. */
export function memoryMb(pid: number): { rssMb: number; peakRssMb: number } | undefined {
  let rssKb = 0;
  let peakKb = 0;
  for (const one of [pid, ...descendantPids(pid)]) {
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

/** Resets the peak RSS (VmHWM) of a process tree to its current RSS; false when the kernel refuses. */
function resetPeakRss(pid: number): boolean {
  let ok = true;
  for (const one of [pid, ...descendantPids(pid)]) {
    try {
      writeFileSync(`/proc/${one}/clear_refs`, '5');
    } catch {
      ok = false;
    }
  }
  return ok;
}

export function cpuModel(): string {
  try {
    return /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  } catch {
    return os.cpus()[0]?.model ?? 'unknown';
  }
}

export interface Machine {
  cpu: string;
  cores: number;
  node: string;
  platform: string;
}

export function machine(): Machine {
  return { cpu: cpuModel(), cores: os.availableParallelism(), node: process.version, platform: `${os.type()} ${os.release()}` };
}

/** "AMD EPYC, 2 cores, node v20.20.2": the machine as every result line names it. */
export function describeMachine(m: Machine = machine()): string {
  return `${m.cpu}, ${m.cores} cores, node ${m.node}`;
}

/**
 * Prints how busy the machine is before the start: pinning keeps the measured processes apart,
 * not other work off the cores.
 */
export async function otherLoadAtStart(): Promise<{ cpuBusyPercent: number | null; loadAverage: number[] }> {
  const loadAverage = os.loadavg().map((n) => round(n, 2));
  const busy = await machineBusyPercent(1000);
  console.log(`before start: CPU ${busy ?? '?'}% busy over 1 s, load average ${loadAverage.join(' ')}\n`);
  if (busy !== undefined && busy >= 10) console.log(`warning: something else is using ${busy}% of the CPUs; results will be noisy\n`);
  return { cpuBusyPercent: busy ?? null, loadAverage };
}

// ---------------------------------------------------------------------------------------------
// Targets

export interface Target {
  name: string;
  description: string;
  /** `http://host:port`, no trailing slash. */
  origin: string;
  /** The process tree whose memory is reported (proxies only). */
  proxyPid: number | undefined;
  /** The process tree on the server core whose CPU time is measured (the proxy, or the backend for direct). */
  serverPid: number;
  /** Called around each load run, e.g. to move the backend onto the server core. */
  beforeRun?: () => Promise<void>;
  afterRun?: () => Promise<void>;
}

export interface Skipped {
  name: string;
  description: string;
  reason: string;
}

export const isTarget = (t: Target | Skipped): t is Target => 'origin' in t;
export const isSkipped = (t: Target | Skipped): t is Skipped => 'reason' in t;

export interface Backends {
  pid: number;
  origins: string[];
}

/** The backend servers (bench/backend.ts) in one child process on the client core. */
export async function startBackends(count: number, extraArgs: string[] = []): Promise<Backends> {
  const child = startChild([process.execPath, path.join(benchDir, 'backend.js'), String(count), ...extraArgs], CLIENT_CPU);
  const output = recordOutput(child);
  try {
    const line = await waitForLine(child, /^\{"ports":.*\}$/m);
    const { ports } = JSON.parse(line[0]) as { ports: number[] };
    return { pid: child.pid!, origins: ports.map((port) => `http://127.0.0.1:${port}`) };
  } catch (error) {
    throw new Error(`backends: ${(error as Error).message}\n${output()}`);
  }
}

export function directTarget(backends: Backends, description: string): Target {
  return {
    name: 'direct',
    description,
    origin: backends.origins[0]!,
    proxyPid: undefined,
    serverPid: backends.pid,
    // The backend gets the server core while it is the thing being measured.
    beforeRun: () => repin(backends.pid, SERVER_CPU),
    afterRun: () => repin(backends.pid, CLIENT_CPU),
  };
}

/** Why a server did not come up: the first line of its output naming an error, else its last line. */
function failureReason(error: unknown, output: string): string {
  const lines = output.split('\n').map((line) => line.trim()).filter((line) => line !== '');
  const cause = lines.find((line) => /error|cannot|invalid|unknown|emerg|alert/i.test(line) && !line.startsWith('at ')) ?? lines.at(-1);
  return `${(error as Error).message}${cause === undefined ? '' : `: ${cause}`}`;
}

/**
 * Starts a server that listens on a known `origin`, waits until `GET /` answers 200, and returns it
 * as a target (its whole process tree measured), or why it could not be used.
 */
export async function startServerTarget(
  name: string,
  description: string,
  argv: string[],
  cpus: string | undefined,
  origin: string,
): Promise<Target | Skipped> {
  const child = startChild(argv, cpus);
  const output = recordOutput(child);
  try {
    await waitUntilServing(child, `${origin}/`);
    return { name, description, origin, proxyPid: child.pid, serverPid: child.pid! };
  } catch (error) {
    child.kill('SIGTERM');
    return { name, description, reason: failureReason(error, output()) };
  }
}

/** Starts one of the Node baseline proxies in bench/ (`--listen HOST:PORT --backends URL,...`). */
export async function baselineTarget(
  name: string,
  description: string,
  script: string,
  backends: Backends,
  cpus: string | undefined,
): Promise<Target | Skipped> {
  const child = startChild(
    [process.execPath, path.join(benchDir, script), '--listen', '127.0.0.1:0', '--backends', backends.origins.join(',')],
    cpus,
  );
  const output = recordOutput(child);
  try {
    const line = await waitForLine(child, /^listening (http:\/\/\S+)$/m);
    const origin = line[1]!;
    await waitUntilServing(child, `${origin}/`);
    return { name, description, origin, proxyPid: child.pid, serverPid: child.pid! };
  } catch (error) {
    child.kill('SIGTERM');
    return { name, description, reason: failureReason(error, output()) };
  }
}

export interface LimpetVariant {
  name: string;
  description: string;
  /** Node flags before the CLI, e.g. a preload. */
  nodeArgs: string[];
  /** Config lines added to the common ones (affinity by ip, log level warn, the backends). */
  extraYaml: string[];
  /** The affinity line instead of `affinity: { by: ip }`. */
  affinity?: string;
  /** Another build's `dist/src/cli.js` (BENCH_LIMPET_BASELINE), to compare two builds in one run. */
  cli?: string;
  /** Serve HTTPS with these PEM files (HTTP/2 on by default); the origin is then https://. */
  tls?: { cert: string; key: string };
  cpus: string | undefined;
}

/** limpet (dist/src/cli.js), by default with affinity by ip, over the backends, its config written into `tmp`. */
export async function limpetTarget(backends: Backends, tmp: string, variant: LimpetVariant): Promise<Target | Skipped> {
  const { name, description } = variant;
  const cli = variant.cli ?? path.join(distRoot, 'src', 'cli.js');
  if (!existsSync(cli)) return { name, description, reason: `${path.relative(repoRoot, cli)} is not built` };
  const [port, adminPort] = [await freePort(), await freePort()];
  const configFile = path.join(tmp, `${name.replace(/\s+/g, '-')}.yaml`);
  writeFileSync(configFile, [
    `listen: 127.0.0.1:${port}`,
    `admin: { listen: "127.0.0.1:${adminPort}" }`,
    'log: { level: warn }',
    variant.affinity ?? 'affinity: { by: ip }',
    ...(variant.tls === undefined ? [] : [`tls: { cert: "${variant.tls.cert}", key: "${variant.tls.key}" }`]),
    ...variant.extraYaml,
    'backends:',
    ...backends.origins.map((origin, i) => `  - { id: b${i + 1}, url: "${origin}" }`),
    '',
  ].join('\n'));
  // Started as the limpet command starts it: with its runtime flags.
  const argv = [process.execPath, ...RUNTIME_FLAGS, ...variant.nodeArgs, cli, '--config', configFile];
  return startServerTarget(name, description, argv, variant.cpus, `${variant.tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`);
}

// ---------------------------------------------------------------------------------------------
// One measured run

/** One load run plus what it cost the server under test. */
export interface RunResult extends LoadResult {
  /** Length of the run, in seconds. */
  seconds: number;
  /** CPU time (user + system) the server under test's process tree used during the run, in seconds. */
  serverCpuSeconds: number | null;
  /** That CPU time divided by the requests completed, in microseconds. */
  cpuUsPerRequest: number | null;
  /**
   * CPU seconds the machine spent during the run on processes outside this benchmark (pinning keeps
   * the benchmark's processes apart, not other work off the cores). Large values mean a disturbed run.
   */
  otherCpuSeconds: number | null;
  /** Share of the client core (load generator + backends) that was busy, 0-1; null when unpinned. */
  clientCoreBusy: number | null;
  /** TCP connections accepted on the host per completed request (≈1 when every request reconnects). */
  acceptsPerRequest: number | null;
  /** Peak RSS of the server tree during this run (MB), when asked for. */
  peakRssMb?: number | null;
  /** The TIME_WAIT table was at its cap by the end of the run (see timeWaitTableFull); null when unknown. */
  timeWaitFull: boolean | null;
  /**
   * Thousands of instructions and of cycles the server tree executed per completed request (user
   * and kernel, `perf stat`); null without hardware counters.
   */
  kInstructionsPerRequest: number | null;
  kCyclesPerRequest: number | null;
}

export interface MeasureContext {
  /** Every long-running process of the benchmark (backends, all proxies), for the disturbance check. */
  ourPids: number[];
  /** Reset the tree's peak RSS before the run and report the run's own peak. */
  trackPeakRss?: boolean;
}

export async function measure(
  target: Target,
  load: Omit<LoadOptions, 'url' | 'cpus'> & { path: string },
  context: MeasureContext,
): Promise<RunResult> {
  await target.beforeRun?.();
  try {
    const peakReset = context.trackPeakRss === true && target.proxyPid !== undefined && resetPeakRss(target.proxyPid);
    const cpuBefore = treeCpuSeconds(target.serverPid);
    const machineBefore = machineBusySeconds();
    const oursBefore = benchmarkCpuSeconds(context.ourPids);
    const clientBefore = cpuTicks(CLIENT_CPU);
    const acceptsBefore = tcpPassiveOpens();
    const counting = countCpu([target.serverPid, ...descendantPids(target.serverPid)]);
    const { path: urlPath, ...loadOptions } = load;
    const result = await runLoad({ ...loadOptions, url: `${target.origin}${urlPath}`, cpus: CLIENT_CPU });
    const counters = await counting.stop();
    const acceptsAfter = tcpPassiveOpens();
    const timeWaitFull = timeWaitTableFull() ?? null;
    const clientAfter = cpuTicks(CLIENT_CPU);
    const oursAfter = benchmarkCpuSeconds(context.ourPids);
    const machineAfter = machineBusySeconds();
    const cpuAfter = treeCpuSeconds(target.serverPid);
    const cpu = cpuBefore === undefined || cpuAfter === undefined ? null : round(cpuAfter - cpuBefore, 2);
    const perRequest = cpu === null || result.requests === 0 ? null : round((cpu * 1e6) / result.requests, 1);
    const other = [machineBefore, machineAfter, oursBefore, oursAfter].includes(undefined)
      ? null
      : round(Math.max(0, machineAfter! - machineBefore! - (oursAfter! - oursBefore!)), 2);
    const clientBusy = CLIENT_CPU === undefined || clientBefore === undefined || clientAfter === undefined || clientAfter.total === clientBefore.total
      ? null
      : round((clientAfter.busy - clientBefore.busy) / (clientAfter.total - clientBefore.total), 2);
    const accepts = acceptsBefore === undefined || acceptsAfter === undefined || result.requests === 0
      ? null
      : round((acceptsAfter - acceptsBefore) / result.requests, 2);
    const run: RunResult = {
      ...result,
      seconds: load.seconds,
      serverCpuSeconds: cpu,
      cpuUsPerRequest: perRequest,
      otherCpuSeconds: other,
      clientCoreBusy: clientBusy,
      acceptsPerRequest: accepts,
      timeWaitFull,
      kInstructionsPerRequest: counters === null || result.requests === 0 ? null : round(counters.instructions / result.requests / 1000, 1),
      kCyclesPerRequest: counters === null || result.requests === 0 ? null : round(counters.cycles / result.requests / 1000, 1),
    };
    if (context.trackPeakRss === true) {
      run.peakRssMb = peakReset ? (memoryMb(target.proxyPid!)?.peakRssMb ?? null) : null;
    }
    return run;
  } finally {
    await target.afterRun?.();
  }
}

/** A run is flagged when other processes used more than this share of one core during it. */
const DISTURBED_SHARE = 0.05;

export function isDisturbed(r: RunResult): boolean {
  // A full TIME_WAIT table only weighs on runs that open connections; keep-alive runs are unaffected.
  const reconnecting = r.acceptsPerRequest === null || r.acceptsPerRequest > 0.5;
  return (r.otherCpuSeconds !== null && r.otherCpuSeconds > DISTURBED_SHARE * r.seconds) || (r.timeWaitFull === true && reconnecting);
}

export interface Summary {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  serverCpuSeconds: number | null;
  cpuUsPerRequest: number | null;
  kInstructionsPerRequest: number | null;
  kCyclesPerRequest: number | null;
  errors: number;
  non2xx: number;
  /** Rounds during which other processes used noticeable CPU (see isDisturbed). */
  disturbedRounds: number;
}

export function summarise(runs: RunResult[]): Summary {
  return {
    requestsPerSec: Math.round(median(runs.map((r) => r.requestsPerSec))),
    p50Ms: round(median(runs.map((r) => r.p50Ms)), 3),
    p99Ms: round(median(runs.map((r) => r.p99Ms)), 3),
    serverCpuSeconds: medianOrNull(runs.map((r) => r.serverCpuSeconds), 2),
    cpuUsPerRequest: medianOrNull(runs.map((r) => r.cpuUsPerRequest), 1),
    kInstructionsPerRequest: medianOrNull(runs.map((r) => r.kInstructionsPerRequest), 1),
    kCyclesPerRequest: medianOrNull(runs.map((r) => r.kCyclesPerRequest), 1),
    errors: runs.reduce((sum, r) => sum + r.errors, 0),
    non2xx: runs.reduce((sum, r) => sum + r.non2xx, 0),
    disturbedRounds: runs.filter(isDisturbed).length,
  };
}

// ---------------------------------------------------------------------------------------------
// Numbers

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function round(value: number, digits: number): number {
  const scale = 10 ** digits;
  return Math.round(value * scale) / scale;
}

export function medianOrNull(values: (number | null | undefined)[], digits: number): number | null {
  const known = values.filter((v): v is number => typeof v === 'number');
  return known.length === 0 ? null : round(median(known), digits);
}

/** a / b; null where either is unknown or b is zero (autocannon reports whole milliseconds). */
export function divide(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : round(a / b, 3);
}

export const fmtRate = (n: number) => Math.round(n).toLocaleString('en-US');
export const fmtMs = (ms: number) => (ms < 10 ? ms.toFixed(2) : ms.toFixed(1)) + ' ms';
export const fmtCpu = (seconds: number | null) => (seconds === null ? '—' : `${seconds.toFixed(2)} s`);
export const fmtCpuPerReq = (us: number | null) => (us === null ? '—' : `${us.toFixed(1)} µs`);
export const fmtRatio = (value: number | null) => (value === null ? '—' : value.toFixed(2));

/** The console line for one run. */
export function describeRun(name: string, r: RunResult): string {
  const problems = r.errors + r.non2xx > 0 ? `  (!) ${r.errors} socket errors, ${r.non2xx} non-2xx` : '';
  const instructions = r.kInstructionsPerRequest === null ? '' : `, ${Math.round(r.kInstructionsPerRequest)} k instr/req`;
  const cpu = r.serverCpuSeconds === null ? '' : `   server CPU ${fmtCpu(r.serverCpuSeconds)} (${fmtCpuPerReq(r.cpuUsPerRequest)}/req${instructions})`;
  const disturbed = !isDisturbed(r)
    ? ''
    : r.timeWaitFull === true
      ? '  (!) disturbed: the TIME_WAIT table was full'
      : `  (!) disturbed: other processes used ${fmtCpu(r.otherCpuSeconds)} CPU`;
  return `  ${name.padEnd(20)} ${fmtRate(r.requestsPerSec).padStart(8)} req/s   p50 ${fmtMs(r.p50Ms).padStart(8)}   p99 ${fmtMs(r.p99Ms).padStart(8)}${cpu}${problems}${disturbed}`;
}

/** Writes `contents` to bench/results/<file> and returns the path written, relative to the cwd. */
export function writeResult(file: string, contents: string): string {
  mkdirSync(resultsDir, { recursive: true });
  const out = path.join(resultsDir, file);
  writeFileSync(out, contents);
  return path.relative(process.cwd(), out) || out;
}
