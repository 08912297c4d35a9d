import { Client, Pool } from 'undici';

/** How limpet's connections to one backend behave. */
export interface PoolSettings {
  connectTimeout: number;
  /** Upper bound on pooled keep-alive idle time; undici also honours the backend's own Keep-Alive hint. */
  keepAliveTimeout: number;
  /** Most open connections to the backend (this process); requests beyond wait in order. 0: no limit. */
  maxConnections: number;
}

/** The pool that forwarded requests share. */
export function createPool(url: string, settings: PoolSettings): Pool {
  return new Pool(url, {
    connectTimeout: settings.connectTimeout,
    keepAliveTimeout: Math.min(4_000, settings.keepAliveTimeout),
    keepAliveMaxTimeout: settings.keepAliveTimeout,
    // The proxy frames every request itself and sends one at a time per connection.
    pipelining: 1,
    connections: settings.maxConnections === 0 ? null : settings.maxConnections,
  });
}

/** One connection of its own to the backend, outside the pool (checks under a cap, stale-socket resends). */
export function singleConnection(url: string, settings: PoolSettings): Client {
  return new Client(url, { connectTimeout: settings.connectTimeout, pipelining: 1 });
}

export function samePoolSettings(a: PoolSettings, b: PoolSettings): boolean {
  return a.connectTimeout === b.connectTimeout && a.keepAliveTimeout === b.keepAliveTimeout && a.maxConnections === b.maxConnections;
}
