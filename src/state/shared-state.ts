import { randomBytes } from 'node:crypto';
import type { Logger } from '../observe/log.js';
import type { DurableState, PinRecord, RuntimeDrain, StateSink } from './durable-state.js';
import { connectRedis, type RedisConnection, type RedisSettings } from './redis-connection.js';
import { decodeDrain, decodeEvent, decodePin, drainMessage, encodeDrain, forgottenMessage, pinsMessage, sharedKeys, type SharedKeys } from './shared-protocol.js';

/** What shared state changes in the proxy: the same calls a restart's restore makes. */
export interface SharedStateTarget {
  /** Takes pins and runtime drains decided elsewhere, without telling them back. */
  restoreState(state: DurableState): number;
  /** This replica's pins and runtime drains now. */
  durableState(): DurableState;
  adoptRuntimeDrain(drain: RuntimeDrain): void;
  forgetRuntimeDrain(id: string): void;
}

export interface SharedStateSettings extends RedisSettings {
  keyPrefix: string;
  /** affinity.sessionTtl at start: how long a shared pin lives after it was last written (see setSessionTtl). */
  sessionTtl: number;
  /** False in cookie mode: the cookie is the pin, so only runtime drains are shared. */
  sharePins: boolean;
}

/** Changes are written in batches this often, so a busy proxy makes a few round trips a second, not one per client. */
const FLUSH_EVERY_MS = 50;
/** With nothing to write, this often a PING tells whether Redis is there. */
const HEARTBEAT_MS = 1_000;
/** A Redis that takes longer than this for a batch counts as unreachable. */
const OPERATION_TIMEOUT_MS = 1_000;
/** Pins per published message and per SCAN page. */
const BATCH = 1_000;

/**
 * Pins and runtime drains shared with the other replicas through Redis. Nothing here is on a
 * request's path: every replica keeps the whole table in memory (loaded at start, kept current by
 * pub/sub), so a request never waits for Redis — not even a first-time client's, whose place every
 * replica computes alike from its hash. Changes made here are written and published in batches.
 *
 * Redis down, slow or restarting: requests go on from local memory and hashing; the outage is
 * logged once, counted and shown as `limpet_shared_state_up 0`; changes made meanwhile are kept
 * (one entry per client, so memory stays bounded by the pin table), written when Redis is back,
 * and the whole shared table is read again to learn what others changed. What can be lost: a
 * client two replicas moved differently during the outage ends where the last writer put it.
 */
export class SharedState implements StateSink {
  /** Tells this replica's own messages apart, so it does not take back what it said. */
  private readonly origin = randomBytes(6).toString('base64url');
  private readonly keys: SharedKeys;
  private readonly connection: RedisConnection;
  /** Pins and drains changed here and not yet written; kept while Redis is unreachable. */
  private pendingPins = new Map<string, string>();
  private pendingDrains = new Map<string, RuntimeDrain | null>();
  private upFlag = false;
  /** True until the shared table has been read (at start, and after every outage). */
  private needsResync = true;
  private busy = false;
  /** Until firstSync gives up waiting, a Redis not connected yet is not an outage. */
  private starting = true;
  private lastContact = 0;
  private downSince: number | null = null;
  private lastError = '';
  /** affinity.sessionTtl in force: a reload may change it. */
  private sessionTtl: number;
  private readonly timer: NodeJS.Timeout;
  private closed = false;
  /** Outages so far, for limpet_shared_state_outages_total. */
  outages = 0;

  constructor(
    private readonly settings: SharedStateSettings,
    private readonly target: SharedStateTarget,
    private readonly logger: Logger,
  ) {
    this.keys = sharedKeys(settings.keyPrefix);
    this.sessionTtl = settings.sessionTtl;
    this.connection = connectRedis(settings, (error) => {
      this.lastError = error.message;
    });
    this.connection.subscribe(this.keys.events, (message) => this.received(message)).catch((error: unknown) => {
      this.lastError = (error as Error).message;
    });
    this.timer = setInterval(() => void this.tick(), FLUSH_EVERY_MS);
    this.timer.unref();
  }

  get up(): boolean {
    return this.upFlag;
  }

  /** A reload changed affinity.sessionTtl: pins written from now on live that long in Redis, as they do here. */
  setSessionTtl(ms: number): void {
    this.sessionTtl = ms;
  }

  /** Resolves once the shared table has been read, or after `waitMs` (the proxy then serves and syncs when it can). */
  async firstSync(waitMs: number): Promise<void> {
    const deadline = Date.now() + waitMs;
    await this.tick();
    while (this.needsResync && Date.now() < deadline && !this.closed) {
      await new Promise((resolve) => setTimeout(resolve, FLUSH_EVERY_MS));
      await this.tick();
    }
    this.starting = false;
    if (this.needsResync) this.wentDown(new Error(this.lastError || `no answer within ${waitMs} ms`));
  }

  // --- StateSink: what changed here ------------------------------------------------------------

  pinWritten([key, backendId]: PinRecord): void {
    if (this.settings.sharePins) this.pendingPins.set(key, backendId);
  }

  drainChanged(drain: RuntimeDrain): void {
    this.pendingDrains.set(drain.id, drain);
  }

  drainForgotten(id: string): void {
    this.pendingDrains.set(id, null);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.timer);
    // One last batch, if Redis is there to take it.
    while (this.busy) await new Promise((resolve) => setTimeout(resolve, 5));
    if (this.upFlag && (this.pendingPins.size > 0 || this.pendingDrains.size > 0)) await this.flush().catch(() => undefined);
    this.closed = true;
    await this.connection.close();
  }

  // --- the sync loop ---------------------------------------------------------------------------

  private async tick(): Promise<void> {
    if (this.busy || this.closed) return;
    this.busy = true;
    try {
      if (this.needsResync) await this.resync();
      else if (this.pendingPins.size > 0 || this.pendingDrains.size > 0) await this.flush();
      else if (Date.now() - this.lastContact >= HEARTBEAT_MS) await this.run([['PING']]);
    } catch (error) {
      if (this.starting) this.needsResync = true;
      else this.wentDown(error as Error);
    } finally {
      this.busy = false;
    }
  }

  /** One round trip, bounded in time; a failure or a timeout means Redis is not there. */
  private async run(commands: string[][]): Promise<unknown[]> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`Redis took over ${OPERATION_TIMEOUT_MS} ms`)), OPERATION_TIMEOUT_MS);
    });
    try {
      const replies = await Promise.race([this.connection.pipeline(commands), timeout]);
      for (const reply of replies) if (reply instanceof Error) throw reply;
      this.lastContact = Date.now();
      return replies;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Writes what changed here and tells the others; on failure everything stays pending. */
  private async flush(): Promise<void> {
    const pins = this.pendingPins;
    const drains = this.pendingDrains;
    this.pendingPins = new Map();
    this.pendingDrains = new Map();
    const commands: string[][] = [];
    const ttl = String(this.sessionTtl);
    let batch: [string, string][] = [];
    for (const [key, backendId] of pins) {
      commands.push(['SET', this.keys.pinPrefix + key, backendId, 'PX', ttl]);
      batch.push([key, backendId]);
      if (batch.length === BATCH) {
        commands.push(['PUBLISH', this.keys.events, pinsMessage(this.origin, batch)]);
        batch = [];
      }
    }
    if (batch.length > 0) commands.push(['PUBLISH', this.keys.events, pinsMessage(this.origin, batch)]);
    for (const [id, drain] of drains) {
      if (drain === null) {
        commands.push(['HDEL', this.keys.drains, id], ['PUBLISH', this.keys.events, forgottenMessage(this.origin, id)]);
      } else {
        commands.push(['HSET', this.keys.drains, id, encodeDrain(drain)], ['PUBLISH', this.keys.events, drainMessage(this.origin, drain)]);
      }
    }
    try {
      await this.run(commands);
    } catch (error) {
      // Keep them for later, under anything written since (which is newer).
      for (const [key, backendId] of pins) if (!this.pendingPins.has(key)) this.pendingPins.set(key, backendId);
      for (const [id, drain] of drains) if (!this.pendingDrains.has(id)) this.pendingDrains.set(id, drain);
      throw error;
    }
  }

  /**
   * After start or an outage: write what changed here meanwhile (it wins), give Redis every other
   * pin this replica knows that it lacks (a Redis restarted without persistence comes back empty;
   * NX never overwrites what another replica wrote), then read the whole shared table (pins with
   * their age, runtime drains) and take it.
   */
  private async resync(): Promise<void> {
    const started = Date.now();
    if (this.pendingPins.size > 0 || this.pendingDrains.size > 0) await this.flush();
    if (this.settings.sharePins) await this.fillMissing();
    const drainReply = (await this.run([['HGETALL', this.keys.drains]]))[0];
    const drains: RuntimeDrain[] = [];
    for (const [id, value] of fieldPairs(drainReply)) {
      const drain = decodeDrain(id, value);
      if (drain !== null) drains.push(drain);
    }
    const pins: PinRecord[] = [];
    if (this.settings.sharePins) {
      const nowSeconds = Math.floor(Date.now() / 1000);
      let cursor = '0';
      do {
        const [next, found] = (await this.run([['SCAN', cursor, 'MATCH', this.keys.pinPattern, 'COUNT', String(BATCH)]]))[0] as [string, string[]];
        cursor = String(next);
        if (found.length === 0) continue;
        const replies = await this.run(found.flatMap((key) => [['GET', key], ['PTTL', key]]));
        found.forEach((redisKey, i) => {
          const value = replies[2 * i];
          const ttl = Number(replies[2 * i + 1]);
          if (typeof value !== 'string' || !(ttl > 0)) return;
          const pin = decodePin(this.keys, redisKey, value);
          // Written sessionTtl before it expires: its age is when the client was last seen.
          if (pin !== null) pins.push([pin[0], pin[1], nowSeconds - Math.ceil((this.sessionTtl - ttl) / 1000)]);
        });
      } while (cursor !== '0');
    }
    const taken = this.target.restoreState({ pins, drains });
    this.needsResync = false;
    const outageMs = this.downSince === null ? null : Date.now() - this.downSince;
    this.cameBack();
    this.logger.info({ msg: outageMs === null ? 'shared state loaded' : 'shared state reachable again; synced', pins: taken, drains: drains.length, ms: Date.now() - started, outageMs });
  }

  private async fillMissing(): Promise<void> {
    const nowMs = Date.now();
    let commands: string[][] = [];
    for (const [key, backendId, seen] of this.target.durableState().pins) {
      const left = this.sessionTtl - (nowMs - seen * 1000);
      if (left <= 0) continue;
      commands.push(['SET', this.keys.pinPrefix + key, backendId, 'PX', String(Math.ceil(left)), 'NX']);
      if (commands.length === BATCH) {
        await this.run(commands);
        commands = [];
      }
    }
    if (commands.length > 0) await this.run(commands);
  }

  private received(message: string): void {
    const event = decodeEvent(message, this.origin);
    if (event === null) return;
    if (event.kind === 'pins') {
      const seen = Math.floor(Date.now() / 1000);
      this.target.restoreState({ pins: event.pins.map(([key, backendId]) => [key, backendId, seen]), drains: [] });
    } else if (event.kind === 'drain') this.target.adoptRuntimeDrain(event.drain);
    else this.target.forgetRuntimeDrain(event.id);
  }

  private cameBack(): void {
    this.upFlag = true;
    this.downSince = null;
  }

  /** Logged once per outage; the next contact resyncs. */
  private wentDown(error: Error): void {
    this.needsResync = true;
    if (!this.upFlag && this.downSince !== null) return;
    this.upFlag = false;
    this.downSince = Date.now();
    this.outages++;
    this.logger.warn({ msg: 'shared state unreachable; serving from local pins and hashing until it is back', error: this.lastError || error.message });
  }
}

/** HGETALL's reply as [field, value] pairs, whether the client gave a flat list (RESP2) or a map. */
function fieldPairs(reply: unknown): [string, string][] {
  const pairs: [string, string][] = [];
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) pairs.push([String(reply[i]), String(reply[i + 1])]);
  } else if (reply instanceof Map) {
    for (const [field, value] of reply) pairs.push([String(field), String(value)]);
  } else if (typeof reply === 'object' && reply !== null) {
    for (const [field, value] of Object.entries(reply)) pairs.push([field, String(value)]);
  }
  return pairs;
}
