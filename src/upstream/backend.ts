import { Client, Pool, type Dispatcher } from 'undici';

export type BackendStatus = 'up' | 'down' | 'draining';

export interface BackendSettings {
  id: string;
  url: string;
  weight: number;
  drain: boolean;
  healthPath: string | null;
}

export interface PoolSettings {
  connectTimeout: number;
  /** Upper bound on pooled keep-alive idle time; undici also honours the backend's own Keep-Alive hint. */
  keepAliveTimeout: number;
  /** Most open connections to the backend (this process); requests beyond wait in order. 0: no limit. */
  maxConnections: number;
}

export interface HealthCheckResult {
  at: number; // epoch ms
  ok: boolean;
  status: number | null;
  error: string | null;
  durationMs: number;
}

let nextSerial = 1;

/**
 * One backend's live state. It is keyed by id and outlives config reloads: a reload updates its
 * url, weight and drain flag but keeps health, counters and the pins that point at it.
 * `available` is the one question selection asks; health checks and passive ejection feed it.
 */
export class Backend {
  /** Small process-unique number, so pin tables can refer to a backend without holding strings. */
  readonly serial = nextSerial++;
  readonly id: string;
  url: string;
  /** The parsed url, for connections made outside the pool (WebSocket tunnels). */
  target: URL;
  weight: number;
  healthPath: string | null;
  dispatcher: Pool;
  /** Draining: keeps its pinned clients, takes no new ones. */
  draining: boolean;
  /** Verdict of the active checks. Starts up so a fresh proxy serves at once. */
  healthy = true;
  /** Added by a reload: down until its first check, which alone decides (no `rise` wait). */
  awaitingFirstCheck = false;
  /** Ejected by passive detection; cleared only by a passing active check after the cooldown. */
  ejected = false;
  ejectedAt = 0;
  /** Position in the current backend set; -1 once removed from the config. */
  index = -1;
  inflight = 0;
  /** Requests waiting for one of the backend's `maxConnections` connections to come free. */
  queued = 0;
  /** Open WebSocket (and other upgraded) tunnels to this backend. */
  tunnels = 0;
  lastCheck: HealthCheckResult | null = null;
  lastError: string | null = null;
  private pool: PoolSettings;
  /** The active checks' own connection while the pool is capped (see checkDispatcher). */
  private checkClient: Client | null = null;

  constructor(settings: BackendSettings, pool: PoolSettings) {
    this.pool = pool;
    this.id = settings.id;
    this.url = settings.url;
    this.target = new URL(settings.url);
    this.weight = settings.weight;
    this.healthPath = settings.healthPath;
    this.draining = settings.drain;
    this.dispatcher = createPool(settings.url, pool);
  }

  /** Connection cap of the current pool; 0 means none. */
  get maxConnections(): number {
    return this.pool.maxConnections;
  }

  /**
   * Where active health checks go: the pool, or under a connection cap a connection of their own,
   * so that a backend whose every allowed connection is busy is not marked down for it (HAProxy
   * keeps checks outside `maxconn` too).
   */
  get checkDispatcher(): Dispatcher {
    if (this.pool.maxConnections === 0) return this.dispatcher;
    return (this.checkClient ??= this.singleConnection());
  }

  /** Closes the pool and the check connection once their requests are done. */
  async close(): Promise<void> {
    await Promise.all([this.dispatcher.close(), this.checkClient?.close()]);
  }

  get available(): boolean {
    return this.healthy && !this.ejected && this.index >= 0;
  }

  get status(): BackendStatus {
    if (!this.healthy || this.ejected) return 'down';
    return this.draining ? 'draining' : 'up';
  }

  /**
   * Sends one request on a connection of its own, closed once the request is done. A resend after a
   * stale keep-alive socket goes this way: the pool may hold more sockets the backend has closed.
   */
  dispatchOnNewConnection(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    const client = this.singleConnection();
    client.dispatch(options, handler);
    // Resolves once the one request is done; it cannot fail, as nothing else closes this client.
    void client.close();
  }

  /**
   * Applies a reloaded config entry. A new URL or new pool settings get new connections; the old
   * pool is closed once it has finished its requests (queued ones included).
   */
  reconfigure(settings: BackendSettings, pool: PoolSettings): void {
    this.weight = settings.weight;
    this.healthPath = settings.healthPath;
    const old = this.pool;
    const samePool = old.connectTimeout === pool.connectTimeout && old.keepAliveTimeout === pool.keepAliveTimeout &&
      old.maxConnections === pool.maxConnections;
    if (settings.url === this.url && samePool) return;
    void this.close();
    this.checkClient = null;
    this.pool = pool;
    this.url = settings.url;
    this.target = new URL(settings.url);
    this.dispatcher = createPool(settings.url, pool);
  }

  /** One connection of its own to the backend, outside the pool. */
  private singleConnection(): Client {
    return new Client(this.url, { connectTimeout: this.pool.connectTimeout, pipelining: 1 });
  }
}

function createPool(url: string, settings: PoolSettings): Pool {
  return new Pool(url, {
    connectTimeout: settings.connectTimeout,
    keepAliveTimeout: Math.min(4_000, settings.keepAliveTimeout),
    keepAliveMaxTimeout: settings.keepAliveTimeout,
    // The proxy frames every request itself and sends one at a time per connection.
    pipelining: 1,
    connections: settings.maxConnections === 0 ? null : settings.maxConnections,
  });
}
