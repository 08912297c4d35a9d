// Fixed-rate load for the latency-at-half-load measurement of bench/compare.ts: requests leave at an
// even pace whatever the server's latency (open loop), over a pool of keep-alive connections, and
// each one's time from write to the last byte of its response is recorded at microsecond
// resolution.
//
// Two generators with one output (PacedResult):
// - native (bench/paced-load.c), used whenever `cc` can build it: every request leaves at its own
//   slot (a timerfd per request, microsecond pacing) and costs a few microseconds of CPU;
// - this file's Node pacer otherwise. Node's timers fire on a 1 ms grid, so it sends each
//   millisecond's quota as one burst (about 20 requests at half load), and a proxy answers the last
//   of a burst only after the others: it overstates a proxy's latency against a direct backend.
//
// autocannon's `overallRate` is not used for this: it gives every connection a per-second quota
// that the connection sends back to back as soon as each second starts, so "half load" is a
// full-speed burst followed by idle time and its latencies are those of full load; it also records
// whole milliseconds and, with a rate set, adds coordinated-omission corrections based on a 1 ms
// expected interval.
//
// The Node pacer runs as a child process (`node dist/bench/paced-load.js URL RATE CONNECTIONS
// SECONDS`) so it has its own event loop and CPU; it prints one JSON line (PacedResult). Responses
// must carry Content-Length (chunked responses are counted as errors).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { capture, pinnedCommand } from './load.js';

export interface PacedResult {
  /** Requests per second asked for. */
  targetRate: number;
  /** Responses completed per second over the run. */
  requestsPerSec: number;
  requests: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  errors: number;
  non2xx: number;
  /**
   * Requests that left more than 2 ms after their slot because no connection was free or the
   * generator fell behind: non-zero means the rate was not really held.
   */
  lateRequests: number;
}

export type PacedGenerator = 'native' | 'node';

export interface PacedOptions {
  url: string;
  rate: number;
  connections: number;
  seconds: number;
  cpus: string | undefined;
}

const benchDir = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const nativeSource = path.resolve(benchDir, '..', '..', 'bench', 'paced-load.c');
const nativeBinary = path.join(benchDir, 'paced-load');

/**
 * The native generator, built from bench/paced-load.c when missing or older than its source, or
 * why it cannot be used (then the Node pacer runs, and the bench says so).
 */
export function pacedGenerator(): { generator: 'native'; binary: string } | { generator: 'node'; why: string } {
  if (!existsSync(nativeSource)) return { generator: 'node', why: `${nativeSource} is missing` };
  if (existsSync(nativeBinary) && statSync(nativeBinary).mtimeMs >= statSync(nativeSource).mtimeMs) {
    return { generator: 'native', binary: nativeBinary };
  }
  try {
    mkdirSync(benchDir, { recursive: true });
    execFileSync('cc', ['-O2', '-o', nativeBinary, nativeSource], { stdio: ['ignore', 'ignore', 'pipe'] });
    return { generator: 'native', binary: nativeBinary };
  } catch (error) {
    const detail = (error as { stderr?: Buffer }).stderr?.toString().trim() || (error as Error).message;
    return { generator: 'node', why: `cc could not build bench/paced-load.c: ${detail.split('\n')[0]}` };
  }
}

export async function runPacedLoad(options: PacedOptions, generator: PacedGenerator): Promise<PacedResult> {
  const url = new URL(options.url);
  const command = generator === 'native'
    ? [nativeBinary, url.hostname, url.port || '80', `${url.pathname}${url.search}`, String(options.rate), String(options.connections), String(options.seconds)]
    : [process.execPath, fileURLToPath(import.meta.url), options.url, String(options.rate), String(options.connections), String(options.seconds)];
  const output = await capture(pinnedCommand(command, options.cpus), (options.seconds + 30) * 1000);
  return JSON.parse(output) as PacedResult;
}

const HEAD_END = Buffer.from('\r\n\r\n');
const LATE_NS = 2_000_000n;
/** How long to wait for outstanding responses after the last request has left. */
const DRAIN_MS = 2000;

class PacedConnection {
  socket!: net.Socket;
  busy = false;
  private sentAt = 0n;
  private received: Buffer | undefined;
  /** Body bytes still expected for the current response, or -1 while its head is incomplete. */
  private bodyLeft = -1;
  private status = 0;

  constructor(
    private readonly target: URL,
    private readonly request: Buffer,
    private readonly onDone: (connection: PacedConnection, latencyNs: bigint | undefined, status: number) => void,
  ) {}

  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket = net.connect({ host: this.target.hostname, port: Number(this.target.port || 80) }, () => resolve());
      this.socket.setNoDelay(true);
      this.socket.once('error', reject);
      // Any later error is followed by 'close', which handles it.
      this.socket.on('error', () => undefined);
      this.socket.on('data', (chunk: Buffer) => this.onData(chunk));
      this.socket.on('close', () => {
        const wasBusy = this.busy;
        this.reset();
        if (wasBusy) this.onDone(this, undefined, 0);
        // Reconnect (after a pause, so a dead server is not hammered) to keep the pool's size.
        setTimeout(() => this.connect().catch(() => undefined), 10);
      });
    });
  }

  send(now: bigint): void {
    this.busy = true;
    this.sentAt = now;
    this.socket.write(this.request);
  }

  private reset(): void {
    this.busy = false;
    this.received = undefined;
    this.bodyLeft = -1;
  }

  private onData(chunk: Buffer): void {
    if (this.bodyLeft === -1) {
      const data = this.received === undefined ? chunk : Buffer.concat([this.received, chunk]);
      const end = data.indexOf(HEAD_END);
      if (end === -1) {
        this.received = data;
        return;
      }
      const head = data.toString('latin1', 0, end);
      this.received = undefined;
      this.status = Number(head.slice(9, 12));
      const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
      if (length === null) {
        this.socket.destroy();
        return;
      }
      this.bodyLeft = Number(length[1]) - (data.length - end - HEAD_END.length);
    } else {
      this.bodyLeft -= chunk.length;
    }
    if (this.bodyLeft <= 0) {
      const latency = process.hrtime.bigint() - this.sentAt;
      const status = this.status;
      this.reset();
      this.onDone(this, latency, status);
    }
  }
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

async function pacedLoad(url: string, rate: number, connectionCount: number, seconds: number): Promise<PacedResult> {
  const target = new URL(url);
  const request = Buffer.from(`GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n\r\n`, 'latin1');
  const planned = Math.round(rate * seconds);
  const latenciesMs = new Float64Array(planned);
  let completed = 0;
  let errors = 0;
  let non2xx = 0;
  let late = 0;
  let sent = 0;
  const idle: PacedConnection[] = [];

  const intervalNs = 1e9 / rate;
  let start = 0n;
  const dueBy = (now: bigint) => Math.min(planned, Math.floor(Number(now - start) / intervalNs) + 1);
  const sendDue = () => {
    const now = process.hrtime.bigint();
    const due = dueBy(now);
    while (sent < due && idle.length > 0) {
      const slot = start + BigInt(Math.round(sent * intervalNs));
      if (now - slot > LATE_NS) late++;
      // Timed from its own write: requests leaving in one batch are written one after another.
      idle.pop()!.send(process.hrtime.bigint());
      sent++;
    }
  };

  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const onDone = (connection: PacedConnection, latencyNs: bigint | undefined, status: number) => {
    if (latencyNs === undefined) errors++;
    else {
      if (status < 200 || status >= 400) non2xx++;
      latenciesMs[completed++] = Number(latencyNs) / 1e6;
    }
    idle.push(connection);
    if (sent >= planned && completed + errors >= planned) finish();
    else sendDue();
  };

  const connections = Array.from({ length: connectionCount }, () => new PacedConnection(target, request, onDone));
  await Promise.all(connections.map((connection) => connection.connect()));
  idle.push(...connections);

  start = process.hrtime.bigint();
  const ticker = setInterval(sendDue, 1);
  const deadline = setTimeout(() => finish(), seconds * 1000 + DRAIN_MS);
  sendDue();
  await finished;
  const elapsedSeconds = Number(process.hrtime.bigint() - start) / 1e9;
  clearInterval(ticker);
  clearTimeout(deadline);
  for (const connection of connections) {
    connection.socket.removeAllListeners('close');
    connection.socket.destroy();
  }

  const sorted = latenciesMs.slice(0, completed).sort();
  const ms = (value: number) => Math.round(value * 1000) / 1000;
  return {
    targetRate: rate,
    requestsPerSec: Math.round(completed / elapsedSeconds),
    requests: completed,
    p50Ms: ms(percentile(sorted, 50)),
    p90Ms: ms(percentile(sorted, 90)),
    p99Ms: ms(percentile(sorted, 99)),
    p999Ms: ms(percentile(sorted, 99.9)),
    maxMs: ms(sorted.length === 0 ? 0 : sorted[sorted.length - 1]!),
    // Requests never answered (deadline reached) count as errors too.
    errors: errors + Math.max(0, sent - completed - errors),
    non2xx,
    lateRequests: late + (planned - sent),
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [url, rate, connections, seconds] = process.argv.slice(2);
  const result = await pacedLoad(url!, Number(rate), Number(connections), Number(seconds));
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
