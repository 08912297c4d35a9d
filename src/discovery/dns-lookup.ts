import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { DiscoveryLookupError } from '../errors.js';

/** One backend a lookup found: an address, the port it serves on, and its weight. */
export interface FoundTarget {
  address: string;
  port: number;
  weight: number;
}

/** What one lookup found, and how long the answer may be kept (the shortest TTL in it; null when unknown). */
export interface LookupAnswer {
  targets: FoundTarget[];
  ttlMs: number | null;
}

/**
 * How long one query waits for the server, and how often it asks. A DNS server that takes more than
 * a second is as good as down for this purpose: the last known backends keep serving meanwhile, and
 * a stalled server must not hold the next lookup back for long (glibc waits 5 s, twice).
 */
const QUERY_TIMEOUT_MS = 1000;
const QUERY_TRIES = 2;

/** Answers that say the name has no records of that type (ENODATA) or does not exist (ENOTFOUND): no failure of the server. */
const NOTHING_THERE = new Set(['ENODATA', 'ENOTFOUND']);

/** SRV weights are 0-65535, backend weights 1-1000: 0 ("rarely") becomes 1, more than 1000 becomes 1000. */
export function backendWeightOfSrv(weight: number): number {
  return Math.min(1000, Math.max(1, weight));
}

/**
 * DNS queries for discovery, through node's c-ares resolver (not getaddrinfo, so no thread-pool slot
 * is held and every answer carries its TTL), asking the given servers or those of /etc/resolv.conf.
 * It only asks and parses; what to do with an answer is BackendDiscovery's.
 */
export class DnsLookup {
  private readonly resolver = new Resolver({ timeout: QUERY_TIMEOUT_MS, tries: QUERY_TRIES });

  constructor(servers: readonly string[]) {
    if (servers.length > 0) this.resolver.setServers(servers);
  }

  /** Every A and AAAA address of `name`, each a backend at `port` with `weight`. */
  async addresses(name: string, port: number, weight: number): Promise<LookupAnswer> {
    const found = await this.addressesOf(name);
    if (found.addresses.length === 0) throw new DiscoveryLookupError(name, true, `${name} has no A or AAAA records`);
    return { targets: found.addresses.map((address) => ({ address, port, weight })), ttlMs: found.ttlMs };
  }

  /**
   * The targets of an SRV name. Only the lowest priority value is used: RFC 2782 sends clients to
   * the others only when none of those can be reached, and limpet's own health checks and failover
   * already move clients among the backends it has. Each address of a target is a backend at the
   * target's port, with the target's weight.
   */
  async service(name: string): Promise<LookupAnswer> {
    let records;
    try {
      records = await this.resolver.resolveSrv(name);
    } catch (error) {
      throw lookupError(name, error);
    }
    // A single target "." means the service is decidedly not available at this name (RFC 2782).
    const usable = records.filter((record) => record.name !== '' && record.name !== '.');
    if (usable.length === 0) throw new DiscoveryLookupError(name, true, `${name} has no SRV records`);
    const priority = Math.min(...usable.map((record) => record.priority));
    const chosen = usable.filter((record) => record.priority === priority);
    const resolved = await Promise.all(chosen.map((record) => (isIP(record.name) === 0 ? this.addressesOf(record.name) : { addresses: [record.name], ttlMs: null })));
    const byAddress = new Map<string, FoundTarget>();
    let ttlMs: number | null = null;
    resolved.forEach((found, i) => {
      const record = chosen[i]!;
      ttlMs = shorter(ttlMs, found.ttlMs);
      for (const address of found.addresses) {
        const key = `${address} ${record.port}`;
        const weight = backendWeightOfSrv(record.weight);
        // Two targets that name the same address and port are one backend.
        if ((byAddress.get(key)?.weight ?? 0) < weight) byAddress.set(key, { address, port: record.port, weight });
      }
    });
    if (byAddress.size === 0) throw new DiscoveryLookupError(name, true, `no target of ${name} has an A or AAAA record`);
    return { targets: [...byAddress.values()], ttlMs };
  }

  /** Stops the queries in flight (they fail with ECANCELLED). */
  cancel(): void {
    this.resolver.cancel();
  }

  /** A and AAAA records of a name; none of either is an empty list, a server failure throws. */
  private async addressesOf(name: string): Promise<{ addresses: string[]; ttlMs: number | null }> {
    const answers = await Promise.allSettled([this.resolver.resolve4(name, { ttl: true }), this.resolver.resolve6(name, { ttl: true })]);
    const addresses: string[] = [];
    let ttlMs: number | null = null;
    for (const answer of answers) {
      if (answer.status === 'rejected') {
        // A failed family fails the lookup, so a set is never taken for complete with half of it missing.
        if (!NOTHING_THERE.has((answer.reason as NodeJS.ErrnoException).code ?? '')) throw lookupError(name, answer.reason);
        continue;
      }
      for (const record of answer.value) {
        addresses.push(record.address);
        ttlMs = shorter(ttlMs, record.ttl * 1000);
      }
    }
    return { addresses, ttlMs };
  }
}

function shorter(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  return b === null ? a : Math.min(a, b);
}

function lookupError(name: string, error: unknown): DiscoveryLookupError {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  const empty = NOTHING_THERE.has(code);
  const reason = empty ? (code === 'ENOTFOUND' ? 'no such name' : 'no records') : (error as Error).message;
  return new DiscoveryLookupError(name, empty, `${name}: ${reason}`, { cause: error });
}
