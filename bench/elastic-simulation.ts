// limpet's placement code on a fake clock, for bench/elastic.ts: the backend registry and set, pin
// table, move budget and affinity policy that src/limpet.ts wires, built from a parsed YAML config,
// with requests handed straight to the policy. Hours of traffic at the real timescales
// (idleAfter 30m) run in seconds; the network parts are left out (bench/elastic-live.ts runs those).
//
// Deterministic for by: ip (client addresses are fixed, times come from a seeded generator); by:
// cookie also draws nonces from the system's random source, so its counts vary a little between runs.
import type { Socket } from 'node:net';
import { buildAffinity, type AffinityMemory } from '../src/affinity/build-affinity.js';
import { ClientAddressResolver } from '../src/affinity/client-address.js';
import { AffinityCookieCodec } from '../src/affinity/cookie.js';
import { ClientActivity, MoveBudget } from '../src/affinity/elastic.js';
import { PinTable } from '../src/affinity/pin-table.js';
import type { AffinityPolicy, ClientHints, RemapReason } from '../src/affinity/policy.js';
import { parseConfig } from '../src/config/load.js';
import { listedBackends } from '../src/discovery/backend-discovery.js';
import type { LimpetConfig } from '../src/config/schema.js';
import { affinitySettings, poolSettings } from '../src/runtime/settings.js';
import { hashKey } from '../src/selection/hash.js';
import { BackendRegistry } from '../src/upstream/backend-registry.js';
import { seededRandom } from '../test/support/random.js';

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
/** Any fixed start: only differences of time matter. */
const START = Date.UTC(2026, 0, 1);
const IDLE_AFTER = 30 * MINUTE;
/** Longer than idleAfter, so a client idle past idleAfter is still remembered and moved with the notice. */
const SESSION_TTL = '2h';
const NEWEST = 'b5';

type Mode = 'ip' | 'cookie';

/**
 * The wall clock, replaced while a simulation runs: the parts of limpet that are not handed the
 * time (the cookie's last-seen stamp, health results, ramps) read Date.now.
 */
class FakeClock {
  now: number;
  private readonly real = Date.now;

  constructor(start: number) {
    this.now = start;
    Date.now = () => this.now;
  }

  restore(): void {
    Date.now = this.real;
  }
}

function simulationConfig(mode: Mode, affinity: string, backendCount: number): LimpetConfig {
  const by = mode === 'ip' ? 'by: ip' : 'by: cookie, cookie: { secret: elastic-simulation }';
  const text = [
    `affinity: { ${by}, sessionTtl: ${SESSION_TTL}, maxSessions: 1000000${affinity === '' ? '' : `, ${affinity}`} }`,
    'backends:',
    ...Array.from({ length: backendCount }, (_, i) => `  - { id: b${i + 1}, url: "http://127.0.0.1:${20_001 + i}" }`),
    '',
  ].join('\n');
  return parseConfig(text, 'simulation.yaml', {});
}

interface SimClient {
  /** Its address (by: ip). */
  readonly address: string;
  readonly socket: Socket;
  /** `limpet=<value>` once the proxy set a cookie (by: cookie). */
  cookie: string | undefined;
  backend: string | undefined;
  /** When its previous request was, epoch ms. */
  lastAt: number;
  requests: number;
  moves: number;
}

function simClient(i: number): SimClient {
  const address = `10.${(i >>> 16) & 255}.${(i >>> 8) & 255}.${i & 255}`;
  return { address, socket: { remoteAddress: address } as Socket, cookie: undefined, backend: undefined, lastAt: -Infinity, requests: 0, moves: 0 };
}

/** What a request of a client got. */
interface Answer {
  backend: string;
  remappedFrom: string | null;
  setCookie: boolean;
}

/** One limpet process's placement, wired as src/limpet.ts wires it, minus the network. */
class SimulatedProxy {
  readonly remaps = new Map<RemapReason, number>();
  private readonly registry: BackendRegistry;
  private readonly memory: AffinityMemory;
  private policy: AffinityPolicy;
  private readonly hints: ClientHints = { forwardedFor: undefined, cookieHeader: undefined, affinityHeader: undefined, connectionAffinity: null };

  constructor(private readonly mode: Mode, config: LimpetConfig) {
    this.registry = new BackendRegistry(listedBackends(config.backends), poolSettings(config), config.balance.slowStart);
    this.memory = {
      pins: new PinTable(config.affinity.sessionTtl, config.affinity.maxSessions, config.affinity.rebalance?.idleAfter ?? null),
      codec: new AffinityCookieCodec(config.affinity.cookie.secret),
      clients: new ClientAddressResolver(config.trustedProxies),
      onRemap: (_from, _to, reason) => this.remaps.set(reason, (this.remaps.get(reason) ?? 0) + 1),
      activity: new ClientActivity(),
      moves: new MoveBudget(config.affinity.rebalance?.maxMovesPerSecond ?? 0),
    };
    this.policy = buildAffinity(affinitySettings(config), this.registry.set, this.memory);
  }

  /** Applies `config` as a reload does; a backend it adds passes its first health check at once. */
  reload(config: LimpetConfig): void {
    this.registry.apply(listedBackends(config.backends), poolSettings(config), new Map(), config.balance.slowStart);
    for (const backend of this.registry.backends) {
      if (backend.health.check !== 'pending') continue;
      backend.checkCompleted({ at: Date.now(), ok: true, status: 200, error: null, durationMs: 1 }, { rise: 2, fall: 3, cooldown: 10 * SECOND });
    }
    this.policy = buildAffinity(affinitySettings(config), this.registry.set, this.memory);
  }

  /** The client's home now: the first backend of its key's hash order (address, or cookie nonce). */
  home(client: SimClient): string {
    // A cookie is `limpet=<nonce>.<backend id>…`: its nonce is the key.
    const key = this.mode === 'ip' ? client.address : ((client.cookie ?? '').split('=', 2)[1] ?? '').split('.')[0] as string;
    const set = this.registry.set;
    return (set.backends[set.selector.primary(hashKey(key))] as { id: string }).id;
  }

  /** One request of `client` at `nowMs`, answered at once. */
  request(client: SimClient, nowMs: number): Answer {
    const policy = this.policy;
    const placement = policy.newPlacement();
    this.hints.cookieHeader = client.cookie;
    policy.place(placement, client.socket, this.hints, nowMs);
    const backend = placement.backend;
    if (backend === null) throw new Error('no backend could take the client');
    const setCookie = policy.responseCookie(placement);
    if (setCookie !== null) client.cookie = setCookie.slice(0, setCookie.indexOf(';'));
    policy.released(placement);
    return { backend: backend.id, remappedFrom: placement.remappedFrom, setCookie: setCookie !== null };
  }

  /** Forgets pins idle past sessionTtl, as the proxy's sweep timer does. */
  sweep(nowMs: number): void {
    this.memory.pins.sweep(Math.floor(nowMs / SECOND));
  }

  close(): Promise<void> {
    return this.registry.close();
  }
}

/** Clients by the time of their next request: a binary min-heap. */
class Timeline {
  private readonly times: number[] = [];
  private readonly ids: number[] = [];

  get size(): number {
    return this.times.length;
  }

  /** The earliest time queued; Infinity when none is. */
  peek(): number {
    return this.times.length === 0 ? Infinity : (this.times[0] as number);
  }

  push(time: number, id: number): void {
    const { times, ids } = this;
    let i = times.length;
    times.push(time);
    ids.push(id);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if ((times[parent] as number) <= time) break;
      times[i] = times[parent] as number;
      ids[i] = ids[parent] as number;
      i = parent;
    }
    times[i] = time;
    ids[i] = id;
  }

  /** Removes the earliest entry and returns its id. */
  pop(): number {
    const { times, ids } = this;
    const top = ids[0] as number;
    const lastTime = times.pop() as number;
    const lastId = ids.pop() as number;
    const size = times.length;
    if (size === 0) return top;
    let i = 0;
    for (;;) {
      let child = 2 * i + 1;
      if (child >= size) break;
      if (child + 1 < size && (times[child + 1] as number) < (times[child] as number)) child++;
      if ((times[child] as number) >= lastTime) break;
      times[i] = times[child] as number;
      ids[i] = ids[child] as number;
      i = child;
    }
    times[i] = lastTime;
    ids[i] = lastId;
    return top;
  }
}

/** Moves seen by clients, whether the app was told, and notices without a move. */
interface Tally {
  moves: number;
  noticed: number;
  needless: number;
}

/** Records what a request got: a changed backend is a move, noticed when the notice named the old one. */
function observe(client: SimClient, answer: Answer, tally: Tally): boolean {
  const previous = client.backend;
  client.backend = answer.backend;
  client.requests++;
  if (previous !== undefined && previous !== answer.backend) {
    tally.moves++;
    client.moves++;
    if (answer.remappedFrom === previous) tally.noticed++;
    return true;
  }
  if (answer.remappedFrom !== null) tally.needless++;
  return false;
}

// ---------------------------------------------------------------------------------------------
// 4 → 5 backends at full timescales

export interface SimulatedScaleUpOptions {
  mode: Mode;
  clients: number;
  /** How often an active client sends a request. */
  activeEveryMs: number;
  /** The idle clients (and as many new ones) come back spread over this time after the scale-up. */
  returnsOverMs: number;
  seed: number;
}

export interface SimulatedScaleUp extends SimulatedScaleUpOptions {
  maxMovesPerSecond: number;
  active: number;
  activeMoved: number;
  idle: number;
  idleOnNew: number;
  idleHomeOnNew: number;
  idleMovedElsewhere: number;
  newClients: number;
  newOnNew: number;
  tally: Tally;
  rebalanceRemaps: number;
  /** Cookie mode: Set-Cookie headers an active client got per hour, after its first answer. */
  setCookiePerActiveHour: number | null;
  requests: number;
  wallSeconds: number;
}

/**
 * The live scenario at full timescales: `clients` on b1–b4 (placed over the first minute), half
 * sending a request every `activeEveryMs` throughout, half idle. At 38.5 min (idleAfter 30m × 1.25
 * after the last of them was placed) b5 is added; a minute later the idle clients come back over
 * `returnsOverMs` (two requests each) and as many new clients arrive over the same time.
 */
export async function simulateScaleUp(options: SimulatedScaleUpOptions): Promise<SimulatedScaleUp> {
  const started = performance.now();
  const clock = new FakeClock(START);
  const affinity = `rebalance: { idleAfter: ${IDLE_AFTER / MINUTE}m }`;
  const proxy = new SimulatedProxy(options.mode, simulationConfig(options.mode, affinity, 4));
  try {
    const random = seededRandom(options.seed, options.clients);
    const total = options.clients + options.clients / 2;
    const clients = Array.from({ length: total }, (_, i) => simClient(i));
    const isActive = (id: number) => id < options.clients && id % 2 === 0;
    const isNew = (id: number) => id >= options.clients;
    // limpet moves a client once its last-seen stamp is idleAfter + idleAfter/8 old (the stamp is
    // refreshed at most that often): the idle clients are idle past that when b5 comes.
    const growAt = START + MINUTE + IDLE_AFTER * 1.25;
    const returnsFrom = growAt + MINUTE;
    const end = returnsFrom + options.returnsOverMs + MINUTE;
    const timeline = new Timeline();
    for (let id = 0; id < total; id++) timeline.push(isNew(id) ? returnsFrom + random() * options.returnsOverMs : START + random() * MINUTE, id);
    const tally: Tally = { moves: 0, noticed: 0, needless: 0 };
    const beforeGrow: (string | undefined)[] = [];
    let activeSetCookies = 0;
    let requests = 0;
    let grown = false;
    let nextSweep = START + 10 * SECOND;
    while (timeline.peek() <= end) {
      const at = timeline.peek();
      for (; nextSweep <= at; nextSweep += 10 * SECOND) proxy.sweep(nextSweep);
      if (!grown && at >= growAt) {
        clock.now = growAt;
        for (const client of clients) beforeGrow.push(client.backend);
        proxy.reload(simulationConfig(options.mode, affinity, 5));
        grown = true;
      }
      const id = timeline.pop();
      const client = clients[id] as SimClient;
      clock.now = at;
      const answer = proxy.request(client, at);
      requests++;
      observe(client, answer, tally);
      client.lastAt = at;
      if (isActive(id)) {
        if (answer.setCookie && client.requests > 1) activeSetCookies++;
        timeline.push(at + options.activeEveryMs, id);
      } else if (!isNew(id) && client.requests === 1) {
        timeline.push(returnsFrom + random() * options.returnsOverMs, id);
      } else if (!isNew(id) && client.requests === 2) {
        timeline.push(at + options.activeEveryMs, id);
      }
    }
    const idleIds = clients.map((_, id) => id).filter((id) => !isNew(id) && !isActive(id));
    const idle = idleIds.map((id) => clients[id] as SimClient);
    const active = clients.filter((_, id) => isActive(id));
    const newcomers = clients.filter((_, id) => isNew(id));
    const activeHours = (end - START) / HOUR;
    return {
      ...options,
      maxMovesPerSecond: simulationConfig(options.mode, affinity, 5).affinity.rebalance?.maxMovesPerSecond ?? 0,
      active: active.length,
      activeMoved: active.filter((client) => client.moves > 0).length,
      idle: idle.length,
      idleOnNew: idle.filter((client) => client.backend === NEWEST).length,
      idleHomeOnNew: idle.filter((client) => proxy.home(client) === NEWEST).length,
      idleMovedElsewhere: idleIds.filter((id) => clients[id]?.backend !== NEWEST && clients[id]?.backend !== beforeGrow[id]).length,
      newClients: newcomers.length,
      newOnNew: newcomers.filter((client) => client.backend === NEWEST).length,
      tally,
      rebalanceRemaps: proxy.remaps.get('rebalance') ?? 0,
      setCookiePerActiveHour: options.mode === 'cookie' ? activeSetCookies / (active.length * activeHours) : null,
      requests,
      wallSeconds: (performance.now() - started) / 1000,
    };
  } finally {
    clock.restore();
    await proxy.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Convergence: how the rest follow as they pause

export interface ConvergenceSample {
  afterMinutes: number;
  /** Clients seen within idleAfter, and those of them on b5. */
  live: number;
  liveOnNew: number;
  /** Every client by its last backend. */
  all: number;
  allOnNew: number;
  rebalanceMoves: number;
}

export interface SimulatedConvergence {
  clients: number;
  seed: number;
  samples: ConvergenceSample[];
  /** Clients whose home is b5: where the share ends. */
  homeOnNew: number;
  /** The shortest idle time before a rebalance move (must be at least idleAfter). */
  shortestIdleBeforeMoveMinutes: number;
  /** Backend changes without the remap notice: clients forgotten after sessionTtl and placed afresh. */
  placedAfreshElsewhere: number;
  needless: number;
  requests: number;
  wallSeconds: number;
}

const SESSION_MEAN = 20 * MINUTE;
const PAUSE_MEAN = 40 * MINUTE;
const SESSION_REQUEST_EVERY = MINUTE;
const WARM_UP = 4 * HOUR;
const SAMPLE_MINUTES = [0, 15, 30, 60, 120, 240, 480];

/**
 * `clients` by: ip clients that alternate sessions (exponential, mean 20 min, a request a minute)
 * and pauses (exponential, mean 40 min), with rebalance at idleAfter 30m and its default budget.
 * Four hours on b1–b4, then b5 is added; the share of clients on b5 is sampled over eight hours.
 */
export async function simulateConvergence(clientCount: number, seed: number): Promise<SimulatedConvergence> {
  const started = performance.now();
  const clock = new FakeClock(START);
  const affinity = `rebalance: { idleAfter: ${IDLE_AFTER / MINUTE}m }`;
  const proxy = new SimulatedProxy('ip', simulationConfig('ip', affinity, 4));
  try {
    const random = seededRandom(seed, 1);
    const exponential = (mean: number) => -mean * Math.log(1 - random());
    const clients = Array.from({ length: clientCount }, (_, i) => simClient(i));
    /** When each client's current session ends. */
    const sessionEnds = new Float64Array(clientCount);
    const timeline = new Timeline();
    for (let id = 0; id < clientCount; id++) {
      const firstSession = START + random() * (SESSION_MEAN + PAUSE_MEAN);
      sessionEnds[id] = firstSession + exponential(SESSION_MEAN);
      timeline.push(firstSession, id);
    }
    const growAt = START + WARM_UP;
    const tally: Tally = { moves: 0, noticed: 0, needless: 0 };
    const samples: ConvergenceSample[] = [];
    let nextSample = 0;
    let shortestIdle = Infinity;
    let placedAfresh = 0;
    let requests = 0;
    let nextSweep = START + 10 * SECOND;
    const sample = (at: number) => {
      const live = clients.filter((client) => client.lastAt >= at - IDLE_AFTER);
      samples.push({
        afterMinutes: SAMPLE_MINUTES[nextSample++] as number,
        live: live.length,
        liveOnNew: live.filter((client) => client.backend === NEWEST).length,
        all: clients.length,
        allOnNew: clients.filter((client) => client.backend === NEWEST).length,
        rebalanceMoves: proxy.remaps.get('rebalance') ?? 0,
      });
    };
    while (timeline.size > 0) {
      const at = timeline.peek();
      for (; nextSweep <= at; nextSweep += 10 * SECOND) proxy.sweep(nextSweep);
      const sampleAt = growAt + ((SAMPLE_MINUTES[nextSample] ?? Infinity) as number) * MINUTE;
      if (sampleAt <= at) {
        clock.now = sampleAt;
        if (nextSample === 0) proxy.reload(simulationConfig('ip', affinity, 5));
        sample(sampleAt);
        if (nextSample === SAMPLE_MINUTES.length) break;
        continue;
      }
      const id = timeline.pop();
      const client = clients[id] as SimClient;
      clock.now = at;
      const previous = client.backend;
      const answer = proxy.request(client, at);
      requests++;
      if (observe(client, answer, tally)) {
        if (answer.remappedFrom === previous) shortestIdle = Math.min(shortestIdle, at - client.lastAt);
        else placedAfresh++;
      }
      client.lastAt = at;
      const next = at + SESSION_REQUEST_EVERY * (0.8 + 0.4 * random());
      if (next < (sessionEnds[id] as number)) {
        timeline.push(next, id);
      } else {
        const nextSession = (sessionEnds[id] as number) + exponential(PAUSE_MEAN);
        sessionEnds[id] = nextSession + exponential(SESSION_MEAN);
        timeline.push(nextSession, id);
      }
    }
    return {
      clients: clientCount,
      seed,
      samples,
      homeOnNew: clients.filter((client) => proxy.home(client) === NEWEST).length,
      shortestIdleBeforeMoveMinutes: shortestIdle / MINUTE,
      placedAfreshElsewhere: placedAfresh,
      needless: tally.needless,
      requests,
      wallSeconds: (performance.now() - started) / 1000,
    };
  } finally {
    clock.restore();
    await proxy.close();
  }
}

// ---------------------------------------------------------------------------------------------
// The cost of a placement

/**
 * Nanoseconds per request of placing `clientCount` returning clients round-robin (place, response
 * cookie, release), on the real clock, with `affinity.rebalance` at idleAfter 30m or without it.
 */
export async function placementNs(mode: Mode, rebalance: boolean, clientCount = 1_000, rounds = 400): Promise<number> {
  const proxy = new SimulatedProxy(mode, simulationConfig(mode, rebalance ? 'rebalance: { idleAfter: 30m }' : '', 4));
  try {
    const clients = Array.from({ length: clientCount }, (_, i) => simClient(i));
    for (let round = 0; round < 20; round++) for (const client of clients) proxy.request(client, Date.now());
    const begin = process.hrtime.bigint();
    for (let round = 0; round < rounds; round++) {
      const now = Date.now();
      for (const client of clients) proxy.request(client, now);
    }
    return Number(process.hrtime.bigint() - begin) / (rounds * clientCount);
  } finally {
    await proxy.close();
  }
}
