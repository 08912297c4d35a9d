import { createServer, STATUS_CODES, type Server, type IncomingMessage, type ServerResponse, type ServerOptions } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { LimpetConfig } from './config/schema.js';
import type { Logger } from './log.js';
import { ClientAddressResolver } from './affinity/client-address.js';
import { AffinityRouter, type AffinitySettings, type RemapReason } from './affinity/router.js';
import { randomSecret } from './affinity/cookie.js';
import { ActiveHealthChecker, type HealthCheckSettings } from './health/active-checks.js';
import { PassiveEjector } from './health/passive-ejection.js';
import { Backend, type PoolSettings } from './upstream/backend.js';
import { BackendSet } from './upstream/backend-set.js';
import { Exchange, type ExchangeObserver, type ForwardingContext } from './proxy/exchange.js';
import { UpgradeForwarder } from './proxy/websocket.js';
import { headLimitStatus } from './proxy/client-limits.js';
import { ProxyMetrics } from './metrics.js';
import { AdminServer } from './admin/admin-server.js';
import { AggregatorRegistry, type MetricObjectWithValues, type MetricValue } from 'prom-client';

/**
 * The part a process plays. `standalone`: everything in one process. With `workers` > 1 the
 * `primary` holds the one health view (checks, passive ejection), the admin port and the reloader,
 * and serves no traffic; each `worker` serves traffic and reports what it learns to the primary.
 */
export type ProcessRole =
  | { kind: 'standalone' }
  | {
      kind: 'primary';
      /** Sends a backend's state to every worker. */
      broadcastState(backend: Backend): void;
      /** Metrics of every worker, for one aggregated /metrics. */
      workerMetrics(): Promise<MetricObjectWithValues<MetricValue<string>>[][]>;
      /** Live per-backend figures summed over the workers. */
      workerLive(id: string): LiveFigures;
    }
  | {
      kind: 'worker';
      reportFailure(backendId: string, message: string): void;
      reportPin(key: string, backendId: string): void;
    };

export interface LimpetOptions {
  logger: Logger;
  role?: ProcessRole;
}

/** What a backend is doing right now, for the admin API and status page. */
export interface LiveFigures {
  inflight: number;
  websockets: number;
  requests: number;
  errors: number;
  remapsIn: number;
}

/** A backend's shared state as the primary broadcasts it. */
export interface BackendStateUpdate {
  id: string;
  healthy: boolean;
  ejected: boolean;
  draining: boolean;
  lastCheck: Backend['lastCheck'];
  lastError: string | null;
}

/**
 * A running proxy: the listener, the backends with their live state, health checking, and the
 * router. Everything a request needs is reached through `context`, replaced whole on reload.
 */
export class Limpet {
  /** The proxy listener; null in a cluster primary, which serves no traffic itself. */
  readonly server: Server | null;
  private context: ForwardingContext;
  private readonly backendsById = new Map<string, Backend>();
  private readonly health: ActiveHealthChecker;
  private readonly passive: PassiveEjector;
  private readonly upgrades: UpgradeForwarder;
  readonly metrics: ProxyMetrics;
  /** The admin listener; null in a worker (the primary serves it for all). */
  readonly admin: AdminServer | null;
  private readonly role: ProcessRole;
  private readonly sweepTimer: NodeJS.Timeout;
  private closing = false;

  private constructor(
    private config: LimpetConfig,
    private readonly logger: Logger,
    role: ProcessRole,
  ) {
    this.role = role;
    this.metrics = new ProxyMetrics({
      backends: () => this.backends,
      sessionsByBackend: () => this.context.router.pins.countByBackend(),
    });
    const set = this.buildBackendSet(config);
    const clients = new ClientAddressResolver(config.trustedProxies);
    const router = new AffinityRouter(affinitySettings(config), this.cookieSecret(config), clients, set, this.onRemap);
    this.context = this.buildContext(config, router, clients);
    this.passive = new PassiveEjector(config.passive, (backend) => {
      this.logger.warn({ msg: 'backend ejected', backend: backend.id, reason: backend.lastError, failures: config.passive.maxFails });
      this.backendStateChanged(backend);
    });
    this.health = new ActiveHealthChecker(healthSettings(config), {
      checked: (backend, ok) => this.metrics.healthChecks.inc({ backend: backend.id, result: ok ? 'pass' : 'fail' }),
      changed: (backend) => {
        this.logger.warn({ msg: backend.available ? 'backend up' : 'backend down', backend: backend.id, lastCheck: backend.lastCheck });
        this.backendStateChanged(backend);
      },
    });
    if (role.kind !== 'worker') this.health.track(set.backends);
    if (role.kind === 'worker') {
      router.pins.onWrite = (key, backend) => role.reportPin(key, backend.id);
    }
    this.upgrades = new UpgradeForwarder(
      () => this.context,
      () => ({ connectTimeout: this.config.timeouts.connect, tunnelIdle: this.config.timeouts.tunnel }),
    );
    const serverOptions: ServerOptions = {
      maxHeaderSize: config.limits.maxHeaderSize,
      // Client timers are checked this often; Node's 30 s default would let a slowloris linger.
      connectionsCheckingInterval: CLIENT_TIMER_CHECK_MS,
      noDelay: true,
    };
    if (role.kind === 'primary') this.server = null;
    else {
      const server =
        config.tls === null
          ? createServer(serverOptions, this.handleRequest)
          : createTlsServer({ ...serverOptions, ...readTlsFiles(config.tls) }, this.handleRequest);
      applyClientLimits(server, config);
      server.on('upgrade', this.handleUpgrade);
      server.on('clientError', this.onClientError);
      server.on('checkContinue', this.handleExpectContinue);
      server.on('connection', this.onClientConnection);
      server.on('drop', this.onConnectionDropped);
      this.server = server;
    }
    this.admin =
      role.kind === 'worker'
        ? null
        : new AdminServer(
            {
              backends: () => this.backends,
              sessionsByBackend: () => this.context.router.pins.countByBackend(),
              live: (backend) => this.live(backend),
              setDraining: (id, draining) => this.setDraining(id, draining),
              metricsContentType: () => this.metrics.contentType(),
              metrics: () => this.exposition(),
            },
            config.admin.token,
            logger,
          );
    const sweepEvery = Math.min(10_000, Math.max(1_000, Math.floor(config.affinity.sessionTtl / 4)));
    this.sweepTimer = setInterval(() => this.context.router.pins.sweep(Math.floor(Date.now() / 1000)), sweepEvery).unref();
  }

  static async start(config: LimpetConfig, options: LimpetOptions): Promise<Limpet> {
    const limpet = new Limpet(config, options.logger, options.role ?? { kind: 'standalone' });
    await limpet.listen();
    return limpet;
  }

  get address(): AddressInfo {
    return this.server?.address() as AddressInfo;
  }

  get adminAddress(): AddressInfo {
    return this.admin?.server.address() as AddressInfo;
  }

  /** Applies a backend state broadcast by the primary (worker). */
  applyBackendState(update: BackendStateUpdate): void {
    const backend = this.backendsById.get(update.id);
    if (backend === undefined) return;
    backend.healthy = update.healthy;
    backend.awaitingFirstCheck = false;
    backend.ejected = update.ejected;
    backend.draining = update.draining;
    backend.lastCheck = update.lastCheck;
    backend.lastError = update.lastError;
    this.backendStateChanged(backend);
  }

  /** Records a pin another worker made, so every worker places that client alike. */
  applyPin(key: string, backendId: string): void {
    const backend = this.backendsById.get(backendId);
    if (backend !== undefined) this.context.router.pins.store(key, backend, Math.floor(Date.now() / 1000));
  }

  /** Reports a connection failure seen by a worker (primary): passive detection counts it. */
  recordFailure(backendId: string, message: string): void {
    const backend = this.backendsById.get(backendId);
    if (backend === undefined) return;
    backend.lastError = message;
    this.passive.recordFailure(backend, Date.now());
  }

  /** Every backend's shareable state, for a worker that joins. */
  backendStates(): BackendStateUpdate[] {
    return this.backends.map(backendState);
  }

  /** Every remembered pin, for a worker that joins. */
  pinSnapshot(): [string, string][] {
    return this.context.router.pins.snapshot();
  }

  private live(backend: Backend): LiveFigures {
    if (this.role.kind === 'primary') return this.role.workerLive(backend.id);
    const meters = this.metrics.backend(backend);
    return { inflight: backend.inflight, websockets: backend.tunnels, requests: meters.requests, errors: meters.errors, remapsIn: meters.remapsIn };
  }

  /** Local figures of every backend, which a worker sends to the primary. */
  liveFigures(): Record<string, LiveFigures> {
    return Object.fromEntries(this.backends.map((backend) => [backend.id, this.live(backend)]));
  }

  private async exposition(): Promise<string> {
    if (this.role.kind !== 'primary') return this.metrics.exposition();
    const own = await this.metrics.registry.getMetricsAsJSON();
    const workers = await this.role.workerMetrics();
    return AggregatorRegistry.aggregate([own, ...workers]).metrics();
  }

  get backends(): readonly Backend[] {
    return this.context.router.backends.backends;
  }

  backend(id: string): Backend | undefined {
    return this.backendsById.get(id);
  }

  /** Drains or undrains a backend at run time: its pinned clients stay, new clients go elsewhere. */
  setDraining(id: string, draining: boolean): Backend | undefined {
    const backend = this.context.router.backends.get(id);
    if (backend === undefined || backend.draining === draining) return backend;
    backend.draining = draining;
    this.logger.info({ msg: draining ? 'backend draining' : 'backend undrained', backend: id });
    this.backendStateChanged(backend);
    return backend;
  }

  /**
   * Applies a new, already validated config atomically between two requests. Backend state, counters,
   * remembered pins and open tunnels survive. Returns what could not change without a restart.
   */
  reload(config: LimpetConfig): string[] {
    const old = this.config;
    const needsRestart: string[] = [];
    if (!sameHostPort(old.listen, config.listen)) needsRestart.push('listen');
    if (!sameHostPort(old.admin.listen, config.admin.listen)) needsRestart.push('admin.listen');
    if (old.workers !== config.workers) needsRestart.push('workers');
    if (old.workerBalance !== config.workerBalance) needsRestart.push('workerBalance');
    if (old.limits.maxHeaderSize !== config.limits.maxHeaderSize) needsRestart.push('limits.maxHeaderSize');
    if ((old.tls === null) !== (config.tls === null)) needsRestart.push('tls (switching between HTTP and HTTPS)');
    else if (config.tls !== null && this.server !== null && 'setSecureContext' in this.server) {
      (this.server as import('node:https').Server).setSecureContext(readTlsFiles(config.tls));
    }
    // What cannot change live keeps its old value, so the running state stays coherent.
    const applied: LimpetConfig = {
      ...config,
      listen: old.listen,
      admin: { ...config.admin, listen: old.admin.listen },
      workers: old.workers,
      workerBalance: old.workerBalance,
      limits: { ...config.limits, maxHeaderSize: old.limits.maxHeaderSize },
    };
    if (needsRestart.some((key) => key.startsWith('tls'))) applied.tls = old.tls;

    const previous = this.context.router.backends;
    const drainBefore = new Map(old.backends.map((entry) => [entry.id, entry.drain]));
    const set = this.buildBackendSet(applied, true);
    for (const entry of applied.backends) {
      const backend = set.get(entry.id) as Backend;
      const before = drainBefore.get(entry.id);
      // A drain set through the admin API stays until the file itself changes that backend's drain.
      if (before !== undefined && before !== entry.drain) backend.draining = entry.drain;
    }
    for (const backend of previous.backends) {
      if (set.get(backend.id) === backend) continue;
      backend.index = -1;
      this.backendsById.delete(backend.id);
      this.passive.forget(backend);
      // In-flight requests finish on the old pool; close() waits for them.
      void backend.close();
      this.logger.info({ msg: 'backend removed', backend: backend.id });
    }
    const clients = new ClientAddressResolver(applied.trustedProxies);
    const router = this.context.router;
    router.reconfigure(affinitySettings(applied), this.cookieSecret(applied), clients, set);
    this.passive.configure(applied.passive);
    if (this.role.kind !== 'worker') this.health.track(set.backends, healthSettings(applied));
    this.admin?.setToken(applied.admin.token);
    this.logger.level = applied.log.level;
    if (this.server !== null) applyClientLimits(this.server, applied);
    this.config = applied;
    this.context = this.buildContext(applied, router, clients);
    return needsRestart;
  }

  get currentConfig(): LimpetConfig {
    return this.config;
  }

  /**
   * Graceful stop: no new connections, in-flight requests finish (keep-alive connections close as
   * they go idle), tunnels get WebSocket close 1001, then backend pools close.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.sweepTimer);
    this.health.stop();
    const server = this.server;
    const closed = server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    server?.closeIdleConnections();
    const idleSweep = setInterval(() => server?.closeIdleConnections(), 100);
    this.upgrades.closeAll();
    await Promise.all([closed, this.admin?.close()]);
    clearInterval(idleSweep);
    await Promise.all([...this.backendsById.values()].map((backend) => backend.close()));
  }

  /** Cuts every remaining client connection (shutdown deadline passed). */
  closeAllConnections(): void {
    this.server?.closeAllConnections();
  }

  private readonly handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (this.closing) res.shouldKeepAlive = false;
    new Exchange(this.context, req, res).start();
  };

  /** `Expect: 100-continue`: a request over any limit is refused before the client sends its body. */
  private readonly handleExpectContinue = (req: IncomingMessage, res: ServerResponse): void => {
    if (headLimitStatus(req, this.context.limits, req.headers['content-length']) === 0) res.writeContinue();
    this.handleRequest(req, res);
  };

  private readonly onClientConnection = (socket: Socket): void => {
    this.metrics.clientConnections++;
    socket.once('close', this.onClientConnectionClosed);
  };

  private readonly onClientConnectionClosed = (): void => {
    this.metrics.clientConnections--;
  };

  private readonly onConnectionDropped = (): void => {
    this.metrics.connectionsDropped.inc();
  };

  /** A request Node could not parse: answer 400 (431 for oversized heads, 408 for slow ones) and close; never crash. */
  private readonly onClientError = (error: NodeJS.ErrnoException, socket: Duplex): void => {
    if (!socket.writable || (socket as Socket).bytesWritten > 0) {
      socket.destroy();
      return;
    }
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    this.metrics.requestCompleted(null, status, 0);
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
  };

  private readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    this.upgrades.handle(req, socket, head);
  };

  private readonly onRemap = (from: string, to: Backend, reason: RemapReason): void => {
    this.metrics.remapped(from, to, reason);
    this.logger.debug({ msg: 'client remapped', from, to: to.id, reason });
  };

  /** One place reacts to any backend state change: selection flags, tunnels of a dead backend. */
  private backendStateChanged(backend: Backend): void {
    this.context.router.backends.refresh();
    if (!backend.available) this.upgrades.closeBackend(backend);
    if (this.role.kind === 'primary') this.role.broadcastState(backend);
  }

  private async listen(): Promise<void> {
    const { host, port } = this.config.listen;
    const server = this.server;
    if (server !== null) {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    }
    const admin = await this.admin?.listen(this.config.admin.listen.host, this.config.admin.listen.port);
    if (this.role.kind === 'worker') return;
    this.logger.info({
      msg: 'listening',
      address: server === null ? `${host}:${port} (workers)` : `${this.address.address}:${this.address.port}`,
      admin: admin === undefined ? null : `${admin.address}:${admin.port}`,
      affinity: this.config.affinity.by,
      backends: this.backends.map((backend) => backend.id),
    });
  }

  /** Backends for a config: existing ones (by id) keep their state; on reload, new ones wait for a passing check. */
  private buildBackendSet(config: LimpetConfig, reloading = false): BackendSet {
    const pool = poolSettings(config);
    const backends = config.backends.map((entry) => {
      let backend = this.backendsById.get(entry.id);
      if (backend === undefined) {
        backend = new Backend(entry, pool);
        if (reloading) {
          backend.healthy = false;
          backend.awaitingFirstCheck = true;
        }
        this.backendsById.set(entry.id, backend);
        this.metrics.backend(backend);
      } else {
        backend.reconfigure(entry, pool);
      }
      return backend;
    });
    return new BackendSet(backends);
  }

  private generatedSecret: Buffer | null = null;

  /** The configured secret, or one random secret for the life of the process (so reloads keep cookies valid). */
  private cookieSecret(config: LimpetConfig): string | Buffer {
    if (config.affinity.cookie.secret !== '') return config.affinity.cookie.secret;
    if (this.generatedSecret === null) {
      this.generatedSecret = randomSecret();
      if (config.affinity.by === 'cookie') {
        this.logger.warn({
          msg: 'affinity.cookie.secret is not set: using a random secret, so affinity cookies will not survive a restart and are not shared with other replicas',
        });
      }
    }
    return this.generatedSecret;
  }

  private buildContext(config: LimpetConfig, router: AffinityRouter, clients: ClientAddressResolver): ForwardingContext {
    return {
      router,
      clients,
      responseTimeout: config.timeouts.response,
      retries: config.retries,
      protocol: config.tls === null ? 'http' : 'https',
      affinityHeader: config.affinity.by === 'header' ? config.affinity.header.toLowerCase() : null,
      limits: config.limits,
      accessLog: config.log.access ? this.logger : null,
      observer: this.observer,
    };
  }

  private readonly observer: ExchangeObserver = {
    upstreamFailed: (backend, error) => {
      backend.lastError = error.message;
      if (this.role.kind === 'worker') this.role.reportFailure(backend.id, error.message);
      else this.passive.recordFailure(backend, Date.now());
    },
    retried: (failed) => this.metrics.backend(failed).retries.inc(),
    completed: (backend, status, seconds) => this.metrics.requestCompleted(backend, status, seconds),
  };
}

function affinitySettings(config: LimpetConfig): AffinitySettings {
  const { affinity } = config;
  return {
    by: affinity.by,
    cookie: {
      name: affinity.cookie.name,
      maxAge: affinity.cookie.maxAge,
      path: affinity.cookie.path,
      domain: affinity.cookie.domain,
      httpOnly: affinity.cookie.httpOnly,
      secure: affinity.cookie.secure ?? config.tls !== null,
      sameSite: affinity.cookie.sameSite,
    },
    headerName: affinity.header.toLowerCase(),
    onRecovery: affinity.onRecovery,
    sessionTtl: affinity.sessionTtl,
    maxSessions: affinity.maxSessions,
  };
}

/** A backend's state as the primary broadcasts it to workers. */
export function backendState(backend: Backend): BackendStateUpdate {
  return {
    id: backend.id,
    healthy: backend.healthy,
    ejected: backend.ejected,
    draining: backend.draining,
    lastCheck: backend.lastCheck,
    lastError: backend.lastError,
  };
}

function sameHostPort(a: { host: string; port: number }, b: { host: string; port: number }): boolean {
  return a.host === b.host && a.port === b.port;
}

function readTlsFiles(tls: { cert: string; key: string }): { cert: Buffer; key: Buffer } {
  return { cert: readFileSync(tls.cert), key: readFileSync(tls.key) };
}

/** How often Node checks client header and request timers. */
const CLIENT_TIMER_CHECK_MS = 500;

/** The client-side limits a running listener can take without a restart. */
function applyClientLimits(server: Server, config: LimpetConfig): void {
  const { clientIdle, clientHeaders, clientRequest } = config.timeouts;
  server.keepAliveTimeout = clientIdle;
  server.requestTimeout = clientRequest;
  // Node refuses a header timeout longer than the whole-request one; the shorter one rules anyway.
  server.headersTimeout = clientRequest === 0 ? clientHeaders : Math.min(clientHeaders, clientRequest);
  // Node would drop fields past its count silently (Host among them, making a 400); the exchange
  // counts them and answers 431 instead, while maxHeaderSize bounds what the parser keeps.
  server.maxHeadersCount = 0;
  server.maxConnections = config.limits.maxConnections === 0 ? Infinity : config.limits.maxConnections;
}

function healthSettings(config: LimpetConfig): HealthCheckSettings {
  return { ...config.healthCheck, cooldown: config.passive.cooldown };
}

function poolSettings(config: LimpetConfig): PoolSettings {
  return { connectTimeout: config.timeouts.connect, keepAliveTimeout: 60_000, maxConnections: config.limits.maxBackendConnections };
}
