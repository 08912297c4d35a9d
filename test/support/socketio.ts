import { spawn, type ChildProcess } from 'node:child_process';
import { Agent } from 'node:http';
import { createInterface } from 'node:readline';
import { io, type Socket } from 'socket.io-client';
import { parseExposition } from './exposition.js';
import { request, waitFor } from './client.js';

export interface SidStats {
  handshake: boolean;
  /** The handshake's X-Limpet-Remapped-From header, if any. */
  remappedFrom: string | null;
  polling: number;
  websocket: number;
  /** Requests for a session this process did not know: engine.io answered 400 "Session ID unknown". */
  unknown: number;
}

/** A real socket.io server in its own process (test/support/socketio-server.mjs). */
export interface SocketIoBackend {
  readonly id: string;
  readonly port: number;
  readonly url: string;
  readonly child: ChildProcess;
  /** Every engine.io session id this process saw a request for, with what it saw. */
  stats(): Promise<Record<string, SidStats>>;
  /** SIGKILL: the process dies with its sockets, as a crashed app server does. */
  kill(): Promise<void>;
}

const SERVER_SCRIPT = new URL('./socketio-server.mjs', import.meta.url).pathname;

export async function startSocketIoBackend(id: string): Promise<SocketIoBackend> {
  const child = spawn(process.execPath, [SERVER_SCRIPT, id], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines = createInterface({ input: child.stdout! });
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`socket.io server ${id} did not start`)), 10_000);
    child.once('exit', (code) => reject(new Error(`socket.io server ${id} exited with ${code}`)));
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve((JSON.parse(line) as { port: number }).port);
    });
  });
  return {
    id,
    port,
    url: `http://127.0.0.1:${port}`,
    child,
    async stats() {
      const res = await request(port, { path: '/stats' });
      return (JSON.parse(res.body) as { sids: Record<string, SidStats> }).sids;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}

export async function startSocketIoBackends(count: number): Promise<SocketIoBackend[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => startSocketIoBackend(`app-${i + 1}`)));
}

export interface EchoReply {
  id: string;
  transport: string;
  sid: string;
}

/** One socket.io-client with everything that happened to it recorded. */
export interface TestClient {
  readonly index: number;
  readonly socket: Socket;
  readonly connectErrors: string[];
  /** Each disconnect: reason and, for a closed WebSocket, its close code. */
  readonly disconnects: { reason: string; code: number | undefined }[];
  readonly replies: EchoReply[];
  /** Engine.io session ids this client has had (one per (re)connection). */
  readonly sessions: string[];
  connects: number;
  /** Sends an `echo` and waits for the server's acknowledgement (which names the server). */
  echo(timeoutMs?: number): Promise<EchoReply>;
  transport(): string | undefined;
  close(): void;
}

export interface ClientOptions {
  /**
   * Cookie mode: engine.io-client ≥ 6.6 keeps a cookie jar in Node when `withCredentials: true`, and
   * sends its cookies on every polling request and on the WebSocket upgrade. Without it (or with an
   * older client) the affinity cookie from the handshake is dropped.
   */
  withCredentials: boolean;
  /** Source address for ip mode (any 127.x.y.z). */
  localAddress?: string;
  reconnection?: boolean;
}

export function connectClient(port: number, index: number, options: ClientOptions): TestClient {
  // A keep-alive agent per client, as a browser has: later requests reuse its connections, so
  // stickiness must hold per request, not per connection.
  const agent = new Agent({ keepAlive: true, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
  const socket = io(`http://127.0.0.1:${port}`, {
    forceNew: true,
    withCredentials: options.withCredentials,
    agent: agent as unknown as string, // engine.io-client types `agent` as string | boolean; Node takes an http.Agent
    reconnection: options.reconnection ?? true,
    reconnectionDelay: 200,
    reconnectionDelayMax: 1_000,
    timeout: 5_000,
  });
  const client: TestClient = {
    index,
    socket,
    connectErrors: [],
    disconnects: [],
    replies: [],
    sessions: [],
    connects: 0,
    async echo(timeoutMs = 5_000) {
      const reply = (await socket.timeout(timeoutMs).emitWithAck('echo', index)) as EchoReply;
      client.replies.push(reply);
      return reply;
    },
    transport: () => socket.io.engine?.transport?.name,
    close() {
      socket.io.reconnection(false);
      socket.disconnect();
      agent.destroy();
    },
  };
  socket.on('connect', () => {
    client.connects++;
    client.sessions.push(socket.io.engine.id);
  });
  socket.on('connect_error', (error) => client.connectErrors.push(error.message));
  socket.on('disconnect', (reason, description) => {
    const context = (description as { context?: { code?: number } } | undefined)?.context;
    client.disconnects.push({ reason, code: typeof context?.code === 'number' ? context.code : undefined });
  });
  return client;
}

/** The source address of client `i` in ip mode: distinct, spread over several /24s. */
export function clientAddress(i: number): string {
  return `127.${10 + (i % 3)}.${Math.floor(i / 3) % 250}.${(i % 200) + 2}`;
}

/** Outcome of one client's session: connect on polling, echo, upgrade, echo on the WebSocket. */
export interface SessionOutcome {
  client: TestClient;
  ok: boolean;
  failure: string | null;
}

/**
 * Drives a client through a whole session and stops at its first failure (a connect error, a
 * disconnect or an echo timeout), so a non-sticky path shows up as failures rather than as a hang.
 */
export async function runSession(client: TestClient, timeoutMs = 8_000): Promise<SessionOutcome> {
  const { socket } = client;
  const failed = new Promise<string>((resolve) => {
    socket.once('connect_error', (error) => resolve(`connect_error: ${error.message}`));
    socket.once('disconnect', (reason) => resolve(`disconnect: ${reason}`));
  });
  const steps = (async () => {
    await waitFor(() => socket.connected, timeoutMs, 'connect');
    await client.echo();
    await waitFor(() => client.transport() === 'websocket', timeoutMs, 'upgrade to websocket');
    await client.echo();
    await client.echo();
    return null;
  })().catch((error: Error) => `step failed: ${error.message}`);
  const failure = await Promise.race([steps, failed]);
  return { client, ok: failure === null, failure };
}

/** For each client session id: which backends saw any request (polling or upgrade) for it. */
export async function sessionsByBackend(backends: readonly SocketIoBackend[]): Promise<Map<string, ({ backend: string } & SidStats)[]>> {
  const seen = new Map<string, ({ backend: string } & SidStats)[]>();
  for (const backend of backends) {
    if (backend.child.exitCode !== null || backend.child.signalCode !== null) continue;
    for (const [sid, entry] of Object.entries(await backend.stats())) {
      const list = seen.get(sid) ?? [];
      list.push({ backend: backend.id, ...entry });
      seen.set(sid, list);
    }
  }
  return seen;
}

/** `limpet_websocket_connections{backend}` from the admin endpoint, by backend id. */
export async function websocketGauge(adminPort: number): Promise<Map<string, number>> {
  const res = await request(adminPort, { path: '/metrics' });
  const values = new Map<string, number>();
  for (const sample of parseExposition(res.body).samples) {
    if (sample.name === 'limpet_websocket_connections' && sample.labels.backend !== undefined) values.set(sample.labels.backend, sample.value);
  }
  return values;
}

/** How many clients are on the WebSocket transport, per backend, by their latest echo. */
export function countByBackend(clients: readonly TestClient[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const client of clients) {
    const last = client.replies.at(-1);
    if (last === undefined || !client.socket.connected) continue;
    counts.set(last.id, (counts.get(last.id) ?? 0) + 1);
  }
  return counts;
}
