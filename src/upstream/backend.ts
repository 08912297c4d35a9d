import type { Dispatcher, Pool } from 'undici';
import type { Readable } from 'node:stream';
import { dispatchExpectingContinue } from './expect-continue.js';
import { createPool, singleConnection, samePoolSettings, type PoolSettings } from './pools.js';

export type { PoolSettings } from './pools.js';

export type BackendStatus = 'up' | 'down' | 'draining';

export interface BackendSettings {
  id: string;
  url: string;
  weight: number;
  drain: boolean;
  /** With `drain`, how long after the drain began its remaining clients move (ms); null: never. */
  drainDeadline: number | null;
  healthPath: string | null;
  /** The dns or srv entry that found it ("dns:app.internal:3000"); absent when the file lists it by id. */
  source?: string;
}

/** A backend's drain as the config file says it: draining or not, and the deadline after the drain began (ms). */
export interface DrainSetting {
  draining: boolean;
  deadline: number | null;
}

export interface HealthCheckResult {
  at: number; // epoch ms
  ok: boolean;
  status: number | null;
  error: string | null;
  durationMs: number;
}

/** How many check results it takes to change the active verdict, and how long an ejection lasts. */
export interface CheckPolicy {
  rise: number;
  fall: number;
  /** How long a passively ejected backend waits before a passing check may bring it back (ms). */
  cooldown: number;
}

/**
 * The verdict of the active checks. `unknown`: configured at start and not yet checked; it takes
 * traffic (it may well be up) but does not make the proxy ready; its first pass makes it up, `fall`
 * failures down. `pending`: added by a reload and not yet checked; it takes no traffic, and its
 * first check alone decides.
 */
export type CheckState = 'up' | 'down' | 'unknown' | 'pending';

/** What a backend's health looks like to another process (the cluster primary's broadcast). */
export interface BackendHealth {
  check: CheckState;
  ejected: boolean;
  draining: boolean;
  /** When a draining backend's remaining clients move (epoch ms); null: no deadline. */
  drainDeadlineAt: number | null;
  /** When it last came (back) into service, for slow start (epoch ms); null: in service since start. */
  rampSince: number | null;
  lastCheck: HealthCheckResult | null;
  lastError: string | null;
}

/** A backend's health as one process tells another. */
export interface BackendHealthUpdate extends BackendHealth {
  id: string;
}

/** The transitions that change whether and how a backend may be selected. */
export type BackendChange =
  | 'up'
  | 'down'
  | 'verified'
  | 'ejected'
  | 'readmitted'
  | 'draining'
  | 'undrained'
  | 'drainDeadline'
  | 'retired'
  | 'adopted';

export type BackendChangeListener = (backend: Backend, change: BackendChange) => void;

/**
 * A request in flight at a backend. While it is, the backend links it into its list of in-flight
 * requests through these two fields (an intrusive list: no allocation per request), so it can tell
 * each of them when it stops serving.
 */
export interface InflightRequest {
  /** The backend's links; only the backend sets them. */
  inflightPrev: InflightRequest | null;
  inflightNext: InflightRequest | null;
  /** The backend was marked down while this request waited on it: a request that may go elsewhere does. */
  backendLost(): void;
}

let nextSerial = 1;
let inflightEverywhere = 0;

/** Requests in flight at every backend of this process. */
export function requestsInFlight(): number {
  return inflightEverywhere;
}

/**
 * One backend and everything it knows about itself: its settings, its independent health flags
 * (active check, passive ejection, admin drain, retired), its load counters and its connection
 * pools. Every change of state is a method here; a change that affects selection is announced once
 * to the listener given at construction (the registry), which refreshes selection, closes tunnels
 * and tells other processes. `available` and `takesNewClients` are the only questions selection asks.
 * It is keyed by id and outlives config reloads: a reload updates its url, weight and health path
 * but keeps health, counters and the pins that point at it.
 */
export class Backend {
  /** Small process-unique number, so pin tables can refer to a backend without holding strings. */
  readonly serial = nextSerial++;
  readonly id: string;
  private settings: BackendSettings;
  /** The parsed url, for connections made outside the pool (WebSocket tunnels). */
  private parsedUrl: URL;
  private pool: Pool;
  private poolSettings: PoolSettings;
  /** The active checks' own connection while the pool is capped (see checkDispatcher). */
  private checkClient: Dispatcher | null = null;
  private readonly changed: BackendChangeListener;

  private checkState: CheckState;
  private checkPasses = 0;
  private checkFailures = 0;
  private ejectedSince: number | null = null;
  private drainFlag: boolean;
  private drainStartedAt: number | null = null;
  private drainDeadlineAt: number | null = null;
  /** Fires at the drain deadline; the deadline's passing is a change of state like any other. */
  private drainTimer: NodeJS.Timeout | null = null;
  private drainExpired = false;
  private rampSince: number | null = null;
  private retiredFlag = false;
  private slot = -1;

  private inflightCount = 0;
  /** The requests in flight here, newest first (see InflightRequest). */
  private inflightHead: InflightRequest | null = null;
  private queuedCount = 0;
  private tunnelCount = 0;
  private lastCheckResult: HealthCheckResult | null = null;
  private lastErrorText: string | null = null;

  /** `pending`: a backend added by a reload waits for its first check before it takes traffic. */
  constructor(settings: BackendSettings, pool: PoolSettings, changed: BackendChangeListener, pending = false) {
    this.id = settings.id;
    this.settings = settings;
    this.parsedUrl = new URL(settings.url);
    this.poolSettings = pool;
    this.pool = createPool(settings.url, pool);
    this.changed = changed;
    this.drainFlag = false;
    if (settings.drain) this.startDrain(Date.now(), settings.drainDeadline);
    // A backend added by a reload ramps up from its first passing check (slow start).
    // A fresh proxy serves at once: its configured backends take traffic before their first check.
    this.checkState = pending ? 'pending' : 'unknown';
  }

  // --- what selection and the data path read -------------------------------------------------

  get url(): string {
    return this.settings.url;
  }

  get target(): URL {
    return this.parsedUrl;
  }

  get weight(): number {
    return this.settings.weight;
  }

  get healthPath(): string | null {
    return this.settings.healthPath;
  }

  /** The dns or srv entry it was discovered by; null when the file lists it. */
  get source(): string | null {
    return this.settings.source ?? null;
  }

  /** Position in the current backend set (its selection tables); -1 once retired. */
  get index(): number {
    return this.slot;
  }

  /** May serve the clients already pinned to it. */
  get available(): boolean {
    return (this.checkState === 'up' || this.checkState === 'unknown') && this.ejectedSince === null && !this.retiredFlag;
  }

  /**
   * May serve the clients pinned to it: available, and not a draining backend past its deadline
   * (whose clients move, though its requests in flight finish).
   */
  get servesPinned(): boolean {
    return this.available && !this.drainExpired;
  }

  /** Available, and a check has said so: what readiness counts. */
  get verified(): boolean {
    return this.checkState === 'up' && this.available;
  }

  /** May take new clients. */
  get takesNewClients(): boolean {
    return this.available && !this.drainFlag;
  }

  get draining(): boolean {
    return this.drainFlag;
  }

  /** When a draining backend's remaining clients move (epoch ms), or null. */
  get drainDeadline(): number | null {
    return this.drainDeadlineAt;
  }

  /** Draining and past its deadline: its clients move on their next request. */
  get drainDeadlinePassed(): boolean {
    return this.drainExpired;
  }

  /** When it last came (back) into service, for slow start (epoch ms); null if in service since start. */
  get inServiceSince(): number | null {
    return this.rampSince;
  }

  get ejected(): boolean {
    return this.ejectedSince !== null;
  }

  get retired(): boolean {
    return this.retiredFlag;
  }

  get status(): BackendStatus {
    if (!this.available) return 'down';
    return this.drainFlag ? 'draining' : 'up';
  }

  get health(): BackendHealth {
    return {
      check: this.checkState,
      ejected: this.ejected,
      draining: this.drainFlag,
      drainDeadlineAt: this.drainDeadlineAt,
      rampSince: this.rampSince,
      lastCheck: this.lastCheckResult,
      lastError: this.lastErrorText,
    };
  }

  get inflight(): number {
    return this.inflightCount;
  }

  /** Requests waiting for one of the backend's `maxConnections` connections to come free. */
  get queued(): number {
    return this.queuedCount;
  }

  /** Open WebSocket (and other upgraded) tunnels to this backend. */
  get tunnels(): number {
    return this.tunnelCount;
  }

  get lastCheck(): HealthCheckResult | null {
    return this.lastCheckResult;
  }

  get lastError(): string | null {
    return this.lastErrorText;
  }

  /** The pool requests go through. */
  get dispatcher(): Pool {
    return this.pool;
  }

  /** Connection cap of the current pool; 0 means none. */
  get maxConnections(): number {
    return this.poolSettings.maxConnections;
  }

  /** Whether every allowed connection is busy, so a new request would wait in the pool's queue. */
  get atConnectionCap(): boolean {
    return this.poolSettings.maxConnections > 0 && this.inflightCount >= this.poolSettings.maxConnections;
  }

  /**
   * Where active health checks go: the pool, or under a connection cap a connection of their own,
   * so that a backend whose every allowed connection is busy is not marked down for it (HAProxy
   * keeps checks outside `maxconn` too).
   */
  get checkDispatcher(): Dispatcher {
    if (this.poolSettings.maxConnections === 0) return this.pool;
    return (this.checkClient ??= singleConnection(this.settings.url, this.poolSettings));
  }

  // --- load counters: no event, they change per request ---------------------------------------

  requestStarted(request: InflightRequest): void {
    this.inflightCount++;
    inflightEverywhere++;
    const head = this.inflightHead;
    request.inflightPrev = null;
    request.inflightNext = head;
    if (head !== null) head.inflightPrev = request;
    this.inflightHead = request;
  }

  requestFinished(request: InflightRequest): void {
    this.inflightCount--;
    inflightEverywhere--;
    const { inflightPrev: prev, inflightNext: next } = request;
    if (prev !== null) prev.inflightNext = next;
    else if (this.inflightHead === request) this.inflightHead = next;
    if (next !== null) next.inflightPrev = prev;
    request.inflightPrev = null;
    request.inflightNext = null;
  }

  /**
   * Tells every request in flight here that this backend no longer serves (it was marked down):
   * those that can be sent elsewhere without harm leave at once instead of waiting for their
   * timeout. A request may finish, and so unlink itself, while it is told.
   */
  releaseInflight(): void {
    for (let request = this.inflightHead; request !== null; ) {
      const next = request.inflightNext;
      request.backendLost();
      request = next;
    }
  }

  queueEntered(): void {
    this.queuedCount++;
  }

  queueLeft(): void {
    this.queuedCount--;
  }

  tunnelOpened(): void {
    this.tunnelCount++;
  }

  tunnelClosed(): void {
    this.tunnelCount--;
  }

  /** The latest failure seen at this backend, for the admin API; no change of state. */
  noteError(message: string): void {
    this.lastErrorText = message;
  }

  // --- health transitions ---------------------------------------------------------------------

  /**
   * Records one active check. `rise` consecutive passes mark it up, `fall` consecutive failures
   * down; a pending backend's first check decides alone. A pass after the cooldown also ends a
   * passive ejection.
   */
  checkCompleted(result: HealthCheckResult, policy: CheckPolicy): void {
    this.lastCheckResult = result;
    if (!result.ok) this.lastErrorText = result.error;
    if (this.retiredFlag) return;
    let change: BackendChange | null = null;
    if (this.checkState === 'pending' || (this.checkState === 'unknown' && result.ok)) {
      // An unknown backend was taking traffic already: passing only confirms it.
      if (result.ok) change = this.checkState === 'pending' ? 'up' : 'verified';
      this.checkState = result.ok ? 'up' : 'down';
      this.checkPasses = result.ok ? 1 : 0;
      this.checkFailures = result.ok ? 0 : 1;
    } else if (!result.ok) {
      this.checkPasses = 0;
      this.checkFailures++;
      // An unknown backend is presumed up, as it was taking traffic: `fall` failures take it down.
      if (this.checkState !== 'down' && this.checkFailures >= policy.fall) {
        this.checkState = 'down';
        change = 'down';
      }
    } else {
      this.checkFailures = 0;
      this.checkPasses++;
      if (this.checkState === 'down' && this.checkPasses >= policy.rise) {
        this.checkState = 'up';
        change = 'up';
      }
    }
    if (result.ok && this.ejectedSince !== null && result.at - this.ejectedSince >= policy.cooldown) {
      this.ejectedSince = null;
      if (change === null || change === 'verified') change = 'readmitted';
    }
    // Added, healed or readmitted: back in service now, so slow start ramps from here.
    if ((change === 'up' || change === 'readmitted') && this.available) this.rampSince = result.at;
    if (change !== null) this.changed(this, change);
  }

  /** Passive detection saw too many failures: no traffic until a check passes after the cooldown. */
  eject(now: number): void {
    if (this.ejectedSince !== null || this.retiredFlag) return;
    this.ejectedSince = now;
    this.changed(this, 'ejected');
  }

  /**
   * Admin or config drain: keeps its pinned clients, takes no new ones; at `deadlineAt` (epoch ms,
   * null for none) the clients still here move. Draining again sets a new deadline; undraining
   * cancels it. Returns whether anything changed.
   */
  setDraining(draining: boolean, deadlineAt: number | null = null, now = Date.now()): boolean {
    if (!draining) {
      if (!this.drainFlag) return false;
      this.stopDrain();
      if (!this.retiredFlag) this.changed(this, 'undrained');
      return true;
    }
    const dueNow = deadlineAt !== null && deadlineAt <= now && !this.drainExpired;
    if (this.drainFlag && this.drainDeadlineAt === deadlineAt && !dueNow) return false;
    const wasDraining = this.drainFlag;
    const wasExpired = this.drainExpired;
    this.startDrain(now, deadlineAt === null ? null : deadlineAt - (this.drainStartedAt ?? now));
    if (this.retiredFlag) return true;
    if (!wasDraining) this.changed(this, 'draining');
    else if (wasExpired !== this.drainExpired) this.changed(this, this.drainExpired ? 'drainDeadline' : 'draining');
    return true;
  }

  /** When the drain began (epoch ms), or null when not draining. */
  get drainStarted(): number | null {
    return this.drainStartedAt;
  }

  private startDrain(now: number, deadlineMs: number | null): void {
    if (!this.drainFlag) this.drainStartedAt = now;
    this.drainFlag = true;
    this.setDrainDeadline(deadlineMs === null ? null : (this.drainStartedAt as number) + deadlineMs, now);
  }

  private stopDrain(): void {
    this.drainFlag = false;
    this.drainStartedAt = null;
    this.setDrainDeadline(null, 0);
  }

  private setDrainDeadline(deadlineAt: number | null, now: number): void {
    if (this.drainTimer !== null) clearTimeout(this.drainTimer);
    this.drainTimer = null;
    this.drainDeadlineAt = deadlineAt;
    this.drainExpired = deadlineAt !== null && deadlineAt <= now;
    if (deadlineAt === null || this.drainExpired) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = null;
      this.drainExpired = true;
      if (!this.retiredFlag) this.changed(this, 'drainDeadline');
    }, Math.min(deadlineAt - now, 2 ** 31 - 1));
    this.drainTimer.unref();
  }

  /** Takes the health the cluster primary decided (a worker's copy of the one health view). */
  adopt(health: BackendHealth): void {
    this.checkState = health.check;
    this.ejectedSince = health.ejected ? (this.ejectedSince ?? Date.now()) : null;
    if (!health.draining) {
      if (this.drainFlag) this.stopDrain();
    } else {
      const now = Date.now();
      if (!this.drainFlag) this.drainStartedAt = now;
      this.drainFlag = true;
      if (health.drainDeadlineAt !== this.drainDeadlineAt || (health.drainDeadlineAt !== null && health.drainDeadlineAt <= now) !== this.drainExpired) {
        this.setDrainDeadline(health.drainDeadlineAt, now);
      }
    }
    this.rampSince = health.rampSince;
    this.lastCheckResult = health.lastCheck;
    this.lastErrorText = health.lastError;
    if (!this.retiredFlag) this.changed(this, 'adopted');
  }

  /**
   * Removed from the config: it can serve no one, its pins move on their next request, and its pool
   * closes once in-flight requests are done.
   */
  retire(): Promise<void> {
    if (!this.retiredFlag) {
      this.retiredFlag = true;
      this.slot = -1;
      this.setDrainDeadline(null, 0);
      this.changed(this, 'retired');
    }
    return this.close();
  }

  // --- configuration --------------------------------------------------------------------------

  /** Its position in a newly built backend set (the set's selection tables index by it). */
  placeAt(index: number): void {
    this.slot = index;
  }

  /**
   * Applies a reloaded config entry (not its drain flag: see the reload plan). A new URL or new pool
   * settings get new connections; the old pool is closed once it has finished its requests, queued
   * ones included.
   */
  reconfigure(settings: BackendSettings, pool: PoolSettings): void {
    const sameUrl = settings.url === this.settings.url;
    this.settings = { ...settings, drain: this.drainFlag, drainDeadline: this.settings.drainDeadline };
    if (sameUrl && samePoolSettings(this.poolSettings, pool)) return;
    void this.close();
    this.checkClient = null;
    this.poolSettings = pool;
    this.parsedUrl = new URL(settings.url);
    this.pool = createPool(settings.url, pool);
  }

  /**
   * Sends one request on a connection of its own, closed once the request is done. A resend after a
   * stale keep-alive socket goes this way: the pool may hold more sockets the backend has closed.
   */
  dispatchOnNewConnection(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    const client = singleConnection(this.settings.url, this.poolSettings);
    client.dispatch(options, handler);
    // Resolves once the one request is done; it cannot fail, as nothing else closes this client.
    void client.close();
  }

  /** Sends a request that expects `100 Continue` on a connection of its own (see expect-continue.ts). */
  dispatchExpectingContinue(options: Dispatcher.DispatchOptions & { headers: string[]; body: Readable | null }, handler: Dispatcher.DispatchHandler): void {
    dispatchExpectingContinue(this.parsedUrl, options, handler, this.poolSettings.connectTimeout);
  }

  /** Closes the pool and the check connection once their requests are done. */
  async close(): Promise<void> {
    await Promise.all([this.pool.close(), this.checkClient?.close()]);
  }
}
