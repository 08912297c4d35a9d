import type { Backend } from '../upstream/backend.js';

/** Room for a backend serial in a packed entry: entry = seenSecond * SERIAL_SPACE + serial. */
const SERIAL_SPACE = 2 ** 20;

/**
 * Remembered pins for ip and header affinity: client key → backend, with idle expiry and a size cap.
 * One number per entry (last-seen second and backend serial packed together) keeps memory to the key
 * and the map slot. Entries are re-inserted when touched, at most once per refresh period, so map
 * order is last-seen order: expiry and eviction work from the front and stop at the first live entry.
 */
export class PinTable {
  private readonly entries = new Map<string, number>();
  private readonly backendsBySerial: (Backend | undefined)[] = [];
  /** Entries per backend serial, kept as entries come and go: the load maxLoadFactor reads per new client. */
  private readonly countsBySerial: number[] = [];
  private ttlSeconds = 1;
  private refreshSeconds = 1;
  private maxEntries = 1;
  /** Told of every pin written or refreshed here (workers share their pins through it). */
  onWrite: ((key: string, backend: Backend) => void) | null = null;
  /**
   * The second the entry returned by the last `get` had been seen before that get touched it: how
   * long its client had been idle. Read right after `get`; a field rather than a returned pair, so
   * the lookup allocates nothing.
   */
  previousSeen = 0;

  /** `idleAfterMs`: the idleness that matters to the caller (rebalance), so last-seen times are kept finer than it. */
  constructor(ttlMs: number, maxEntries: number, idleAfterMs: number | null = null) {
    this.configure(ttlMs, maxEntries, idleAfterMs);
  }

  /** New limits from a reload; the remembered pins stay (the oldest go if the cap shrank). */
  configure(ttlMs: number, maxEntries: number, idleAfterMs: number | null = null): void {
    this.ttlSeconds = Math.max(1, Math.ceil(ttlMs / 1000));
    const finest = idleAfterMs === null ? this.ttlSeconds : Math.min(this.ttlSeconds, Math.floor(idleAfterMs / 1000));
    this.refreshSeconds = Math.max(1, Math.floor(finest / 8));
    this.maxEntries = maxEntries;
    if (this.entries.size > this.maxEntries) this.evictOldest(this.entries.size - this.maxEntries);
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * How stale a last-seen second may be: an entry is re-stamped only when touched this long after
   * its stamp, so its client's last request may have come up to this much later than the stamp.
   */
  get stampPeriodSeconds(): number {
    return this.refreshSeconds;
  }

  /** Remembered clients pinned to `backend` (idle ones not yet swept included). */
  count(backend: Backend): number {
    return this.countsBySerial[backend.serial % SERIAL_SPACE] ?? 0;
  }

  /** The backend `key` is pinned to, if the pin has not idled out; touching it keeps it alive. */
  get(key: string, nowSeconds: number): Backend | undefined {
    const packed = this.entries.get(key);
    if (packed === undefined) return undefined;
    const seen = Math.floor(packed / SERIAL_SPACE);
    const serial = packed - seen * SERIAL_SPACE;
    if (nowSeconds - seen >= this.ttlSeconds) {
      this.drop(key, serial);
      return undefined;
    }
    this.previousSeen = seen;
    if (nowSeconds - seen >= this.refreshSeconds) {
      this.entries.delete(key);
      this.entries.set(key, nowSeconds * SERIAL_SPACE + serial);
      const backend = this.backendsBySerial[serial];
      if (this.onWrite !== null && backend !== undefined) this.onWrite(key, backend);
      return backend;
    }
    return this.backendsBySerial[serial];
  }

  set(key: string, backend: Backend, nowSeconds: number): void {
    this.store(key, backend, nowSeconds);
    if (this.onWrite !== null) this.onWrite(key, backend);
  }

  /** Records a pin learnt from another process, without telling `onWrite` (no echo). */
  store(key: string, backend: Backend, nowSeconds: number): void {
    const serial = backend.serial % SERIAL_SPACE;
    this.backendsBySerial[serial] = backend;
    const before = this.entries.get(key);
    if (before !== undefined) this.drop(key, before % SERIAL_SPACE);
    else if (this.entries.size >= this.maxEntries) this.evictOldest(Math.max(1, Math.ceil(this.maxEntries / 64)));
    this.entries.set(key, nowSeconds * SERIAL_SPACE + serial);
    this.countsBySerial[serial] = (this.countsBySerial[serial] ?? 0) + 1;
  }

  /**
   * Re-stamps a pin whose client is busy without a new request (a long response, an open WebSocket),
   * so it does not look idle; as cheap as a lookup when the stamp is recent.
   */
  touch(key: string, nowSeconds: number): void {
    const packed = this.entries.get(key);
    if (packed === undefined || nowSeconds - Math.floor(packed / SERIAL_SPACE) < this.refreshSeconds) return;
    const backend = this.backendsBySerial[packed % SERIAL_SPACE];
    if (backend !== undefined) this.set(key, backend, nowSeconds);
  }

  /** Drops idle entries; cheap because the oldest are at the front. Returns how many were dropped. */
  sweep(nowSeconds: number): number {
    let dropped = 0;
    for (const [key, packed] of this.entries) {
      if (nowSeconds - Math.floor(packed / SERIAL_SPACE) < this.ttlSeconds) break;
      this.drop(key, packed % SERIAL_SPACE);
      dropped++;
    }
    return dropped;
  }

  /** Pins per backend, for the sessions gauge and the admin API. */
  countByBackend(): Map<Backend, number> {
    const counts = new Map<Backend, number>();
    this.countsBySerial.forEach((count, serial) => {
      const backend = this.backendsBySerial[serial];
      if (backend !== undefined && count > 0) counts.set(backend, count);
    });
    return counts;
  }

  /** Pins per backend whose client was seen at `sinceSeconds` or later (walks the table: for the admin API and scrapes, not requests). */
  countSeenSince(sinceSeconds: number): Map<Backend, number> {
    const counts = new Map<Backend, number>();
    for (const packed of this.entries.values()) {
      if (Math.floor(packed / SERIAL_SPACE) < sinceSeconds) continue;
      const backend = this.backendsBySerial[packed % SERIAL_SPACE];
      if (backend !== undefined) counts.set(backend, (counts.get(backend) ?? 0) + 1);
    }
    return counts;
  }

  /** Every pin with its last-seen second, oldest first: for a state file or a shared store. */
  records(): [string, string, number][] {
    const records: [string, string, number][] = [];
    for (const [key, packed] of this.entries) {
      const backend = this.backendsBySerial[packed % SERIAL_SPACE];
      if (backend !== undefined) records.push([key, backend.id, Math.floor(packed / SERIAL_SPACE)]);
    }
    return records;
  }

  /** Whether a pin last seen at `seenSecond` would still be remembered at `nowSeconds`. */
  remembers(seenSecond: number, nowSeconds: number): boolean {
    return nowSeconds - seenSecond < this.ttlSeconds;
  }

  /** Every pin as [key, backend id], for a process that joins late. */
  snapshot(): [string, string][] {
    const pins: [string, string][] = [];
    for (const [key, packed] of this.entries) {
      const backend = this.backendsBySerial[packed % SERIAL_SPACE];
      if (backend !== undefined) pins.push([key, backend.id]);
    }
    return pins;
  }

  /**
   * Drops the `count` least recently seen pins. A full table evicts in batches of 1/64 of its size:
   * deleting from a Map's front one at a time makes every later front walk step over the holes.
   */
  private evictOldest(count: number): void {
    let left = count;
    for (const [key, packed] of this.entries) {
      if (left-- <= 0) break;
      this.drop(key, packed % SERIAL_SPACE);
    }
  }

  private drop(key: string, serial: number): void {
    this.entries.delete(key);
    this.countsBySerial[serial] = (this.countsBySerial[serial] as number) - 1;
  }
}
