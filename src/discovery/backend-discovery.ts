import type { BackendEntry, DiscoveryEntry } from '../config/schema.js';
import { DiscoveryLookupError } from '../errors.js';
import type { Logger } from '../observe/log.js';
import type { BackendSettings, DrainSetting } from '../upstream/backend.js';
import { discoveredBackend, discoveredId, discoveryName, sourceKey } from './discovered-backend.js';
import { DnsLookup, type FoundTarget, type LookupAnswer } from './dns-lookup.js';

export interface DiscoverySettings {
  /** Longest time between two lookups of a name (ms). */
  interval: number;
  /** DNS servers, "address:port"; empty: the system's. */
  servers: readonly string[];
  /** How long an address that left DNS drains before it is removed (ms). */
  drainDeadline: number;
}

/**
 * Told when the discovered backends changed, after the change: `drain` holds the drains discovery
 * changed (an address that left DNS drains with the deadline; one that came back stops draining).
 */
export type DiscoveryListener = (drain: ReadonlyMap<string, DrainSetting>) => void;

/**
 * The shortest wait between two lookups of a name whatever the TTL, so a TTL of 0 (dnsmasq's
 * default for its hosts files, some service registries') does not become a query loop.
 */
const SHORTEST_TTL_MS = 1000;

/** An address that left DNS: it drains with `deadline` (ms), and goes once the deadline has passed. */
interface Leaving {
  target: FoundTarget;
  deadline: number;
}

/** One dns or srv entry: what DNS last said, and what is left of what it said before. */
interface Source {
  entry: DiscoveryEntry;
  /** The last good answer, by backend id; null before the first. */
  known: Map<string, FoundTarget> | null;
  leaving: Map<string, Leaving>;
  timer: NodeJS.Timeout | null;
  looking: boolean;
  /** Since when lookups have failed, and how many; null while they answer. */
  outage: { since: number; failures: number } | null;
}

/** The backends the file lists by id: all a process that resolves nothing knows until it is told the rest. */
export function listedBackends(entries: readonly BackendEntry[]): BackendSettings[] {
  return entries.filter((entry) => 'id' in entry);
}

/**
 * Turns the `dns` and `srv` entries of `backends` into backends, and keeps them current: each name
 * is looked up again after its TTL, at most `interval` later, one lookup at a time per name, never
 * on the path of a request. An address that appears becomes a backend like one added to the file;
 * one that leaves drains with `drainDeadline` (the backend keeps the time: at the deadline its
 * clients move and its WebSockets close), and goes once the deadline has passed (told by
 * `drainDeadlinePassed`). A lookup that fails or finds nothing changes nothing (the last known set
 * serves on); it is counted, and logged once per outage. It owns only the discovered sets: the
 * proxy applies them to the registry when told.
 */
export class BackendDiscovery {
  private readonly sources = new Map<string, Source>();
  private readonly failedLookups = new Map<string, number>();
  private lookup: DnsLookup;
  private listener: DiscoveryListener | null = null;
  private stopped = false;

  constructor(
    private settings: DiscoverySettings,
    private readonly logger: Logger,
  ) {
    this.lookup = new DnsLookup(settings.servers);
  }

  /** Looks every name of `entries` up once, so the proxy starts with what DNS says; failures are retried on the interval. */
  async start(entries: readonly BackendEntry[]): Promise<void> {
    const added = this.reconcile(entries);
    await Promise.all(added.map((source) => this.refresh(source)));
  }

  /** From now on, every change is told to `listener`. */
  listen(listener: DiscoveryListener): void {
    this.listener = listener;
  }

  /**
   * A reloaded config: names no longer listed are forgotten (their backends go, as entries removed
   * from the file do), new ones are looked up at once, kept ones keep what they know.
   */
  configure(settings: DiscoverySettings, entries: readonly BackendEntry[]): void {
    if (settings.servers.join() !== this.settings.servers.join()) this.lookup = new DnsLookup(settings.servers);
    const newInterval = settings.interval !== this.settings.interval;
    this.settings = settings;
    const added = this.reconcile(entries);
    // As with health checks: a new interval applies from the next lookup, not after the old wait.
    if (newInterval) for (const source of this.sources.values()) if (source.timer !== null) this.schedule(source, settings.interval);
    for (const source of added) void this.refresh(source);
  }

  /** The backends of `entries`, in their order: listed ones as they are, each name's discovered ones, then those draining out. */
  backends(entries: readonly BackendEntry[]): BackendSettings[] {
    const backends: BackendSettings[] = [];
    for (const entry of entries) {
      if ('id' in entry) {
        backends.push(entry);
        continue;
      }
      const source = this.sources.get(sourceKey(entry));
      if (source === undefined) continue;
      for (const target of source.known?.values() ?? []) backends.push(discoveredBackend(entry, target));
      for (const { target, deadline } of source.leaving.values()) backends.push(discoveredBackend(entry, target, deadline));
    }
    return backends;
  }

  /**
   * A backend's drain deadline passed: if it is an address that left DNS, it goes now (after the
   * change that told this has been handled, so the registry is not changed from within its own event).
   */
  drainDeadlinePassed(id: string): void {
    for (const source of this.sources.values()) {
      if (!source.leaving.has(id)) continue;
      setImmediate(() => {
        if (!this.stopped && source.leaving.delete(id)) this.listener?.(new Map());
      });
      return;
    }
  }

  /** Failed or empty lookups so far, by name, for `limpet_discovery_errors_total`. */
  get errors(): ReadonlyMap<string, number> {
    return this.failedLookups;
  }

  stop(): void {
    this.stopped = true;
    for (const source of this.sources.values()) this.forget(source);
    this.lookup.cancel();
  }

  /** Takes the discovery entries of `entries` as the sources; returns the new ones. */
  private reconcile(entries: readonly BackendEntry[]): Source[] {
    const wanted = new Map<string, DiscoveryEntry>();
    for (const entry of entries) if (!('id' in entry)) wanted.set(sourceKey(entry), entry);
    for (const [key, source] of this.sources) {
      if (wanted.has(key)) continue;
      this.forget(source);
      this.sources.delete(key);
      this.failedLookups.delete(discoveryName(source.entry));
    }
    const added: Source[] = [];
    for (const [key, entry] of wanted) {
      const existing = this.sources.get(key);
      if (existing !== undefined) {
        existing.entry = entry;
        continue;
      }
      const source: Source = { entry, known: null, leaving: new Map(), timer: null, looking: false, outage: null };
      this.sources.set(key, source);
      this.failedLookups.set(discoveryName(entry), 0);
      added.push(source);
    }
    return added;
  }

  private forget(source: Source): void {
    if (source.timer !== null) clearTimeout(source.timer);
    source.timer = null;
    source.leaving.clear();
  }

  /** One lookup of a source, then the next one scheduled; a source already being looked up is left to it. */
  private async refresh(source: Source): Promise<void> {
    if (source.looking) return;
    source.looking = true;
    const { entry } = source;
    let answer: LookupAnswer | DiscoveryLookupError;
    try {
      answer = 'dns' in entry ? await this.lookup.addresses(entry.dns.name, entry.dns.port, entry.weight) : await this.lookup.service(entry.srv);
    } catch (error) {
      answer = error instanceof DiscoveryLookupError ? error : new DiscoveryLookupError(discoveryName(entry), false, String(error), { cause: error });
    }
    source.looking = false;
    // Stopped, or the name left the config while it was looked up: nobody wants the answer.
    if (this.stopped || this.sources.get(sourceKey(source.entry)) !== source) return;
    let wait = this.settings.interval;
    if (answer instanceof DiscoveryLookupError) this.failed(source, answer);
    else {
      this.answered(source, answer);
      if (answer.ttlMs !== null) wait = Math.min(wait, Math.max(answer.ttlMs, SHORTEST_TTL_MS));
    }
    this.schedule(source, wait);
  }

  private schedule(source: Source, wait: number): void {
    if (source.timer !== null) clearTimeout(source.timer);
    source.timer = setTimeout(() => {
      source.timer = null;
      void this.refresh(source);
    }, wait).unref();
  }

  private failed(source: Source, error: DiscoveryLookupError): void {
    const name = discoveryName(source.entry);
    this.failedLookups.set(name, (this.failedLookups.get(name) ?? 0) + 1);
    if (source.outage !== null) {
      source.outage.failures++;
      return;
    }
    source.outage = { since: Date.now(), failures: 1 };
    this.logger.warn({
      msg: 'discovery lookup failed; the last known backends of this name stay',
      name,
      error: error.message,
      backends: source.known?.size ?? 0,
    });
  }

  private answered(source: Source, answer: LookupAnswer): void {
    const { entry } = source;
    const name = discoveryName(entry);
    if (source.outage !== null) {
      this.logger.info({ msg: 'discovery lookup answers again', name, failedLookups: source.outage.failures, forMs: Date.now() - source.outage.since });
      source.outage = null;
    }
    const found = new Map(answer.targets.map((target) => [discoveredId(entry, target), target] as const).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    const before = source.known ?? new Map<string, FoundTarget>();
    const drain = new Map<string, DrainSetting>();
    const added: string[] = [];
    const returned: string[] = [];
    const left: string[] = [];
    let reweighted = false;
    for (const [id, target] of found) {
      if (source.leaving.delete(id)) {
        drain.set(id, { draining: false, deadline: null });
        returned.push(id);
      } else if (!before.has(id)) added.push(id);
      // SRV records carry weights; a dns entry's weight is the file's, applied on reload.
      else if ('srv' in entry && before.get(id)?.weight !== target.weight) reweighted = true;
    }
    for (const [id, target] of before) {
      if (found.has(id)) continue;
      left.push(id);
      const deadline = this.settings.drainDeadline;
      // A deadline of 0: no drain, the address goes at once.
      if (deadline === 0) continue;
      drain.set(id, { draining: true, deadline });
      source.leaving.set(id, { target, deadline });
    }
    source.known = found;
    if (added.length + returned.length + left.length === 0 && !reweighted) return;
    this.logger.info({ msg: 'discovered backends changed', name, added, returned, left, reweighted, drainDeadline: this.settings.drainDeadline });
    this.listener?.(drain);
  }
}
