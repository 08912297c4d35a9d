// Load generation for the end-to-end benchmark: runs wrk when it is on PATH, autocannon otherwise,
// or h2load (nghttp2's, for HTTP/2 and HTTP/1.1 over TLS: bench/http2.ts), and reduces each tool's
// output to the same LoadResult.
//
// autocannon runs in a child process (this file, invoked as
// `node dist/bench/load.js autocannon URL CONNECTIONS SECONDS [HEADERS_JSON]`) so it never shares
// an event loop or a CPU with the harness or with the process under test.
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export type LoadTool = 'wrk' | 'autocannon' | 'h2load';

/** One measurement of one target: throughput, latency percentiles and anything that went wrong. */
export interface LoadResult {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Socket errors and timeouts seen by the load generator. */
  errors: number;
  /** Responses outside 2xx/3xx. */
  non2xx: number;
}

export interface LoadOptions {
  tool: LoadTool;
  url: string;
  connections: number;
  seconds: number;
  /** CPU list for `taskset -c`, or undefined to run unpinned. */
  cpus: string | undefined;
  /** Extra request headers, e.g. `Connection: close` to open a new connection per request. */
  headers?: Record<string, string>;
  /** h2load only: concurrent streams per connection over HTTP/2; 0 for HTTP/1.1 (`--h1`, one request at a time). */
  streams?: number;
  /**
   * h2load only: run until this many requests are done (`-n`) rather than for `seconds` (`-D`).
   * A timed h2load run can hang at its end against a server still busy with its first requests.
   */
  requests?: number;
}

/** Whether an executable of this name is on PATH. */
export function onPath(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(path.join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** wrk when available (it is a much cheaper client), else autocannon; BENCH_TOOL overrides. */
export function chooseLoadTool(): LoadTool {
  const forced = process.env.BENCH_TOOL;
  if (forced === 'wrk' || forced === 'autocannon') return forced;
  if (forced !== undefined && forced !== '') throw new Error(`BENCH_TOOL must be wrk or autocannon, got "${forced}"`);
  return onPath('wrk') ? 'wrk' : 'autocannon';
}

export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  if (options.tool === 'h2load') return runH2load(options);
  const headers = Object.entries(options.headers ?? {});
  const command = options.tool === 'wrk'
    ? ['wrk', '-t1', `-c${options.connections}`, `-d${options.seconds}s`, '--latency', ...headers.flatMap(([name, value]) => ['-H', `${name}: ${value}`]), options.url]
    : [process.execPath, fileURLToPath(import.meta.url), 'autocannon', options.url, String(options.connections), String(options.seconds), JSON.stringify(options.headers ?? {})];
  const output = await capture(pinnedCommand(command, options.cpus), (options.seconds + 30) * 1000);
  return options.tool === 'wrk' ? parseWrk(output) : (JSON.parse(output) as LoadResult);
}

/** `argv` run through `taskset -c cpus` when a CPU list is given. */
export function pinnedCommand(argv: string[], cpus: string | undefined): string[] {
  return cpus === undefined ? argv : ['taskset', '-c', cpus, ...argv];
}

/** Runs a command to completion and resolves with its stdout; rejects on a non-zero exit or timeout. */
export function capture(argv: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => { stdout += chunk; });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => { stderr += chunk; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(stdout);
      else reject(new Error(`${argv.join(' ')} exited with ${signal ?? code}: ${(stderr || stdout).trim()}`));
    });
  });
}

const TIME_UNITS_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

function wrkTime(text: string, percentile: string): number {
  const match = new RegExp(`^\\s*${percentile}%\\s+([\\d.]+)(us|ms|s|m|h)\\s*$`, 'm').exec(text);
  if (match === null) throw new Error(`wrk output has no ${percentile}% latency line:\n${text}`);
  return Number(match[1]) * TIME_UNITS_MS[match[2]!]!;
}

/** Parse `wrk --latency` output. */
export function parseWrk(text: string): LoadResult {
  const rate = /^Requests\/sec:\s+([\d.]+)/m.exec(text);
  const total = /^\s*(\d+) requests in /m.exec(text);
  if (rate === null || total === null) throw new Error(`unrecognised wrk output:\n${text}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text);
  return {
    requestsPerSec: Number(rate[1]),
    p50Ms: wrkTime(text, '50'),
    p99Ms: wrkTime(text, '99'),
    requests: Number(total[1]),
    errors: socket === null ? 0 : socket.slice(1).reduce((sum, n) => sum + Number(n), 0),
    non2xx: non2xx === null ? 0 : Number(non2xx[1]),
  };
}

/**
 * h2load for `requests` requests (`-n`) or over `seconds` (`-D`), one thread. Its summary has no
 * percentiles, so latencies come from its per-request log (start, status, µs to the end of the response).
 */
async function runH2load(options: LoadOptions): Promise<LoadResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'limpet-h2load-'));
  const log = path.join(dir, 'requests.tsv');
  try {
    const streams = options.streams ?? 1;
    const command = [
      'h2load', '-t1', `-c${options.connections}`, ...(streams > 0 ? [`-m${streams}`] : ['--h1']),
      ...(options.requests === undefined ? ['-D', String(options.seconds)] : ['-n', String(options.requests)]), `--log-file=${log}`,
      ...Object.entries(options.headers ?? {}).flatMap(([name, value]) => ['-H', `${name}: ${value}`]), options.url,
    ];
    // A counted run takes as long as the target needs: allow it several times the planned seconds.
    const output = await capture(pinnedCommand(command, options.cpus), (4 * options.seconds + 60) * 1000);
    return parseH2load(output, readFileSync(log, 'utf8'));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** h2load's summary and per-request log. */
export function parseH2load(text: string, log: string): LoadResult {
  const rate = /^finished in [\d.]+m?s, ([\d.]+) req\/s/m.exec(text);
  const counts = /^requests: \d+ total, \d+ started, (\d+) done, \d+ succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/m.exec(text);
  const codes = /^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/m.exec(text);
  if (rate === null || counts === null || codes === null) throw new Error(`unrecognised h2load output:\n${text}`);
  const durations = log
    .split('\n')
    .map((line) => line.split('\t'))
    .filter((fields) => fields.length >= 3 && Number(fields[1]) > 0)
    .map((fields) => Number(fields[2]) / 1000)
    .sort((a, b) => a - b);
  const percentile = (p: number) => (durations.length === 0 ? 0 : durations[Math.min(durations.length - 1, Math.floor((p / 100) * durations.length))]!);
  return {
    requestsPerSec: Number(rate[1]),
    p50Ms: percentile(50),
    p99Ms: percentile(99),
    requests: Number(codes[1]) + Number(codes[2]),
    errors: Number(counts[2]) + Number(counts[3]) + Number(counts[4]),
    non2xx: Number(codes[3]) + Number(codes[4]),
  };
}

interface AutocannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number };
  errors: number;
  non2xx: number;
}
type Autocannon = (options: { url: string; connections: number; duration: number; headers: Record<string, string> }) => Promise<AutocannonResult>;

async function autocannonChild(url: string, connections: number, seconds: number, headers: Record<string, string>): Promise<void> {
  const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;
  const result = await autocannon({ url, connections, duration: seconds, headers });
  const summary: LoadResult = {
    requestsPerSec: result.requests.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    requests: result.requests.total,
    errors: result.errors, // autocannon already counts timeouts among errors
    non2xx: result.non2xx,
  };
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === 'autocannon') {
  const [url, connections, seconds, headers] = process.argv.slice(3);
  await autocannonChild(url!, Number(connections), Number(seconds), JSON.parse(headers ?? '{}') as Record<string, string>);
}
