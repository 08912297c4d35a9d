import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { AdminServer } from './admin/admin-server.js';
import { buildAffinity, type AffinityMemory } from './affinity/build-affinity.js';
import { ClientAddressResolver } from './affinity/client-address.js';
import { AffinityCookieCodec } from './affinity/cookie.js';
import { PinTable } from './affinity/pin-table.js';
import type { HostPort, LimpetConfig } from './config/schema.js';
import { ListenError } from './errors.js';
import { ActiveHealthChecker } from './health/active-checks.js';
import { PassiveEjector } from './health/passive-ejection.js';
import type { Logger } from './observe/log.js';
import { logBackendChange, LocalLimitLog, ResetFloodLog } from './observe/backend-log.js';
import type { LiveFigures } from './observe/live-figures.js';
import { ProxyMetrics } from './observe/metrics.js';
import { headLimitStatus } from './proxy/client-limits.js';
import type { ExchangeObserver, ForwardingContext } from './proxy/context.js';
import type { ClientChannel, ClientRequest, ClientResponse } from './proxy/client-channel.js';
import { ClientConnection } from './proxy/client-connection.js';
import { Exchange } from './proxy/exchange.js';
import type { Http2StreamChannel } from './proxy/h2-stream.js';
import { UpgradeForwarder } from './proxy/upgrade.js';
import { affinitySettings, forwardingSettings, healthSettings, http2Settings, poolSettings } from './runtime/settings.js';
import { CookieSecret } from './runtime/cookie-secret.js';
import { Http2Listener } from './runtime/h2-listener.js';
import { createProxyListener, listenOn, reconfigureListener } from './runtime/listener.js';
import { planReload } from './runtime/reload-plan.js';
import { STANDALONE, type ProcessRole, type RoleBehaviour } from './runtime/roles.js';
import type { Backend, BackendHealthUpdate } from './upstream/backend.js';
import { BackendRegistry } from './upstream/backend-registry.js';

export interface LimpetOptions {
  logger: Logger;
  role?: ProcessRole;
}

/**
 * A running proxy, assembled: backends and their health, affinity, the data path, the listeners.
 * Each part lives in its own module; this file only wires them and swaps the forwarding context
 * whole on reload. Read it top to bottom for the shape of the system.
 */
export class Limpet {
  /** The proxy listener; null in a cluster primary, which serves no traffic itself. */
  readonly server: Server | null;
  /** The HTTP/2 side of a TLS proxy listener (`tls.http2`); null otherwise. */
  private readonly http2: Http2Listener | null;
  /** The admin listener; null in a worker (the primary serves it for all). */
  readonly admin: AdminServer | null;
  readonly metrics: ProxyMetrics;
  private config: LimpetConfig;
  private context: ForwardingContext;
  private readonly registry: BackendRegistry;
  /** What outlives reloads: pins, the cookie codec (while the secret stays), the client resolver. */
  private readonly memory: { -readonly [K in keyof AffinityMemory]: AffinityMemory[K] };
  private readonly secrets: CookieSecret;
  private readonly health: ActiveHealthChecker | null;
  private readonly passive: PassiveEjector;
  private readonly role: RoleBehaviour;
  private readonly upgrades = new UpgradeForwarder();
  private readonly localLimits: LocalLimitLog;
  private readonly resetFloods: ResetFloodLog;
  private readonly sweepTimer: NodeJS.Timeout;
  private closing = false;

  private constructor(
    configGiven: LimpetConfig,
    private readonly logger: Logger,
    processRole: ProcessRole,
  ) {
    this.secrets = new CookieSecret(logger);
    this.localLimits = new LocalLimitLog(logger);
    this.resetFloods = new ResetFloodLog(logger);
    const config = this.secrets.fill(configGiven);
    this.config = config;

    // Backends, and everything that must hear of their changes.
    this.registry = new BackendRegistry(config.backends, poolSettings(config));
    const pins = new PinTable(config.affinity.sessionTtl, config.affinity.maxSessions);
    this.metrics = new ProxyMetrics({ backends: () => this.registry.backends, sessionsByBackend: () => pins.countByBackend() });
    this.passive = new PassiveEjector(config.passive);
    this.role = processRole.behaviour({ passive: this.passive, metrics: this.metrics });
    pins.onWrite = this.role.pinWritten;
    this.registry.listen((backend, change) => {
      if (change === 'added') return void this.metrics.backend(backend);
      if (change === 'retired') this.passive.forget(backend);
      // Tunnels of a backend that can no longer serve (down, ejected, removed) close with 1001, so
      // clients reconnect where their HTTP now goes; a draining backend keeps its clients and tunnels.
      if (!backend.available) this.upgrades.closeBackend(backend);
      // A failed backend's unanswered requests that may go elsewhere do, when some backend can serve;
      // a removed one's finish where they are.
      if (change !== 'retired' && !backend.available && this.registry.set.usableForPinned.includes(1)) backend.releaseInflight();
      logBackendChange(logger, backend, change, this.config.passive.maxFails);
      this.role.backendChanged(backend, change);
    });

    // Health: decided here, or in the process that decides for this one.
    this.health = processRole.decidesHealth
      ? new ActiveHealthChecker(healthSettings(config), (backend, ok) => this.metrics.healthChecks.inc({ backend: backend.id, result: ok ? 'pass' : 'fail' }))
      : null;
    this.health?.track(this.registry.backends);

    // Affinity and the data path.
    this.memory = {
      pins,
      codec: new AffinityCookieCodec(config.affinity.cookie.secret),
      clients: new ClientAddressResolver(config.trustedProxies),
      onRemap: (from, to, reason) => {
        this.metrics.remapped(from, to, reason);
        this.logger.debug({ msg: 'client remapped', from, to: to.id, reason });
      },
    };
    this.context = this.buildContext(config);

    // Listeners.
    this.http2 =
      processRole.servesTraffic && config.tls !== null && config.tls.http2
        ? new Http2Listener(http2Settings(config), {
            request: this.handleStream,
            refused: (status) => this.metrics.requestCompleted(null, status, 0),
            connectionOpened: () => this.metrics.http2.connections++,
            connectionClosed: () => this.metrics.http2.connections--,
            streamReset: () => this.metrics.http2.streamsReset++,
            resetFlood: (peer) => {
              this.metrics.http2.resetFloods++;
              this.resetFloods.seen(peer);
            },
          })
        : null;
    this.server = processRole.servesTraffic
      ? createProxyListener(config, {
          request: this.handleRequest,
          checkContinue: this.handleExpectContinue,
          upgrade: this.handleUpgrade,
          refused: (status) => this.metrics.requestCompleted(null, status, 0),
          maxUrlLength: () => this.context.limits.maxUrlLength,
          connectionOpened: () => this.metrics.clientConnections++,
          connectionClosed: () => this.metrics.clientConnections--,
          connectionDropped: () => this.metrics.connectionsDropped.inc(),
        }, this.http2)
      : null;
    this.admin = processRole.decidesHealth
      ? new AdminServer(
          {
            backends: () => this.registry.backends,
            sessionsByBackend: () => pins.countByBackend(),
            live: (backend) => this.role.live(backend),
            setDraining: (id, draining) => this.setDraining(id, draining),
            metricsContentType: () => this.metrics.contentType(),
            metrics: () => this.role.exposition(),
          },
          config.admin.token,
          logger,
        )
      : null;
    const sweepEvery = Math.min(10_000, Math.max(1_000, Math.floor(config.affinity.sessionTtl / 4)));
    this.sweepTimer = setInterval(() => pins.sweep(Math.floor(Date.now() / 1000)), sweepEvery).unref();
  }

  /** Builds and binds a proxy; all or nothing: when a listener cannot bind, whatever did is closed and a ListenError thrown. */
  static async start(config: LimpetConfig, options: LimpetOptions): Promise<Limpet> {
    const limpet = new Limpet(config, options.logger, options.role ?? STANDALONE);
    try {
      await limpet.listen();
    } catch (error) {
      await limpet.close();
      throw error;
    }
    return limpet;
  }

  get address(): AddressInfo {
    return this.server?.address() as AddressInfo;
  }

  get adminAddress(): AddressInfo {
    return this.admin?.server.address() as AddressInfo;
  }

  get currentConfig(): LimpetConfig {
    return this.config;
  }

  get backends(): readonly Backend[] {
    return this.registry.backends;
  }

  backend(id: string): Backend | undefined {
    return this.registry.get(id);
  }

  /** Drains or undrains a backend at run time: its pinned clients stay, new clients go elsewhere. */
  setDraining(id: string, draining: boolean): Backend | undefined {
    const backend = this.registry.get(id);
    backend?.setDraining(draining);
    return backend;
  }

  /**
   * Applies a new, already validated config atomically between two requests. Backend state, counters,
   * remembered pins and open tunnels survive. Returns what could not change without a restart.
   */
  reload(next: LimpetConfig): string[] {
    const plan = planReload(this.config, this.secrets.fill(next));
    const config = plan.applied;
    this.registry.apply(config.backends, poolSettings(config), plan.drain);
    this.health?.track(this.registry.backends, healthSettings(config));
    this.passive.configure(config.passive);
    this.memory.pins.configure(config.affinity.sessionTtl, config.affinity.maxSessions);
    if (config.affinity.cookie.secret !== this.config.affinity.cookie.secret) this.memory.codec = new AffinityCookieCodec(config.affinity.cookie.secret);
    this.memory.clients = new ClientAddressResolver(config.trustedProxies);
    this.admin?.setToken(config.admin.token);
    this.logger.level = config.log.level;
    if (this.server !== null) reconfigureListener(this.server, config, plan.reloadTls);
    this.http2?.reconfigure(http2Settings(config));
    this.config = config;
    this.context = this.buildContext(config);
    return plan.needsRestart;
  }

  /**
   * Graceful stop: no new connections, in-flight requests finish (keep-alive connections close as
   * they go idle), tunnels get WebSocket close 1001, then backend pools close.
   */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    clearInterval(this.sweepTimer);
    this.health?.stop();
    const server = this.server;
    const closed = server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    server?.closeIdleConnections();
    this.http2?.goAway();
    const idleSweep = setInterval(() => server?.closeIdleConnections(), 100);
    this.upgrades.closeAll();
    await Promise.all([closed, this.admin?.close()]);
    clearInterval(idleSweep);
    await this.registry.close();
  }

  /** Cuts every remaining client connection (shutdown deadline passed). */
  closeAllConnections(): void {
    this.server?.closeAllConnections();
    this.http2?.destroyAll();
  }

  // --- what the processes of a cluster tell each other ------------------------------------------

  /** Takes a backend's health as the deciding process saw it (worker). */
  adoptHealth(update: BackendHealthUpdate): void {
    this.registry.get(update.id)?.adopt(update);
  }

  /** Every backend's health, for a worker that joins. */
  healthUpdates(): BackendHealthUpdate[] {
    return this.registry.backends.map((backend) => ({ id: backend.id, ...backend.health }));
  }

  /** Records a pin another process made, so every process places that client alike. */
  adoptPin(key: string, backendId: string): void {
    const backend = this.registry.get(backendId);
    if (backend !== undefined) this.memory.pins.store(key, backend, Math.floor(Date.now() / 1000));
  }

  /** Every remembered pin, for a worker that joins. */
  pinSnapshot(): [string, string][] {
    return this.memory.pins.snapshot();
  }

  /** A failure a worker saw on its traffic (primary): passive detection counts it here. */
  failureReported(backendId: string, message: string): void {
    const backend = this.registry.get(backendId);
    if (backend === undefined) return;
    backend.noteError(message);
    this.passive.recordFailure(backend, Date.now());
  }

  /** This process's own figures of every backend, which a worker sends to the primary. */
  liveFigures(): Record<string, LiveFigures> {
    return Object.fromEntries(this.registry.backends.map((backend) => [backend.id, this.metrics.live(backend)]));
  }

  // --- the data path's entry points ----------------------------------------------------------------

  private readonly handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (this.closing) res.shouldKeepAlive = false;
    this.admit(req, res, ClientConnection.of(req.socket), false);
  };

  /**
   * `Expect: 100-continue`: the expectation goes to the backend, which invites the body (its 100 is
   * relayed) or refuses the upload before it is sent. A request over any limit is refused here.
   */
  private readonly handleExpectContinue = (req: IncomingMessage, res: ServerResponse): void => {
    if (this.closing) res.shouldKeepAlive = false;
    this.admit(req, res, ClientConnection.of(req.socket), true);
  };

  /** A request on an HTTP/2 stream: the same pipeline, through the stream. */
  private readonly handleStream = (req: Http2ServerRequest, res: Http2ServerResponse, stream: Http2StreamChannel, expectContinue: boolean): void => {
    this.metrics.http2.requests++;
    this.admit(req, res, stream, expectContinue);
  };

  /** Every request goes through its channel: an HTTP/1.x connection forwards one at a time, in order; an HTTP/2 stream at once. */
  private admit(req: ClientRequest, res: ClientResponse, channel: ClientChannel, expectContinue: boolean): void {
    const forwardExpectation = expectContinue && headLimitStatus(req, this.context.limits, req.headers['content-length']) === 0;
    channel.admit(new Exchange(this.context, req, res, channel, forwardExpectation));
  }

  private readonly handleUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    this.upgrades.handle(this.context, req, socket, head);
  };

  private readonly observer: ExchangeObserver = {
    upstreamFailed: (backend, failure) => {
      backend.noteError(failure.message);
      this.role.failureSeen(backend, failure);
    },
    localLimitReached: (failure) => this.localLimits.seen(failure),
    retried: (failed) => this.metrics.backend(failed).retries.inc(),
    completed: (backend, status, seconds) => this.metrics.requestCompleted(backend, status, seconds),
  };

  private buildContext(config: LimpetConfig): ForwardingContext {
    const affinity = buildAffinity(affinitySettings(config), this.registry.set, this.memory);
    return { ...forwardingSettings(config), affinity, clients: this.memory.clients, accessLog: config.log.access ? this.logger : null, observer: this.observer };
  }

  private async listen(): Promise<void> {
    const { host, port } = this.config.listen;
    const address = this.server === null ? null : await bind(this.server, this.config.listen, 'listen');
    const admin = this.admin === null ? null : await bind(this.admin.server, this.config.admin.listen, 'admin.listen');
    if (admin === null || this.admin === null) return;
    this.admin.listening(this.config.admin.listen.host);
    this.logger.info({
      msg: 'listening',
      address: address === null ? `${host}:${port} (workers)` : `${address.address}:${address.port}`,
      admin: `${admin.address}:${admin.port}`,
      affinity: this.config.affinity.by,
      backends: this.registry.backends.map((backend) => backend.id),
    });
  }
}

/** Binds a listener; a failure becomes a ListenError naming the address and the setting it came from. */
async function bind(server: Server, { host, port }: HostPort, setting: string): Promise<AddressInfo> {
  try {
    return await listenOn(server, host, port);
  } catch (error) {
    throw new ListenError(host, port, setting, error);
  }
}
