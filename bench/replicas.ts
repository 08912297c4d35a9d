// Replicas as one: two proxy replicas in front of the same three backends, and what 400 address
// clients get through both in turn as a backend is killed and heals, as one replica drains a backend
// through its runtime API while new clients arrive at the other, and as that replica restarts:
// limpet sharing its state in Redis, limpet without it, and two HAProxy (consistent source hash,
// with and without a stick table) and two nginx instances for contrast. 150 more clients go through
// A alone while the backend is down, as a balancer in front may send them. Then Redis is stopped for
// 10 s under load through both limpet replicas (killed and started again empty, and frozen with
// SIGSTOP): what clients got, what each replica logged and showed, how long until both were in sync.
//
//   npm run bench:replicas        # = npm run build && node dist/bench/replicas.js  (2-3 minutes)
//
// Every proxy is a real process (limpet from dist/ with `affinity: { by: ip, onRecovery: stay }`,
// nginx, HAProxy), every backend too (so one can be killed, SIGKILL, and started again on its port),
// and redis-server runs on a free port without persistence. Clients are distinct source addresses
// (127.20.x.y, new ones 127.21.x.y), one new connection per request. A peer that is not installed is
// reported as skipped. Results: bench/results/replicas-latest.{md,json}. Environment:
// REPLICAS_CLIENTS (400), REPLICAS_OUTAGE_SECONDS (10), REPLICAS_ONLY (names to run, comma-separated:
// limpet-shared, limpet-alone, haproxy-hash, haproxy-stick, nginx-hash, outage).
import { type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createClient } from 'redis';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';
import {
  describeMachine,
  distRoot,
  findExecutable,
  freePort,
  intFromEnv,
  isSkipped,
  startBackends,
  startChild,
  stopChildren,
  waitForLine,
  waitUntilServing,
  writeResult,
  type Backends,
} from './harness.js';
import { startHaproxy, startNginx, type PeerStart, type PeerTuning } from './peers.js';
import { pause } from './raw-http.js';

const CLIENTS = intFromEnv('REPLICAS_CLIENTS', 400);
const OUTAGE_SECONDS = intFromEnv('REPLICAS_OUTAGE_SECONDS', 10);
const ONLY = process.env.REPLICAS_ONLY?.split(',').map((name) => name.trim()).filter((name) => name !== '');
/** Requests in flight at once during a pass over the clients. */
const CONCURRENCY = 16;
/** How long new clients are sent through the other replica after a drain. */
const DRAIN_WATCH_MS = 2_000;
const VICTIM = 'b1';
const DRAINED = 'b2';
const cli = path.join(distRoot, 'src', 'cli.js');

/** Client i's source address: 127.<block>.x.y, any of which is local on Linux. */
const address = (block: number, i: number) => `127.${block}.${Math.floor(i / 250)}.${(i % 250) + 1}`;
const clients = Array.from({ length: CLIENTS }, (_, i) => address(20, i));
/** Clients that reach only replica A while a backend is down (their balancer's choice), both replicas before and after. */
const oneSided = Array.from({ length: 150 }, (_, i) => address(19, i));
/** Addresses never used before, handed out in turn: new clients (127.21.x.y on). */
let nextNewClient = 0;
const newClient = () => address(21 + Math.floor(nextNewClient / 60_000), nextNewClient++ % 60_000);

// ---------------------------------------------------------------------------------------------
// Clients

/** Which backend answered `GET /id` from `source` on a new connection; anything else is a failure ("502", "error"). */
function backendVia(origin: string, source: string): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get(`${origin}/id`, { agent: false, localAddress: source, timeout: 5_000 }, (res) => {
      let body = '';
      res.setEncoding('latin1');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(res.statusCode === 200 ? body : String(res.statusCode)));
      res.on('error', () => resolve('error'));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve('error'));
  });
}

const isBackend = (answer: string) => /^b\d+$/.test(answer);

async function forEachAtOnce<T>(items: readonly T[], limit: number, work: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      await work(items[index]!, index);
    }
  }));
}

/** What each client got through replica A and through replica B. */
type Answers = Map<string, [viaA: string, viaB: string]>;

/** Every client once through each replica, alternating which goes first. */
async function pass(pair: ReplicaPair, who: readonly string[] = clients): Promise<Answers> {
  const answers: Answers = new Map();
  await forEachAtOnce(who, CONCURRENCY, async (client, i) => {
    const [a, b] = pair.replicas;
    if (i % 2 === 0) {
      const viaA = await backendVia(a.origin, client);
      answers.set(client, [viaA, await backendVia(b.origin, client)]);
    } else {
      const viaB = await backendVia(b.origin, client);
      answers.set(client, [await backendVia(a.origin, client), viaB]);
    }
  });
  return answers;
}

/** A count out of a total, printed as "12/130 (9 %)". */
interface Share {
  count: number;
  of: number;
}

function share<T>(items: Iterable<T>, test: (item: T) => boolean): Share {
  let count = 0;
  let of = 0;
  for (const item of items) {
    of++;
    if (test(item)) count++;
  }
  return { count, of };
}

function fmtShare(s: Share | null): string {
  if (s === null) return '—';
  if (s.of === 0) return '0/0';
  const percent = (100 * s.count) / s.of;
  // A few out of many is not "0 %".
  return `${s.count}/${s.of} (${s.count > 0 && percent < 1 ? percent.toFixed(1) : Math.round(percent)} %)`;
}

function failures(answers: Answers): number {
  let failed = 0;
  for (const pair of answers.values()) for (const answer of pair) if (!isBackend(answer)) failed++;
  return failed;
}

async function waitFor(what: string, condition: () => Promise<boolean>, timeoutMs = 20_000): Promise<number> {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > timeoutMs) throw new Error(`${what}: not within ${timeoutMs / 1000} s`);
    await pause(50);
  }
  return Date.now() - started;
}

// ---------------------------------------------------------------------------------------------
// Backends, one process each, so one can be killed and started again where it was

class BackendProcess {
  private constructor(
    readonly id: string,
    private process: Backends,
  ) {}

  static async start(n: number, port?: number): Promise<BackendProcess> {
    const args = [`--first-id=${n}`, ...(port === undefined ? [] : [`--ports=${port}`])];
    return new BackendProcess(`b${n}`, await startBackends(1, args));
  }

  get origin(): string {
    return this.process.origins[0]!;
  }

  kill(): void {
    try {
      process.kill(this.process.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  async restart(): Promise<void> {
    const port = Number(new URL(this.origin).port);
    this.process = (await BackendProcess.start(Number(this.id.slice(1)), port)).process;
  }
}

const asBackends = (backends: readonly BackendProcess[]): Backends => ({ pid: 0, origins: backends.map((b) => b.origin) });

// ---------------------------------------------------------------------------------------------
// Replica pairs

interface Replica {
  readonly name: 'A' | 'B';
  origin: string;
}

type BackendState = 'up' | 'down' | 'draining';

/** Two instances of one proxy over the same backends, with what the benchmark needs to drive them. */
interface ReplicaPair<R extends Replica = Replica> {
  readonly name: string;
  readonly replicas: [R, R];
  /** A backend's state as one replica shows it; null where the proxy shows nothing (nginx). */
  state(replica: R, id: string): Promise<BackendState | null>;
  /** Drains a backend through one replica's runtime API; false where there is none. */
  drain(replica: R, id: string): Promise<boolean>;
  restart(replica: R): Promise<void>;
  stop(): Promise<void>;
  /** A peer's generated config, for the report. */
  readonly config?: string;
}

/** Signals a child (when there is one) and resolves once it has exited. */
function stopChild(child: ChildProcess | null, signal: NodeJS.Signals): Promise<void> {
  if (child === null || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  return exited;
}

async function stopPid(pid: number): Promise<void> {
  process.kill(pid, 'SIGTERM');
  await waitFor(`process ${pid} to exit`, async () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  });
}

/** One line of a limpet replica's log, its time in epoch ms. */
interface LogLine {
  msg: string;
  at: number;
  [field: string]: unknown;
}

/** A limpet process with a config of its own, on ports that stay across restarts; its log lines are kept. */
class LimpetReplica implements Replica {
  readonly origin: string;
  readonly logs: LogLine[] = [];
  private child: ChildProcess | null = null;

  constructor(
    readonly name: 'A' | 'B',
    private readonly configFile: string,
    /** Its YAML, for the report. */
    readonly config: string,
    port: number,
    readonly adminPort: number,
  ) {
    this.origin = `http://127.0.0.1:${port}`;
  }

  static async create(name: 'A' | 'B', tmp: string, backends: readonly BackendProcess[], extraYaml: string[]): Promise<LimpetReplica> {
    const [port, adminPort] = [await freePort(), await freePort()];
    const configFile = path.join(tmp, `limpet-${name}.yaml`);
    const config = [
      `listen: 127.0.0.1:${port}`,
      `admin: { listen: "127.0.0.1:${adminPort}" }`,
      'log: { level: info }',
      'affinity: { by: ip, onRecovery: stay }',
      'healthCheck: { interval: 500ms, timeout: 1s, rise: 2, fall: 2 }',
      ...extraYaml,
      'backends:',
      ...backends.map((backend) => `  - { id: ${backend.id}, url: "${backend.origin}" }`),
      '',
    ].join('\n');
    writeFileSync(configFile, config);
    const replica = new LimpetReplica(name, configFile, config, port, adminPort);
    await replica.start();
    return replica;
  }

  async start(): Promise<void> {
    // Started as the limpet command starts it: with its runtime flags.
    const child = startChild([process.execPath, ...RUNTIME_FLAGS, cli, '--config', this.configFile], undefined);
    this.child = child;
    let partial = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      const lines = (partial + chunk.toString('utf8')).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        try {
          const entry = JSON.parse(line) as { msg: string; time: string };
          this.logs.push({ ...entry, at: Date.parse(entry.time) });
        } catch {
          // not a log line
        }
      }
    });
    await waitUntilServing(child, `${this.origin}/`);
  }

  async stop(): Promise<void> {
    await stopChild(this.child, 'SIGTERM');
    this.child = null;
  }

  admin(pathname: string, method = 'GET'): Promise<{ status: number; body: string }> {
    return new Promise((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port: this.adminPort, path: pathname, method, agent: false, timeout: 5_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('timeout', () => req.destroy(new Error(`admin ${pathname}: no answer within 5 s`)));
      req.on('error', reject);
      req.end();
    });
  }

  async metric(name: string): Promise<number | null> {
    const { body } = await this.admin('/metrics');
    const found = new RegExp(`^${name} (\\S+)$`, 'm').exec(body);
    return found === null ? null : Number(found[1]);
  }

  said(msg: string): LogLine[] {
    return this.logs.filter((line) => line.msg === msg);
  }
}

function limpetPair(name: string, replicas: [LimpetReplica, LimpetReplica]): ReplicaPair<LimpetReplica> {
  return {
    name,
    replicas,
    config: replicas[0].config,
    async state(replica, id) {
      const { body } = await replica.admin('/backends');
      return (JSON.parse(body) as { id: string; state: BackendState }[]).find((backend) => backend.id === id)?.state ?? null;
    },
    async drain(replica, id) {
      const { status } = await replica.admin(`/backends/${id}/drain`, 'POST');
      if (status !== 200) throw new Error(`drain ${id} through ${replica.name}: ${status}`);
      return true;
    },
    async restart(replica) {
      await replica.stop();
      await replica.start();
    },
    async stop() {
      await Promise.all(replicas.map((replica) => replica.stop()));
    },
  };
}

/** A peer instance (nginx, HAProxy) as bench/peers.ts starts it; a restart starts a new one with the same config (its port changes). */
class PeerReplica implements Replica {
  origin = '';
  pid = 0;
  config = '';

  constructor(
    readonly name: 'A' | 'B',
    private readonly launch: () => Promise<PeerStart>,
  ) {}

  /** Null when it started; else why it could not. */
  async start(): Promise<string | null> {
    const started = await this.launch();
    if (isSkipped(started.prepared)) return started.prepared.reason;
    this.origin = started.prepared.origin;
    this.pid = started.prepared.proxyPid!;
    this.config = started.config ?? '';
    return null;
  }

  async stop(): Promise<void> {
    if (this.pid !== 0) await stopPid(this.pid);
    this.pid = 0;
  }
}

/** One command on HAProxy's stats socket (it answers and closes). */
function haproxyCommand(socketPath: string, command: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (text += chunk));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
    socket.write(`${command}\n`);
  });
}

async function haproxyState(socketPath: string, id: string): Promise<BackendState> {
  const [header, ...rows] = (await haproxyCommand(socketPath, 'show stat')).trim().split('\n');
  const columns = header!.replace(/^# /, '').split(',');
  const server = rows.map((row) => row.split(',')).find((cells) => cells[columns.indexOf('pxname')] === 'backends' && cells[columns.indexOf('svname')] === id);
  const status = server?.[columns.indexOf('status')] ?? '';
  return status.startsWith('DRAIN') ? 'draining' : status.startsWith('UP') ? 'up' : 'down';
}

async function peerPair(
  name: string,
  start: (replica: 'A' | 'B', tuning: PeerTuning) => Promise<PeerStart>,
  tuning: PeerTuning,
  socketFor: ((replica: 'A' | 'B') => string) | null,
): Promise<ReplicaPair<PeerReplica> | string> {
  const replicas = (['A', 'B'] as const).map((replicaName) => {
    const extra = socketFor === null ? [] : [`stats socket ${socketFor(replicaName)} mode 600 level admin`];
    return new PeerReplica(replicaName, () => start(replicaName, { ...tuning, global: [...(tuning.global ?? []), ...extra] }));
  }) as [PeerReplica, PeerReplica];
  for (const replica of replicas) {
    const reason = await replica.start();
    if (reason !== null) {
      await Promise.all(replicas.map((r) => r.stop()));
      return reason;
    }
  }
  return {
    name,
    replicas,
    config: replicas[0].config,
    async state(replica, id) {
      return socketFor === null ? null : haproxyState(socketFor(replica.name), id);
    },
    async drain(replica, id) {
      if (socketFor === null) return false;
      await haproxyCommand(socketFor(replica.name), `set server backends/${id} state drain`);
      return true;
    },
    async restart(replica) {
      await replica.stop();
      const reason = await replica.start();
      if (reason !== null) throw new Error(`${name} ${replica.name} did not start again: ${reason}`);
    },
    async stop() {
      await Promise.all(replicas.map((replica) => replica.stop()));
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Redis

class RedisServer {
  private child: ChildProcess | null = null;

  private constructor(
    private readonly binary: string,
    readonly port: number,
    private readonly dir: string,
  ) {}

  static async start(tmp: string): Promise<RedisServer> {
    const binary = findExecutable('redis-server');
    if (binary === undefined) throw new Error('redis-server not found (Debian: apt-get install redis-server)');
    const server = new RedisServer(binary, await freePort(), tmp);
    await server.start();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number {
    return this.child?.pid ?? 0;
  }

  /** Starts it on its port, empty (no persistence); resolves once it accepts connections. */
  async start(): Promise<void> {
    const child = startChild([this.binary, '--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir], undefined);
    this.child = child;
    await waitForLine(child, /Ready to accept connections/);
  }

  async kill(): Promise<void> {
    await stopChild(this.child, 'SIGKILL');
    this.child = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Part 1: two replicas, 400 clients, every event

interface PairFigures {
  name: string;
  skipped?: string;
  steadySame?: Share;
  victimClients?: number;
  killSameSurvivor?: Share;
  killOthersStayed?: Share;
  recoveryReturnedViaA?: Share;
  recoveryReturnedViaB?: Share;
  recoveryOneSidedReturnedViaB?: Share;
  /** ms until the other replica showed the drain; null when it never did, undefined where no drain could be made. */
  drainSeenByOtherMs?: number | null;
  /** New clients sent through A within 1 s of the drain call that went to the drained backend; and of those, the ones sent before A showed the drain. */
  drainNewFirstSecond?: Share;
  drainNewBeforeSeen?: Share;
  drainNewAfter?: Share;
  drainKeptViaA?: Share;
  drainKeptViaB?: Share;
  restartReturnedViaRestarted?: Share;
  restartReturnedViaOther?: Share;
  restartSame?: Share;
  restartDrainKept?: boolean | null;
  restartNewOnDrained?: Share;
  failedRequests?: number;
  notes: string[];
}

/** Both replicas show the backend in `state` (true at once for a proxy that shows nothing). */
async function bothShow(pair: ReplicaPair, id: string, state: BackendState): Promise<boolean> {
  for (const replica of pair.replicas) {
    const shown = await pair.state(replica, id);
    if (shown !== null && shown !== state) return false;
  }
  return true;
}

async function runPair(pair: ReplicaPair, backends: BackendProcess[], log: (line: string) => void): Promise<PairFigures> {
  const figures: PairFigures = { name: pair.name, notes: [] };
  const [a, b] = pair.replicas;
  let failed = 0;
  const victim = backends.find((backend) => backend.id === VICTIM)!;

  // Steady state.
  const steady = await pass(pair);
  failed += failures(steady);
  figures.steadySame = share(steady.values(), ([viaA, viaB]) => isBackend(viaA) && viaA === viaB);
  const home = new Map([...steady].map(([client, [viaA]]) => [client, viaA]));
  const oneSidedSteady = await pass(pair, oneSided);
  failed += failures(oneSidedSteady);
  log(`steady: same backend via A and B ${fmtShare(figures.steadySame)}`);

  // A backend dies.
  victim.kill();
  await waitFor(`${VICTIM} down on both`, () => bothShow(pair, VICTIM, 'down'));
  const afterKill = await pass(pair);
  failed += failures(afterKill);
  await forEachAtOnce(oneSided, CONCURRENCY, async (client) => {
    if (!isBackend(await backendVia(a.origin, client))) failed++;
  });
  const victimClients = clients.filter((client) => home.get(client) === VICTIM);
  const others = clients.filter((client) => home.get(client) !== VICTIM);
  figures.victimClients = victimClients.length;
  figures.killSameSurvivor = share(victimClients, (client) => {
    const [viaA, viaB] = afterKill.get(client)!;
    return isBackend(viaA) && viaA !== VICTIM && viaA === viaB;
  });
  figures.killOthersStayed = share(others, (client) => afterKill.get(client)!.every((answer) => answer === home.get(client)));
  log(`${VICTIM} killed: its ${victimClients.length} clients on the same survivor via both ${fmtShare(figures.killSameSurvivor)}, others stayed ${fmtShare(figures.killOthersStayed)}`);

  // It heals.
  await victim.restart();
  if ((await pair.state(a, VICTIM)) === null) {
    // No view of the backend's state (nginx): it is back in use once a client whose home it is reaches it through each replica.
    for (const replica of pair.replicas) {
      await waitFor(`${VICTIM} back in use through ${replica.name}`, async () => (await backendVia(replica.origin, victimClients[0]!)) === VICTIM);
    }
  } else {
    await waitFor(`${VICTIM} up on both`, () => bothShow(pair, VICTIM, 'up'));
  }
  const afterRecovery = await pass(pair);
  failed += failures(afterRecovery);
  figures.recoveryReturnedViaA = share(victimClients, (client) => afterRecovery.get(client)![0] === VICTIM);
  figures.recoveryReturnedViaB = share(victimClients, (client) => afterRecovery.get(client)![1] === VICTIM);
  const oneSidedRecovery = await pass(pair, oneSided);
  failed += failures(oneSidedRecovery);
  figures.recoveryOneSidedReturnedViaB = share(
    oneSided.filter((client) => oneSidedSteady.get(client)![0] === VICTIM),
    (client) => oneSidedRecovery.get(client)![1] === VICTIM,
  );
  log(
    `${VICTIM} back: its former clients returned to it via A ${fmtShare(figures.recoveryReturnedViaA)}, via B ${fmtShare(figures.recoveryReturnedViaB)}; ` +
      `those only A carried while it was down, via B ${fmtShare(figures.recoveryOneSidedReturnedViaB)}`,
  );
  const current = new Map([...afterRecovery].map(([client, [viaA]]) => [client, viaA]));

  // A drain made through B's runtime API; new clients keep arriving through A.
  const drained = await pair.drain(b, DRAINED);
  if (!drained) {
    figures.notes.push(`${pair.name}: no runtime drain (no runtime API); a drain is a config edit and reload on every instance`);
    log('drain: no runtime API');
  } else {
    const drainedAt = Date.now();
    /** New clients through A, by when each was sent (ms after the drain call returned). */
    const arrivals: { sentAt: number; answer: string }[] = [];
    const watchNewClients = Promise.all(Array.from({ length: 4 }, async () => {
      for (let sentAt = Date.now() - drainedAt; sentAt < DRAIN_WATCH_MS; sentAt = Date.now() - drainedAt) {
        arrivals.push({ sentAt, answer: await backendVia(a.origin, newClient()) });
      }
    }));
    let seenMs: number | null = null;
    while (Date.now() - drainedAt < DRAIN_WATCH_MS) {
      if ((await pair.state(a, DRAINED)) === 'draining') {
        seenMs = Date.now() - drainedAt;
        break;
      }
      await pause(10);
    }
    await watchNewClients;
    figures.drainSeenByOtherMs = seenMs;
    failed += arrivals.filter(({ answer }) => !isBackend(answer)).length;
    const onDrained = ({ answer }: { answer: string }) => answer === DRAINED;
    figures.drainNewFirstSecond = share(arrivals.filter(({ sentAt }) => sentAt < 1_000), onDrained);
    if (seenMs !== null) figures.drainNewBeforeSeen = share(arrivals.filter(({ sentAt }) => sentAt < seenMs), onDrained);
    figures.drainNewAfter = share(arrivals.filter(({ sentAt }) => sentAt >= 1_000), onDrained);
    const duringDrain = await pass(pair);
    failed += failures(duringDrain);
    const drainedClients = clients.filter((client) => current.get(client) === DRAINED);
    figures.drainKeptViaA = share(drainedClients, (client) => duringDrain.get(client)![0] === DRAINED);
    figures.drainKeptViaB = share(drainedClients, (client) => duringDrain.get(client)![1] === DRAINED);
    log(
      `${DRAINED} drained through B: A showed it after ${seenMs ?? 'never'} ms; new clients through A on ${DRAINED}: ` +
        `${fmtShare(figures.drainNewFirstSecond)} in the first second (${fmtShare(figures.drainNewBeforeSeen ?? null)} before A showed it), ${fmtShare(figures.drainNewAfter)} after; ` +
        `its clients kept via A ${fmtShare(figures.drainKeptViaA)}, via B ${fmtShare(figures.drainKeptViaB)}`,
    );
  }

  // B restarts.
  await pair.restart(b);
  const afterRestart = await pass(pair);
  failed += failures(afterRestart);
  figures.restartReturnedViaRestarted = share(victimClients, (client) => afterRestart.get(client)![1] === VICTIM);
  figures.restartReturnedViaOther = share(victimClients, (client) => afterRestart.get(client)![0] === VICTIM);
  figures.restartSame = share(afterRestart.values(), ([viaA, viaB]) => isBackend(viaA) && viaA === viaB);
  if (drained) {
    const shown = await pair.state(b, DRAINED);
    figures.restartDrainKept = shown === null ? null : shown === 'draining';
    const arrivals: string[] = [];
    await forEachAtOnce(Array.from({ length: 100 }), 4, async () => void arrivals.push(await backendVia(b.origin, newClient())));
    failed += arrivals.filter((answer) => !isBackend(answer)).length;
    figures.restartNewOnDrained = share(arrivals, (answer) => answer === DRAINED);
  }
  log(
    `B restarted: former ${VICTIM} clients back on it via B ${fmtShare(figures.restartReturnedViaRestarted)}, via A ${fmtShare(figures.restartReturnedViaOther)}; ` +
      `same backend via both ${fmtShare(figures.restartSame)}` +
      (drained ? `; drain kept on B: ${figures.restartDrainKept}; new clients through B on ${DRAINED} ${fmtShare(figures.restartNewOnDrained ?? null)}` : ''),
  );
  figures.failedRequests = failed;
  return figures;
}

interface PairSpec {
  name: string;
  description: string;
  start(tmp: string, backends: BackendProcess[]): Promise<ReplicaPair | string>;
}

/** Two limpet replicas sharing their state through a Redis of their own; stopping the pair stops it too. */
async function sharedLimpetPair(name: string, tmp: string, backends: readonly BackendProcess[]): Promise<ReplicaPair<LimpetReplica> & { redis: RedisServer }> {
  const redis = await RedisServer.start(tmp);
  const yaml = [`sharedState: { redis: "${redis.url}" }`];
  const pair = limpetPair(name, [await LimpetReplica.create('A', tmp, backends, yaml), await LimpetReplica.create('B', tmp, backends, yaml)]);
  return {
    ...pair,
    redis,
    async stop() {
      await pair.stop();
      await redis.kill();
    },
  };
}

/** Checks as limpet's: every 500 ms, 1 s to answer, down after 2 failures, up after 2 passes. */
const HAPROXY_TUNING = { server: 'check inter 500 fall 2 rise 2', backend: ['timeout check 1s'] } satisfies PeerTuning;

const pairs: PairSpec[] = [
  {
    name: 'limpet-shared',
    description: 'limpet × 2, `sharedState` in one Redis',
    start: (tmp, backends) => sharedLimpetPair('limpet-shared', tmp, backends),
  },
  {
    name: 'limpet-alone',
    description: 'limpet × 2, no `sharedState`',
    async start(tmp, backends) {
      return limpetPair('limpet-alone', [await LimpetReplica.create('A', tmp, backends, []), await LimpetReplica.create('B', tmp, backends, [])]);
    },
  },
  {
    name: 'haproxy-hash',
    description: 'HAProxy 2.6 × 2, `balance source` + `hash-type consistent`',
    start: (tmp, backends) =>
      peerPair('haproxy-hash', (r, tuning) => startHaproxy(`haproxy-hash-${r}`, 'HAProxy', asBackends(backends), tmp, 'source', 1, undefined, undefined, tuning), HAPROXY_TUNING, (r) => path.join(tmp, `haproxy-hash-${r}.sock`)),
  },
  {
    name: 'haproxy-stick',
    description: 'HAProxy 2.6 × 2, the same plus a stick table (`stick on src`), no `peers`',
    start: (tmp, backends) =>
      peerPair(
        'haproxy-stick',
        (r, tuning) => startHaproxy(`haproxy-stick-${r}`, 'HAProxy', asBackends(backends), tmp, 'source', 1, undefined, undefined, tuning),
        { ...HAPROXY_TUNING, backend: [...HAPROXY_TUNING.backend, 'stick-table type ip size 100k expire 30m', 'stick on src'] },
        (r) => path.join(tmp, `haproxy-stick-${r}.sock`),
      ),
  },
  {
    name: 'nginx-hash',
    description: 'nginx 1.22 × 2, `hash $remote_addr consistent`',
    start: (tmp, backends) =>
      peerPair('nginx-hash', (r, tuning) => startNginx(`nginx-${r}`, 'nginx', asBackends(backends), tmp, '1', undefined, undefined, tuning), { server: 'max_fails=1 fail_timeout=1s' }, null),
  },
];

// ---------------------------------------------------------------------------------------------
// Part 2: Redis stopped under load

interface OutageFigures {
  how: string;
  requests: number;
  /** Failed requests by what they got (status code, "error"). */
  failed: Record<string, number>;
  /** Requests that reached another backend than their client's. */
  elsewhere: number;
  newClientsDuringOutage: number;
  replicas: {
    name: string;
    downLines: number;
    /** ms from the outage's start to the replica's outage line. */
    downAfterMs: number | null;
    backLines: number;
    /** ms from Redis being back to the replica's synced line, and that line's own figures. */
    syncedAfterMs: number | null;
    resyncMs: number | null;
    outageMs: number | null;
    pinsTaken: number | null;
    /** ms from Redis being back until limpet_shared_state_up read 1 (polled every 100 ms). */
    gaugeUpAfterMs: number | null;
    outagesTotal: number | null;
    /** Backends this replica marked down or ejected meanwhile: a machine too busy for the health checks. */
    backendsDown: number;
  }[];
  pinsInRedisAfter: number;
  newClientsInRedisAfter: number;
}

async function outageRun(how: 'killed' | 'frozen', tmp: string): Promise<OutageFigures> {
  const backends = await Promise.all([1, 2, 3].map((n) => BackendProcess.start(n)));
  const pair = await sharedLimpetPair(`outage-${how}`, tmp, backends);
  const { redis, replicas } = pair;
  // The benchmark's own look into Redis (it reconnects by itself after the outage).
  const look = createClient({ url: redis.url });
  look.on('error', () => {});
  await look.connect();
  try {
    const steady = await pass(pair);
    const home = new Map([...steady].map(([client, [viaA]]) => [client, viaA]));
    await waitFor('the pins written to Redis', async () => (await look.dbSize()) >= CLIENTS);

    // Load through both replicas, every client in turn.
    let running = true;
    let requests = 0;
    const failed = new Map<string, number>();
    const count = (answer: string) => {
      requests++;
      if (!isBackend(answer)) failed.set(answer, (failed.get(answer) ?? 0) + 1);
      return isBackend(answer);
    };
    let elsewhere = 0;
    let turn = 0;
    const load = Promise.all(Array.from({ length: 8 }, async () => {
      while (running) {
        const i = turn++;
        const client = clients[i % clients.length]!;
        const answer = await backendVia(replicas[i % 2]!.origin, client);
        if (count(answer) && answer !== home.get(client)) elsewhere++;
      }
    }));
    const gauges = new Map<LimpetReplica, { at: number; up: number | null }[]>(replicas.map((r) => [r, []]));
    const polling = (async () => {
      while (running) {
        for (const replica of replicas) gauges.get(replica)!.push({ at: Date.now(), up: await replica.metric('limpet_shared_state_up') });
        await pause(100);
      }
    })();

    await pause(2_000);
    const downAt = Date.now();
    const redisPid = redis.pid;
    if (how === 'killed') await redis.kill();
    else process.kill(redisPid, 'SIGSTOP');
    // New clients meet a replica while Redis is away: their pins wait to be written.
    await pause(2_000);
    const fresh = Array.from({ length: 100 }, () => newClient());
    await forEachAtOnce(fresh, 4, async (client, i) => void count(await backendVia(replicas[i % 2]!.origin, client)));
    await pause(Math.max(0, downAt + OUTAGE_SECONDS * 1000 - Date.now()));
    if (how === 'killed') await redis.start();
    else process.kill(redisPid, 'SIGCONT');
    const backAt = Date.now();
    await waitFor('both replicas synced', async () => replicas.every((replica) => replica.said('shared state reachable again; synced').length > 0), 30_000);
    await pause(2_000);
    running = false;
    await Promise.all([load, polling]);

    const figures: OutageFigures = {
      how: how === 'killed' ? `killed (SIGKILL) and started again empty after ${OUTAGE_SECONDS} s` : `frozen (SIGSTOP) for ${OUTAGE_SECONDS} s, then SIGCONT`,
      requests,
      failed: Object.fromEntries(failed),
      elsewhere,
      newClientsDuringOutage: fresh.length,
      replicas: [],
      pinsInRedisAfter: (await look.keys('limpet:pin:*')).length,
      newClientsInRedisAfter: await look.exists(fresh.map((client) => `limpet:pin:${client}`)),
    };
    for (const replica of replicas) {
      const down = replica.said('shared state unreachable; serving from local pins and hashing until it is back');
      const back = replica.said('shared state reachable again; synced');
      const synced = back[0];
      const upAgain = gauges.get(replica)!.find(({ at, up }) => at >= backAt && up === 1);
      figures.replicas.push({
        name: replica.name,
        downLines: down.length,
        downAfterMs: down[0] === undefined ? null : down[0].at - downAt,
        backLines: back.length,
        syncedAfterMs: synced === undefined ? null : synced.at - backAt,
        resyncMs: synced === undefined ? null : Number(synced.ms),
        outageMs: synced === undefined ? null : Number(synced.outageMs),
        pinsTaken: synced === undefined ? null : Number(synced.pins),
        gaugeUpAfterMs: upAgain === undefined ? null : upAgain.at - backAt,
        outagesTotal: await replica.metric('limpet_shared_state_outages_total'),
        backendsDown: replica.logs.filter((line) => line.msg === 'backend down' || line.msg === 'backend ejected').length,
      });
    }
    return figures;
  } finally {
    look.destroy();
    await pair.stop();
    for (const backend of backends) backend.kill();
  }
}

// ---------------------------------------------------------------------------------------------
// Report

function pairTable(results: PairFigures[]): string {
  const ran = results.filter((r) => r.skipped === undefined);
  const row = (label: string, value: (r: PairFigures) => string) => `| ${label} | ${ran.map(value).join(' | ')} |`;
  const drainMs = (r: PairFigures) => (r.drainSeenByOtherMs === undefined ? 'no runtime drain' : r.drainSeenByOtherMs === null ? `never (watched ${DRAIN_WATCH_MS / 1000} s)` : `${r.drainSeenByOtherMs} ms`);
  return [
    `| ${CLIENTS} address clients, through A and B in turn | ${ran.map((r) => r.name).join(' | ')} |`,
    `|---|${ran.map(() => '---').join('|')}|`,
    row('steady: same backend via A and B', (r) => fmtShare(r.steadySame ?? null)),
    row(`${VICTIM} killed: its clients on one survivor via both`, (r) => fmtShare(r.killSameSurvivor ?? null)),
    row(`${VICTIM} killed: other clients unmoved`, (r) => fmtShare(r.killOthersStayed ?? null)),
    row(`${VICTIM} back: its former clients returned, via A`, (r) => fmtShare(r.recoveryReturnedViaA ?? null)),
    row(`${VICTIM} back: … via B`, (r) => fmtShare(r.recoveryReturnedViaB ?? null)),
    row(`${VICTIM} back: … via B, of ${oneSided.length} more clients that only A carried while ${VICTIM} was down`, (r) => fmtShare(r.recoveryOneSidedReturnedViaB ?? null)),
    row(`${DRAINED} drained through B's runtime API: A shows it after`, drainMs),
    row(`new clients through A on ${DRAINED}, sent in the first second`, (r) => fmtShare(r.drainNewFirstSecond ?? null)),
    row(`… of them sent before A showed the drain`, (r) => fmtShare(r.drainNewBeforeSeen ?? null)),
    row(`new clients through A on ${DRAINED}, sent after 1 s`, (r) => fmtShare(r.drainNewAfter ?? null)),
    row(`${DRAINED}'s clients kept on it, via A`, (r) => fmtShare(r.drainKeptViaA ?? null)),
    row(`${DRAINED}'s clients kept on it, via B`, (r) => fmtShare(r.drainKeptViaB ?? null)),
    row(`B restarted: former ${VICTIM} clients back on it via B`, (r) => fmtShare(r.restartReturnedViaRestarted ?? null)),
    row(`B restarted: … via A`, (r) => fmtShare(r.restartReturnedViaOther ?? null)),
    row('B restarted: same backend via A and B', (r) => fmtShare(r.restartSame ?? null)),
    row(`B restarted: drain of ${DRAINED} still in force on B`, (r) => (r.restartDrainKept === undefined ? '—' : r.restartDrainKept === null ? '?' : r.restartDrainKept ? 'yes' : 'no')),
    row(`B restarted: new clients through B on ${DRAINED}`, (r) => fmtShare(r.restartNewOnDrained ?? null)),
    row('requests that failed (whole run)', (r) => String(r.failedRequests ?? '—')),
  ].join('\n');
}

function outageTable(results: OutageFigures[]): string {
  const failed = (r: OutageFigures) => {
    const kinds = Object.entries(r.failed);
    return kinds.length === 0 ? '0' : `${kinds.reduce((sum, [, n]) => sum + n, 0)} (${kinds.map(([kind, n]) => `${n} × ${kind}`).join(', ')})`;
  };
  const slowest = (values: (number | null)[]) => (values.includes(null) ? '—' : `${Math.max(...(values as number[]))} ms`);
  const ms = (value: number | null) => (value === null ? '—' : `${value} ms`);
  return [
    '| Redis, under load through A and B | requests | failed | on another backend | both synced after Redis was back | pins in Redis after (of them, new clients of the outage) |',
    '|---|---:|---:|---:|---:|---|',
    ...results.map((r) =>
      `| ${r.how} | ${r.requests} | ${failed(r)} | ${r.elsewhere} | ${slowest(r.replicas.map((x) => x.syncedAfterMs))} | ${r.pinsInRedisAfter} (${r.newClientsInRedisAfter}/${r.newClientsDuringOutage}) |`),
    '',
    '| Redis | replica | outage lines | logged after outage start | synced lines | logged after Redis back | its `ms` / `outageMs` | `limpet_shared_state_up` 1 after Redis back | `limpet_shared_state_outages_total` | backends marked down |',
    '|---|---|---:|---:|---:|---:|---|---:|---:|---:|',
    ...results.flatMap((r) =>
      r.replicas.map((x, i) =>
        `| ${i === 0 ? r.how : ''} | ${x.name} | ${x.downLines} | ${ms(x.downAfterMs)} | ${x.backLines} | ${ms(x.syncedAfterMs)} | ${x.resyncMs ?? '—'} / ${x.outageMs ?? '—'} ms | ` +
          `${ms(x.gaugeUpAfterMs)} | ${x.outagesTotal ?? '—'} | ${x.backendsDown} |`),
    ),
  ].join('\n');
}

const log = (line: string) => process.stdout.write(`${line}\n`);
const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-replicas-'));
try {
  const loadAtStart = os.loadavg().map((n) => n.toFixed(2)).join(' ');
  log(`replicas bench: ${describeMachine()}, load average ${loadAtStart}`);
  const results: PairFigures[] = [];
  const configs: string[] = [];
  for (const spec of pairs.filter((p) => ONLY === undefined || ONLY.includes(p.name))) {
    log(`\n${spec.name}: ${spec.description}`);
    const backends = await Promise.all([1, 2, 3].map((n) => BackendProcess.start(n)));
    try {
      const pair = await spec.start(tmp, backends);
      if (typeof pair === 'string') {
        log(`skipped: ${pair}`);
        results.push({ name: spec.name, skipped: pair, notes: [] });
        continue;
      }
      const config = pair.config;
      if (config !== undefined) configs.push(`${spec.name} (replica A; B differs in its ports${spec.name.startsWith('haproxy') ? ' and stats socket' : ''}):\n${config}`);
      try {
        results.push(await runPair(pair, backends, (line) => log(`  ${line}`)));
      } finally {
        await pair.stop();
      }
    } finally {
      for (const backend of backends) backend.kill();
    }
  }
  const outages: OutageFigures[] = [];
  if (ONLY === undefined || ONLY.includes('outage')) {
    for (const how of ['killed', 'frozen'] as const) {
      log(`\nRedis ${how} for ${OUTAGE_SECONDS} s under load through both limpet replicas`);
      outages.push(await outageRun(how, tmp));
    }
  }

  const report = [
    `# Replicas as one (${new Date().toISOString().slice(0, 10)}, ${describeMachine()})`,
    '',
    `\`npm run bench:replicas\`; load average at the start ${loadAtStart}.`,
    '',
    pairTable(results),
    '',
    ...results.filter((r) => r.skipped !== undefined).map((r) => `skipped: ${r.name} — ${r.skipped}`),
    ...results.flatMap((r) => r.notes),
    '',
    ...(outages.length === 0 ? [] : [outageTable(outages), '']),
    ...configs.map((config) => `\`\`\`\n${config}\`\`\`\n`),
  ].join('\n');
  log(`\n${report}`);
  log(`written: ${writeResult('replicas-latest.md', report)}`);
  writeResult('replicas-latest.json', `${JSON.stringify({ date: new Date().toISOString(), machine: describeMachine(), loadAverage: os.loadavg(), clients: CLIENTS, results, outages }, null, 2)}\n`);
} finally {
  stopChildren();
  rmSync(tmp, { recursive: true, force: true });
}
