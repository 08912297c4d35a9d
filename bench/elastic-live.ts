// The scenarios of bench/elastic.ts that run the real proxy over loopback: 4 → 5 backends through
// limpet (ip and cookie affinity) and through nginx and HAProxy with consistent hashing, 5 → 4 with a
// drain deadline (socket.io clients included), slow start, and bounded load. Short timescales
// (idleAfter 2s) so each runs in well under a minute; bench/elastic-simulation.ts runs the same
// placement code at full timescales on a fake clock.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { descendantPids, findExecutable, isSkipped, startServerTarget, type Backends } from './harness.js';
import { haproxyConfig, nginxConfig, startHaproxy, startNginx } from './peers.js';
import {
  count, failures, FleetClient, inBatches, keepActive, LimpetProcess, loopbackAddresses, movesOf, needlessNotices, SocketIoUser, spread,
  type FleetBackend, type Reply,
} from './elastic-fleet.js';
import { hashKey } from '../src/selection/hash.js';
import { Selector } from '../src/selection/selector.js';
import { waitFor } from '../test/support/client.js';

export const IDLE_AFTER = '2s';
const IDLE_AFTER_MS = 2_000;
/** Idle long enough for rebalance: idleAfter, plus the up to one second a last-seen stamp may lag, plus a margin. */
const IDLE_WAIT_MS = 4_000;
// A generous check timeout: the backends share two cores with limpet and a thousand clients, and a
// check answered late must not take a backend down in the middle of a measurement.
const HEALTH = 'healthCheck: { interval: 500ms, timeout: 2s }';
const CLIENTS = 1_000;
const ACTIVE_INTERVAL_MS = 500;
/** The backend added by a scale-up and drained by a scale-down. */
const NEWEST = 'b5';

/** The backends as bench/peers.ts configures a peer over them (it reads only the origins). */
function fleetBackends(backends: readonly FleetBackend[]): Backends {
  return { pid: process.pid, origins: backends.map((backend) => backend.origin) };
}

function clientsFrom(block: number, howMany: number, port: number, cookieName: string | null): FleetClient[] {
  return loopbackAddresses(block, howMany).map((address) => new FleetClient(address, port, cookieName));
}

// ---------------------------------------------------------------------------------------------
// 4 → 5 backends

/** The home limpet gives a key among backends of weight 1 with these ids: the first in its hash order. */
function homeOver(ids: readonly string[]): (key: string) => string {
  const selector = new Selector(ids.map((id) => ({ id, weight: 1 })));
  return (key) => ids[selector.primary(hashKey(key))] as string;
}

/** A proxy in front of b1–b4 that can be grown to b1–b5. */
export interface ScaleUpTarget {
  name: string;
  port: number;
  /** The affinity cookie clients keep, or null when the proxy pins by address. */
  cookieName: string | null;
  /** Adds b5; resolves once the proxy sends it traffic. */
  grow(): Promise<void>;
  /** The key limpet hashes for a client (its address, or its cookie's nonce); null for a peer. */
  keyOf: ((client: FleetClient) => string) | null;
  /** Clients the proxy counted as moved by rebalance (limpet), or null. */
  rebalanceRemaps(): Promise<number | null>;
  /** Health checks that failed during the run (limpet), or null. */
  failedChecks(): Promise<number | null>;
  stop(): Promise<void>;
}

export interface ScaleUpFigures {
  name: string;
  active: number;
  /** Active clients (a request every 0.5 s) whose backend changed at any time. */
  activeMoved: number;
  /** Of those, the ones moved by a request that reached the backends less than idleAfter after their previous one. */
  activeMovedWhileActive: number;
  /**
   * The shortest silence before a request that moved its client (ms; see `Move.silenceMs`): at least
   * idleAfter for a rebalance; an "active" client that the machine held up that long was idle.
   */
  shortestSilenceBeforeMoveMs: number | null;
  idle: number;
  /** Idle clients (past idleAfter) on b5 once they returned. */
  idleOnNew: number;
  /** limpet: idle clients whose home is b5 (the first choice of their key over b1–b5); null for a peer. */
  idleHomeOnNew: number | null;
  /** Idle clients that returned to another of the old backends than before (their hash home moved). */
  idleMovedElsewhere: number;
  newClients: number;
  newOnNew: number;
  moves: number;
  /** Moves whose first answer from the new backend carried X-Limpet-Remapped-From naming the old one. */
  movesNoticed: number;
  needlessNotices: number;
  /** Failed requests, by kind (see `failures`). */
  errors: string;
  resent: number;
  rebalanceRemaps: number | null;
  failedChecks: number | null;
  /** Cookie mode: Set-Cookie headers an active client got per second, after its first answer. */
  setCookiePerSecond: number | null;
}

/**
 * 1,000 clients on b1–b4: half send a request every 0.5 s throughout, half go idle. Once the idle
 * ones are idle past idleAfter, b5 is added; the active ones keep going for 5 s, then the idle ones
 * come back (over 5 s, two requests each), then 500 new clients arrive (over 2.5 s).
 */
export async function scaleUp(target: ScaleUpTarget): Promise<ScaleUpFigures> {
  const clients = clientsFrom(20, CLIENTS, target.port, target.cookieName);
  const active = clients.filter((_, i) => i % 2 === 0);
  const idle = clients.filter((_, i) => i % 2 === 1);
  await inBatches(clients, 50, (client) => client.send());
  const activity = keepActive(active, ACTIVE_INTERVAL_MS);
  const activeSince = Date.now();
  await sleep(IDLE_WAIT_MS);
  const before = new Map(idle.map((client) => [client, client.backend]));
  await target.grow();
  await sleep(5_000);
  await spread(idle, 5_000, async (client) => {
    await client.send();
    await sleep(ACTIVE_INTERVAL_MS);
    await client.send();
  });
  const newcomers = clientsFrom(21, CLIENTS / 2, target.port, target.cookieName);
  await spread(newcomers, 2_500, (client) => client.send());
  await activity.stop();
  const activeSeconds = (Date.now() - activeSince) / 1000;
  const everyone = [...clients, ...newcomers];
  const moves = everyone.flatMap((client) => movesOf(client.replies));
  const { keyOf } = target;
  const home = homeOver(['b1', 'b2', 'b3', 'b4', NEWEST]);
  const figures: ScaleUpFigures = {
    name: target.name,
    active: active.length,
    activeMoved: count(active, (client) => movesOf(client.replies).length > 0),
    activeMovedWhileActive: count(active, (client) => movesOf(client.replies).some((move) => move.silenceMs < IDLE_AFTER_MS)),
    shortestSilenceBeforeMoveMs: moves.length === 0 ? null : Math.min(...moves.map((move) => move.silenceMs)),
    idle: idle.length,
    idleOnNew: count(idle, (client) => client.backend === NEWEST),
    idleHomeOnNew: keyOf === null ? null : count(idle, (client) => home(keyOf(client)) === NEWEST),
    idleMovedElsewhere: count(idle, (client) => client.backend !== NEWEST && client.backend !== before.get(client)),
    newClients: newcomers.length,
    newOnNew: count(newcomers, (client) => client.backend === NEWEST),
    moves: moves.length,
    movesNoticed: count(moves, (move) => move.noticed),
    needlessNotices: everyone.reduce((sum, client) => sum + needlessNotices(client.replies), 0),
    errors: failures(everyone),
    resent: everyone.reduce((sum, client) => sum + client.resent, 0),
    rebalanceRemaps: await target.rebalanceRemaps(),
    failedChecks: await target.failedChecks(),
    setCookiePerSecond:
      target.cookieName === null
        ? null
        : active.reduce((sum, client) => sum + count(client.replies.slice(1), (reply) => reply.setCookie), 0) / (active.length * activeSeconds),
  };
  for (const client of everyone) client.close();
  return figures;
}

/** limpet with `affinity.rebalance: { idleAfter: 2s }` (maxMovesPerSecond at its default, 50). */
export async function limpetScaleUpTarget(mode: 'ip' | 'cookie', backends: readonly FleetBackend[], tmp: string): Promise<ScaleUpTarget> {
  const affinity =
    mode === 'ip'
      ? `affinity: { by: ip, rebalance: { idleAfter: ${IDLE_AFTER} } }`
      : `affinity: { by: cookie, cookie: { secret: elastic-bench }, rebalance: { idleAfter: ${IDLE_AFTER} } }`;
  const limpet = await LimpetProcess.start(`limpet-scale-up-${mode}`, tmp, [affinity, HEALTH], backends.slice(0, 4));
  return {
    name: `limpet, by: ${mode}`,
    port: limpet.port,
    cookieName: mode === 'cookie' ? 'limpet' : null,
    // A cookie is `<nonce>.<backend id>…`: its nonce is the key.
    keyOf: mode === 'ip' ? (client) => client.address : (client) => (client.cookieValue ?? '').split('.')[0] as string,
    grow: () => limpet.setBackends(backends, [NEWEST]),
    rebalanceRemaps: () => limpet.metric('limpet_session_remaps_total', { reason: 'rebalance' }),
    failedChecks: () => limpet.failedChecks(),
    stop: () => limpet.stop(),
  };
}

/** nginx (peers.ts: `hash $remote_addr consistent`), grown by rewriting its config and SIGHUP. */
export async function nginxScaleUpTarget(backends: readonly FleetBackend[], tmp: string): Promise<ScaleUpTarget | string> {
  const started = await startNginx('nginx', 'nginx, hash $remote_addr consistent', fleetBackends(backends.slice(0, 4)), tmp, '1', undefined);
  const target = started.prepared;
  if (isSkipped(target)) return target.reason;
  const port = Number(new URL(target.origin).port);
  const dir = path.join(tmp, 'nginx');
  return {
    name: `nginx ${/nginx\/(\S+)/.exec(started.version ?? '')?.[1] ?? ''}, hash $remote_addr consistent`,
    port,
    cookieName: null,
    keyOf: null,
    grow: async () => {
      const workers = new Set(descendantPids(target.serverPid));
      writeFileSync(path.join(dir, 'nginx.conf'), nginxConfig(dir, port, fleetBackends(backends), '1'));
      process.kill(target.serverPid, 'SIGHUP');
      await waitFor(() => descendantPids(target.serverPid).some((pid) => !workers.has(pid)), 10_000, 'a new nginx worker');
    },
    rebalanceRemaps: async () => null,
    failedChecks: async () => null,
    stop: async () => void process.kill(target.serverPid, 'SIGTERM'),
  };
}

/**
 * HAProxy (peers.ts: `balance source`, `hash-type consistent`), grown by the documented seamless
 * reload: a new process on the new config takes over the port (`-sf` tells the old one to finish).
 */
export async function haproxyScaleUpTarget(backends: readonly FleetBackend[], tmp: string): Promise<ScaleUpTarget | string> {
  const started = await startHaproxy('haproxy', 'haproxy, balance source', fleetBackends(backends.slice(0, 4)), tmp, 'source', 1, undefined);
  const target = started.prepared;
  const binary = findExecutable('haproxy');
  if (isSkipped(target) || binary === undefined) return isSkipped(target) ? target.reason : 'haproxy not found';
  const port = Number(new URL(target.origin).port);
  const file = path.join(tmp, 'haproxy.cfg');
  let pid = target.serverPid;
  return {
    name: `HAProxy ${/version (\d+(?:\.\d+)*)/.exec(started.version ?? '')?.[1] ?? ''}, balance source + hash-type consistent`,
    port,
    cookieName: null,
    keyOf: null,
    grow: async () => {
      writeFileSync(file, haproxyConfig(port, fleetBackends(backends), 'source', 1));
      const next = await startServerTarget('haproxy-reloaded', 'haproxy', [binary, '-f', file, '-db', '-sf', String(pid)], undefined, target.origin);
      if (isSkipped(next)) throw new Error(`HAProxy reload failed: ${next.reason}`);
      pid = next.serverPid;
    },
    rebalanceRemaps: async () => null,
    failedChecks: async () => null,
    stop: async () => void process.kill(pid, 'SIGTERM'),
  };
}

// ---------------------------------------------------------------------------------------------
// 5 → 4 with a drain deadline

export interface DrainFigures {
  deadline: string;
  /** Clients pinned to b5 when the drain began, by kind. */
  activeOnDrained: number;
  idleOnDrained: number;
  /** Active clients of b5 moved before the deadline (must be none), and the latest any moved after it (ms). */
  activeMovedBefore: number;
  activeMovedAfter: number;
  activeLastMoveAfterDeadlineMs: number;
  /** Idle clients of b5 that came back before the deadline and were moved then. */
  idleMovedBefore: number;
  /** Clients of the other backends that moved (must be none). */
  othersMoved: number;
  moves: number;
  movesNoticed: number;
  errors: string;
  drainRemaps: number;
  failedChecks: number;
  /** When GET /backends/b5 first said drained, after the deadline (ms; negative: before it). */
  drainedAfterDeadlineMs: number | null;
  /** b5's liveClients and WebSockets as polled: at the drain, just before the deadline, and when drained. */
  liveClientsTrace: { afterDrainMs: number; liveClients: number; websockets: number }[];
  sockets: number;
  socketsOnDrained: number;
  /** socket.io clients of other backends that were disconnected (must be none). */
  otherSocketsDisconnected: number;
  /** socket.io clients of b5: when they were disconnected after the deadline, and how long until connected again elsewhere (ms). */
  socketDisconnectAfterDeadlineMs: number[];
  socketReconnectMs: number[];
  socketsMovedTo: Record<string, number>;
}

/**
 * Five backends, 1,000 HTTP clients (half active, half idle) and 50 socket.io clients on WebSockets.
 * b5 is drained with a 6 s deadline; the idle HTTP clients come back during the drain.
 */
export async function drainWithDeadline(backends: readonly FleetBackend[], tmp: string): Promise<DrainFigures> {
  const deadlineSetting = '6s';
  const limpet = await LimpetProcess.start('limpet-drain', tmp, [`affinity: { by: ip, rebalance: { idleAfter: ${IDLE_AFTER} } }`, HEALTH], backends);
  const clients = clientsFrom(20, CLIENTS, limpet.port, null);
  const active = clients.filter((_, i) => i % 2 === 0);
  const idle = clients.filter((_, i) => i % 2 === 1);
  await inBatches(clients, 50, (client) => client.send());
  const activity = keepActive(active, ACTIVE_INTERVAL_MS);
  const sockets = loopbackAddresses(22, 50).map((address) => new SocketIoUser(limpet.port, address));
  await waitFor(() => sockets.every((socket) => socket.settled), 60_000, 'socket.io clients on WebSockets');
  await sleep(IDLE_WAIT_MS);
  const home = new Map(clients.map((client) => [client, client.backend]));
  const socketHome = new Map(sockets.map((socket) => [socket, socket.backend]));
  const drainAt = Date.now();
  const view = await limpet.drain(NEWEST, deadlineSetting);
  const deadline = Date.parse(view.drainDeadline as string);
  const trace: { at: number; liveClients: number; websockets: number; drained: boolean }[] = [];
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const now = await limpet.backend(NEWEST);
      trace.push({ at: Date.now(), liveClients: now.liveClients, websockets: now.websockets, drained: now.drained });
      await sleep(100);
    }
  })();
  await sleep(500);
  await spread(idle, 4_000, (client) => client.send());
  await waitFor(() => trace.some((entry) => entry.drained), 30_000, `${NEWEST} drained`);
  const drainedSockets = sockets.filter((socket) => socketHome.get(socket) === NEWEST);
  await waitFor(() => drainedSockets.every((socket) => socket.connections.length >= 2 && socket.settled), 60_000, 'socket.io clients reconnected');
  polling = false;
  await poller;
  await activity.stop();

  const onDrained = (client: FleetClient) => home.get(client) === NEWEST;
  const movesOfDrained = (group: FleetClient[]) => group.filter(onDrained).map((client) => movesOf(client.replies)[0]).filter((move) => move !== undefined);
  const activeMoves = movesOfDrained(active);
  const moves = clients.flatMap((client) => movesOf(client.replies));
  const drainedEntry = trace.find((entry) => entry.drained);
  const beforeDeadline = trace.filter((entry) => entry.at < deadline).at(-1);
  const figures: DrainFigures = {
    deadline: deadlineSetting,
    activeOnDrained: count(active, onDrained),
    idleOnDrained: count(idle, onDrained),
    activeMovedBefore: count(activeMoves, (move) => move.at < deadline),
    activeMovedAfter: count(activeMoves, (move) => move.at >= deadline),
    activeLastMoveAfterDeadlineMs: Math.max(0, ...activeMoves.map((move) => move.at - deadline)),
    idleMovedBefore: count(movesOfDrained(idle), (move) => move.at < deadline),
    othersMoved: count(clients, (client) => !onDrained(client) && movesOf(client.replies).length > 0),
    moves: moves.length,
    movesNoticed: count(moves, (move) => move.noticed),
    errors: failures(clients),
    drainRemaps: await limpet.metric('limpet_session_remaps_total', { reason: 'drain' }),
    failedChecks: await limpet.failedChecks(),
    drainedAfterDeadlineMs: drainedEntry === undefined ? null : drainedEntry.at - deadline,
    liveClientsTrace: [trace[0], beforeDeadline, drainedEntry]
      .filter((entry) => entry !== undefined)
      .map((entry) => ({ afterDrainMs: entry.at - drainAt, liveClients: entry.liveClients, websockets: entry.websockets })),
    sockets: sockets.length,
    socketsOnDrained: drainedSockets.length,
    otherSocketsDisconnected: count(sockets, (socket) => socketHome.get(socket) !== NEWEST && socket.disconnects.length > 0),
    socketDisconnectAfterDeadlineMs: drainedSockets.map((socket) => (socket.disconnects[0]?.at ?? NaN) - deadline),
    socketReconnectMs: drainedSockets.map((socket) => (socket.connections[1]?.at ?? NaN) - (socket.disconnects[0]?.at ?? NaN)),
    socketsMovedTo: Object.fromEntries(
      [...new Set(drainedSockets.map((socket) => socket.backend ?? ''))].sort().map((id) => [id, count(drainedSockets, (socket) => socket.backend === id)]),
    ),
  };
  for (const socket of sockets) socket.close();
  for (const client of clients) client.close();
  await limpet.stop();
  return figures;
}

// ---------------------------------------------------------------------------------------------
// Slow start

export interface SlowStartBucket {
  /** Seconds since b5 came up: [from, to). */
  from: number;
  to: number;
  /** b5's effective weight as GET /backends/b5 showed it in the bucket (mean of the polls). */
  effectiveWeight: number;
  newClients: number;
  onNew: number;
}

export interface SlowStartFigures {
  slowStart: string;
  ip: SlowStartBucket[];
  cookie: SlowStartBucket[];
}

const SLOW_START_SECONDS = 20;
const SLOW_START_BUCKET_SECONDS = 4;

/** b5 is added to b1–b4 with `balance.slowStart: 20s`; new clients arrive at 50/s for 24 s. ip and cookie side by side. */
export async function slowStart(backends: readonly FleetBackend[], tmp: string): Promise<SlowStartFigures> {
  const balance = `balance: { slowStart: ${SLOW_START_SECONDS}s }`;
  const [ip, cookie] = await Promise.all([
    slowStartRun('ip', 'affinity: { by: ip }', 23, balance, backends, tmp),
    slowStartRun('cookie', 'affinity: { by: cookie, cookie: { secret: elastic-bench } }', 24, balance, backends, tmp),
  ]);
  return { slowStart: `${SLOW_START_SECONDS}s`, ip, cookie };
}

async function slowStartRun(mode: string, affinity: string, block: number, balance: string, backends: readonly FleetBackend[], tmp: string): Promise<SlowStartBucket[]> {
  const limpet = await LimpetProcess.start(`limpet-slow-start-${mode}`, tmp, [affinity, balance, HEALTH], backends.slice(0, 4));
  await limpet.setBackends(backends, [NEWEST]);
  const upAt = Date.now();
  const span = SLOW_START_SECONDS + SLOW_START_BUCKET_SECONDS;
  const weights: { at: number; weight: number }[] = [];
  const polling = (async () => {
    while (Date.now() < upAt + span * 1000) {
      weights.push({ at: Date.now(), weight: (await limpet.backend(NEWEST)).effectiveWeight });
      await sleep(250);
    }
  })();
  const newcomers = clientsFrom(block, 50 * span, limpet.port, mode === 'cookie' ? 'limpet' : null);
  await spread(newcomers, span * 1000, (client) => client.send());
  await polling;
  await limpet.stop();
  const replies = newcomers.map((client) => client.replies[0] as Reply);
  const buckets: SlowStartBucket[] = [];
  for (let from = 0; from < span; from += SLOW_START_BUCKET_SECONDS) {
    const to = from + SLOW_START_BUCKET_SECONDS;
    const within = (at: number) => at >= upAt + from * 1000 && at < upAt + to * 1000;
    const inBucket = replies.filter((reply) => within(reply.at));
    const polled = weights.filter((entry) => within(entry.at));
    buckets.push({
      from,
      to,
      effectiveWeight: polled.reduce((sum, entry) => sum + entry.weight, 0) / Math.max(1, polled.length),
      newClients: inBucket.length,
      onNew: count(inBucket, (reply) => reply.backend === NEWEST),
    });
  }
  for (const client of newcomers) client.close();
  return buckets;
}

// ---------------------------------------------------------------------------------------------
// Bounded load

export interface BoundedLoadBucket {
  /** New clients placed so far, at the end of this bucket. */
  placed: number;
  newClients: number;
  onLoaded: number;
  /** Share of all clients the loaded backend holds at the end of the bucket. */
  loadedShare: number;
}

export interface BoundedLoadFigures {
  maxLoadFactor: number;
  pinned: number;
  pinnedMoved: number;
  errors: string;
  failedChecks: number;
  buckets: BoundedLoadBucket[];
}

/**
 * limpet with `balance.maxLoadFactor: 1.25` starts with b1 alone and 1,000 clients pinned there
 * (each sending a request a second throughout); b2–b4 are added; then 3,000 new clients arrive.
 */
export async function boundedLoad(backends: readonly FleetBackend[], tmp: string): Promise<BoundedLoadFigures> {
  const maxLoadFactor = 1.25;
  const limpet = await LimpetProcess.start('limpet-bounded-load', tmp, ['affinity: { by: ip }', `balance: { maxLoadFactor: ${maxLoadFactor} }`, HEALTH], backends.slice(0, 1));
  const pinned = clientsFrom(20, CLIENTS, limpet.port, null);
  await inBatches(pinned, 50, (client) => client.send());
  const activity = keepActive(pinned, 1_000);
  await limpet.setBackends(backends.slice(0, 4), ['b2', 'b3', 'b4']);
  const newcomers = clientsFrom(25, 3 * CLIENTS, limpet.port, null);
  await spread(newcomers, 12_000, (client) => client.send());
  await activity.stop();
  const failedChecks = await limpet.failedChecks();
  await limpet.stop();
  const loaded = 'b1';
  const arrivals = newcomers.map((client) => client.replies[0] as Reply).sort((a, b) => a.at - b.at);
  const buckets: BoundedLoadBucket[] = [];
  let onLoadedSoFar = count(pinned, (client) => client.backend === loaded);
  for (let from = 0; from < arrivals.length; from += 500) {
    const inBucket = arrivals.slice(from, from + 500);
    const onLoaded = count(inBucket, (reply) => reply.backend === loaded);
    onLoadedSoFar += onLoaded;
    buckets.push({ placed: from + inBucket.length, newClients: inBucket.length, onLoaded, loadedShare: onLoadedSoFar / (pinned.length + from + inBucket.length) });
  }
  const figures: BoundedLoadFigures = {
    maxLoadFactor,
    pinned: pinned.length,
    pinnedMoved: count(pinned, (client) => movesOf(client.replies).length > 0),
    errors: failures([...pinned, ...newcomers]),
    failedChecks,
    buckets,
  };
  for (const client of [...pinned, ...newcomers]) client.close();
  return figures;
}
