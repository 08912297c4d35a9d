// The real fleet bench/elastic.ts drives: backends in a process of their own (plain HTTP that names
// itself and echoes the remap notice it was sent, plus a socket.io server on the same port), limpet
// as a process of its own (dist/src/cli.js, as the `limpet` command starts it) whose backend list changes
// by reload, and clients that each have a loopback source address of their own (ip affinity) or a
// cookie jar (cookie affinity) and keep every reply they got.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Server as SocketIoServer } from 'socket.io';
import { io as socketIoClient, type Socket as SocketIoSocket } from 'socket.io-client';
import { benchDir, distRoot, freePort, isSkipped, recordOutput, startChild, startServerTarget, waitForLine } from './harness.js';
import type { BackendView } from '../src/admin/admin-server.js';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';
import { cookiePair, request, waitFor } from '../test/support/client.js';
import { parseExposition } from '../test/support/exposition.js';

/** Longer than limpet's idle pool timeout, so a pooled upstream connection is never closed under it. */
const KEEP_ALIVE_MS = 65_000;

// ---------------------------------------------------------------------------------------------
// Backends

/** A backend of the fleet, b1, b2, …: its id and where it listens. */
export interface FleetBackend {
  readonly id: string;
  readonly origin: string;
}

/**
 * One backend: `GET /health` → 200; any other path → 200 with body and `x-backend` naming it,
 * `x-remapped-from` repeating the request's `X-Limpet-Remapped-From` (empty when none), so a client
 * sees where it landed and whether limpet told the app it had moved, and `x-received-at`, when the
 * request reached it (epoch ms: close to when limpet placed it). socket.io answers `/socket.io/`
 * with an `echo` event acknowledged with the backend's id.
 */
function serveFleetBackend(id: string): Promise<FleetBackend> {
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith('/socket.io/')) return; // engine.io answers these
    req.resume();
    const body = req.url === '/health' ? 'ok\n' : id;
    res.writeHead(200, {
      'content-type': 'text/plain',
      'content-length': String(body.length),
      'x-backend': id,
      'x-remapped-from': String(req.headers['x-limpet-remapped-from'] ?? ''),
      'x-received-at': String(Date.now()),
    });
    res.end(body);
  });
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1_000;
  const io = new SocketIoServer(server);
  io.on('connection', (socket) => {
    socket.on('echo', (_payload: unknown, ack: unknown) => {
      if (typeof ack === 'function') ack(id);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve({ id, origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
  });
}

/** `count` backends named b1, b2, … in this process (bench/elastic-backends.ts runs them). */
export function serveFleetBackends(count: number): Promise<FleetBackend[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => serveFleetBackend(`b${i + 1}`)));
}

/**
 * `count` backends in a process of their own (bench/elastic-backends.ts), so the thousand clients of
 * this process do not slow their answers or their health checks; it ends with this process.
 */
export async function startFleetBackends(count: number): Promise<FleetBackend[]> {
  const child = startChild([process.execPath, path.join(benchDir, 'elastic-backends.js'), String(count)], undefined);
  const output = recordOutput(child);
  try {
    const line = await waitForLine(child, /^\{"backends":.*\}$/m);
    return (JSON.parse(line[0]) as { backends: FleetBackend[] }).backends;
  } catch (error) {
    throw new Error(`fleet backends: ${(error as Error).message}\n${output()}`);
  }
}

// ---------------------------------------------------------------------------------------------
// limpet

/** limpet running from dist/src/cli.js; its backends are rewritten in its config file and reloaded. */
export class LimpetProcess {
  private constructor(
    readonly origin: string,
    readonly port: number,
    private readonly adminPort: number,
    readonly pid: number,
    private readonly configFile: string,
    private readonly settings: readonly string[],
  ) {}

  /** Starts limpet with `settings` (YAML lines after listen, admin and log) over `backends`. */
  static async start(name: string, tmp: string, settings: string[], backends: readonly FleetBackend[]): Promise<LimpetProcess> {
    const [port, adminPort] = [await freePort(), await freePort()];
    const head = [`listen: 127.0.0.1:${port}`, `admin: { listen: "127.0.0.1:${adminPort}" }`, 'log: { level: warn }', ...settings];
    const configFile = path.join(tmp, `${name}.yaml`);
    writeFileSync(configFile, configText(head, backends));
    const argv = [process.execPath, ...RUNTIME_FLAGS, path.join(distRoot, 'src', 'cli.js'), '--config', configFile];
    const origin = `http://127.0.0.1:${port}`;
    const target = await startServerTarget(name, name, argv, undefined, origin);
    if (isSkipped(target)) throw new Error(`limpet (${name}) did not start: ${target.reason}`);
    return new LimpetProcess(origin, port, adminPort, target.serverPid, configFile, head);
  }

  /** Makes `backends` the backend list (file replaced whole, then SIGHUP); resolves once `waitUp` are up. */
  async setBackends(backends: readonly FleetBackend[], waitUp: readonly string[] = []): Promise<void> {
    const staged = `${this.configFile}.next`;
    writeFileSync(staged, configText(this.settings, backends));
    renameSync(staged, this.configFile);
    process.kill(this.pid, 'SIGHUP');
    for (const id of waitUp) await waitFor(async () => (await this.backend(id)).state === 'up', 30_000, `${id} up`);
  }

  async backend(id: string): Promise<BackendView> {
    const res = await request(this.adminPort, { path: `/backends/${id}` });
    if (res.status !== 200) throw new Error(`GET /backends/${id}: ${res.status} ${res.body}`);
    return JSON.parse(res.body) as BackendView;
  }

  async drain(id: string, deadline: string): Promise<BackendView> {
    const res = await request(this.adminPort, { method: 'POST', path: `/backends/${id}/drain?deadline=${deadline}` });
    if (res.status !== 200) throw new Error(`drain ${id}: ${res.status} ${res.body}`);
    return JSON.parse(res.body) as BackendView;
  }

  /** The sum of a metric's samples whose labels include `labels`. */
  async metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    const res = await request(this.adminPort, { path: '/metrics' });
    return parseExposition(res.body)
      .samples.filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
      .reduce((sum, sample) => sum + sample.value, 0);
  }

  /** Active health checks that failed so far: a loaded machine shows here before it shows anywhere else. */
  failedChecks(): Promise<number> {
    return this.metric('limpet_health_checks_total', { result: 'fail' });
  }

  async stop(): Promise<void> {
    process.kill(this.pid, 'SIGTERM');
    await waitFor(() => !alive(this.pid), 15_000, `limpet ${this.pid} to exit`);
  }
}

function configText(head: readonly string[], backends: readonly FleetBackend[]): string {
  return [...head, 'backends:', ...backends.map((backend) => `  - { id: ${backend.id}, url: "${backend.origin}" }`), ''].join('\n');
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// HTTP clients

/** What one request got. */
export interface Reply {
  /** When the request was sent, and when its answer (or the failure) came, epoch ms. */
  sentAt: number;
  at: number;
  /** When the backend received it (epoch ms; `sentAt` without an answer). */
  receivedAt: number;
  /** 0: no response. */
  status: number;
  /** The backend that answered ('' without an answer). */
  backend: string;
  /** The `X-Limpet-Remapped-From` the backend was sent ('' for none). */
  remappedFrom: string;
  setCookie: boolean;
  /** What went wrong: '' for a 200, else the status code or the socket error's code. */
  problem: string;
}

/**
 * One user: its own keep-alive connection from its own source address, its own cookie (when the
 * proxy sets one), one request at a time. A request that fails before any answer on a connection
 * that had carried earlier ones is sent once more on a new connection, as browsers do (the server
 * closed the idle connection as the request left: what a peer's reload does to idle clients).
 */
export class FleetClient {
  readonly replies: Reply[] = [];
  /** Requests sent a second time for that reason. */
  resent = 0;
  private readonly agent: http.Agent;
  private cookie: string | undefined;

  constructor(
    readonly address: string,
    private readonly port: number,
    private readonly cookieName: string | null,
  ) {
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 1, localAddress: address });
  }

  /** The value of the affinity cookie the client holds. */
  get cookieValue(): string | undefined {
    return this.cookie?.slice(this.cookie.indexOf('=') + 1);
  }

  /** The backend of the last answer. */
  get backend(): string | undefined {
    for (let i = this.replies.length - 1; i >= 0; i--) if ((this.replies[i] as Reply).status === 200) return (this.replies[i] as Reply).backend;
    return undefined;
  }

  async send(): Promise<Reply> {
    const sentAt = Date.now();
    let reply = await this.once(sentAt);
    if (reply === 'stale') {
      this.resent++;
      reply = await this.once(sentAt);
    }
    const answered = reply === 'stale' ? failure(sentAt, 'reset on a new connection too') : reply;
    this.replies.push(answered);
    return answered;
  }

  close(): void {
    this.agent.destroy();
  }

  private once(sentAt: number): Promise<Reply | 'stale'> {
    return new Promise((resolve) => {
      const req = http.request(
        { host: '127.0.0.1', port: this.port, path: '/', agent: this.agent, headers: this.cookie === undefined ? {} : { cookie: this.cookie } },
        (res) => {
          res.resume();
          res.on('error', (error: NodeJS.ErrnoException) => resolve(failure(sentAt, error.code ?? error.message)));
          res.on('end', () => {
            const pair = this.cookieName === null ? undefined : cookiePair(res.headers, this.cookieName);
            if (pair !== undefined) this.cookie = pair;
            resolve({
              sentAt,
              at: Date.now(),
              receivedAt: Number(res.headers['x-received-at'] ?? sentAt),
              status: res.statusCode ?? 0,
              backend: String(res.headers['x-backend'] ?? ''),
              remappedFrom: String(res.headers['x-remapped-from'] ?? ''),
              setCookie: pair !== undefined,
              problem: res.statusCode === 200 ? '' : String(res.statusCode),
            });
          });
        },
      );
      req.on('error', (error: NodeJS.ErrnoException) => resolve(req.reusedSocket ? 'stale' : failure(sentAt, error.code ?? error.message)));
      req.end();
    });
  }
}

function failure(sentAt: number, problem: string): Reply {
  return { sentAt, at: Date.now(), receivedAt: sentAt, status: 0, backend: '', remappedFrom: '', setCookie: false, problem };
}

/** Every failed request of the clients, by what went wrong: "0" when none, else e.g. "3 (502: 2, ECONNRESET: 1)". */
export function failures(clients: readonly FleetClient[]): string {
  const kinds = new Map<string, number>();
  for (const client of clients) for (const reply of client.replies) if (reply.problem !== '') kinds.set(reply.problem, (kinds.get(reply.problem) ?? 0) + 1);
  const total = [...kinds.values()].reduce((sum, n) => sum + n, 0);
  return total === 0 ? '0' : `${total} (${[...kinds].map(([kind, n]) => `${kind}: ${n}`).join(', ')})`;
}

/** A change of backend between two answers of one client, and whether the app was told of it. */
export interface Move {
  at: number;
  from: string;
  to: string;
  /** The first answer from `to` carried `X-Limpet-Remapped-From: <from>`. */
  noticed: boolean;
  /**
   * How long the client had been silent before the request that moved it (ms), as the backends saw
   * its requests arrive: close to what limpet saw, even when a loaded machine delays them between
   * the client and the proxy.
   */
  silenceMs: number;
}

export function movesOf(replies: readonly Reply[]): Move[] {
  const moves: Move[] = [];
  let previous: string | undefined;
  let previousReceivedAt = 0;
  for (const reply of replies) {
    if (reply.status !== 200) continue;
    if (previous !== undefined && reply.backend !== previous) {
      moves.push({ at: reply.at, from: previous, to: reply.backend, noticed: reply.remappedFrom === previous, silenceMs: reply.receivedAt - previousReceivedAt });
    }
    previous = reply.backend;
    previousReceivedAt = reply.receivedAt;
  }
  return moves;
}

/** Answers that carried a remap notice though the client had not moved (its first, or same backend as before). */
export function needlessNotices(replies: readonly Reply[]): number {
  let count = 0;
  let previous: string | undefined;
  for (const reply of replies) {
    if (reply.status !== 200) continue;
    if (reply.remappedFrom !== '' && (previous === undefined || reply.backend === previous)) count++;
    previous = reply.backend;
  }
  return count;
}

/** `count` distinct source addresses 127.<block>.x.y (any 127/8 address is local on Linux). */
export function loopbackAddresses(block: number, count: number): string[] {
  return Array.from({ length: count }, (_, i) => `127.${block}.${Math.floor(i / 250)}.${(i % 250) + 1}`);
}

/** Runs `action` for every item with at most `concurrency` at once. */
export async function inBatches<T>(items: readonly T[], concurrency: number, action: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await action(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

/** Starts `action` for the items evenly over `overMs` (the first at once) and waits for all of them. */
export async function spread<T>(items: readonly T[], overMs: number, action: (item: T) => Promise<unknown>): Promise<void> {
  const start = Date.now();
  await Promise.all(
    items.map(async (item, i) => {
      await sleep(Math.max(0, start + (i * overMs) / items.length - Date.now()));
      await action(item);
    }),
  );
}

/**
 * Each client sends a request every `intervalMs` (staggered over the interval, never two at once)
 * until `stop` is called; `stop` resolves when every client's last request is answered.
 */
export function keepActive(clients: readonly FleetClient[], intervalMs: number): { stop(): Promise<void> } {
  let running = true;
  const start = Date.now();
  const loops = clients.map(async (client, i) => {
    let slot = start + (i * intervalMs) / clients.length;
    while (running) {
      await sleep(Math.max(0, slot - Date.now()));
      if (!running) break;
      await client.send();
      slot += intervalMs;
      if (slot < Date.now()) slot = Date.now();
    }
  });
  return {
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// socket.io clients

/**
 * A socket.io client from its own source address that reconnects on its own (socket.io's defaults,
 * with a 200 ms–1 s reconnection delay) and records each connection: when, and on which backend.
 */
export class SocketIoUser {
  readonly connections: { at: number; backend: string }[] = [];
  readonly disconnects: { at: number; reason: string }[] = [];
  private readonly agent: http.Agent;
  private readonly socket: SocketIoSocket;

  constructor(port: number, address: string) {
    this.agent = new http.Agent({ keepAlive: true, localAddress: address });
    this.socket = socketIoClient(`http://127.0.0.1:${port}`, {
      forceNew: true,
      agent: this.agent as unknown as string, // engine.io-client types `agent` as string | boolean; Node takes an http.Agent
      reconnectionDelay: 200,
      reconnectionDelayMax: 1_000,
      timeout: 5_000,
    });
    this.socket.on('connect', () => {
      const at = Date.now();
      void this.socket
        .timeout(5_000)
        .emitWithAck('echo', null)
        .then((backend: string) => this.connections.push({ at, backend }))
        .catch(() => this.connections.push({ at, backend: '' }));
    });
    this.socket.on('disconnect', (reason) => this.disconnects.push({ at: Date.now(), reason }));
  }

  /** Connected over a WebSocket, and its backend known. */
  get settled(): boolean {
    return this.socket.connected && this.socket.io.engine?.transport?.name === 'websocket' && this.connections.length > 0;
  }

  get backend(): string | undefined {
    return this.connections.at(-1)?.backend;
  }

  close(): void {
    this.socket.io.reconnection(false);
    this.socket.disconnect();
    this.agent.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Figures

export function percent(part: number, whole: number): string {
  return whole === 0 ? '—' : `${((100 * part) / whole).toFixed(1)} %`;
}

export function count<T>(items: readonly T[], test: (item: T) => boolean): number {
  let n = 0;
  for (const item of items) if (test(item)) n++;
  return n;
}
