import type { Socket } from 'node:net';
import { buildConnector, Client, Pool } from 'undici';
import { watchInterimResponses } from './interim-responses.js';

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
    connect: markingConnector(settings.connectTimeout),
    keepAliveTimeout: Math.min(4_000, settings.keepAliveTimeout),
    keepAliveMaxTimeout: settings.keepAliveTimeout,
    // The proxy frames every request itself and sends one at a time per connection.
    pipelining: 1,
    connections: settings.maxConnections === 0 ? null : settings.maxConnections,
  });
}

/** One connection of its own to the backend, outside the pool (checks under a cap, stale-socket resends). */
export function singleConnection(url: string, settings: PoolSettings): Client {
  return new Client(url, { connect: markingConnector(settings.connectTimeout), pipelining: 1 });
}

/**
 * undici's own connector, plus interim responses made safe for undici (interim-responses.ts) and a
 * mark on every error a connection meets: whether it had already read earlier responses. A reset on such a connection before any answer is most likely the
 * backend closing it idle as the request arrived (see errors.ts); Node's socket errors carry no
 * such fact, and undici hands the error object itself to the request. Per connection, not per request.
 */
function markingConnector(timeout: number): buildConnector.connector {
  const connect = buildConnector({ timeout });
  return (options, callback) =>
    connect(options, (error, socket) => {
      // On failure undici's connector passes no socket at all.
      if (socket) {
        socket.prependListener('error', markReuse);
        watchInterimResponses(socket as Socket);
      }
      // undici's callback type is a union of its two outcomes; pass them on as given.
      (callback as (error: Error | null, socket: Socket | null) => void)(error, socket);
    });
}

function markReuse(this: Socket, error: Error & { connectionReused?: boolean }): void {
  error.connectionReused = this.bytesRead > 0;
}

export function samePoolSettings(a: PoolSettings, b: PoolSettings): boolean {
  return a.connectTimeout === b.connectTimeout && a.keepAliveTimeout === b.keepAliveTimeout && a.maxConnections === b.maxConnections;
}
