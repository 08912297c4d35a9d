import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { AdminServer } from './admin/admin-server.js';
import { buildAffinity, type AffinityMemory } from './affinity/build-affinity.js';
import { ClientAddressResolver } from './affinity/client-address.js';
import { AffinityCookieCodec } from './affinity/cookie.js';
import { ClientActivity, MoveBudget } from './affinity/elastic.js';
import { PinTable } from './affinity/pin-table.js';
import type { HostPort, LimpetConfig } from './config/schema.js';
import { BackendDiscovery, listedBackends } from './discovery/backend-discovery.js';
import { ListenError } from './errors.js';
import { ActiveHealthChecker } from './health/active-checks.js';
import { PassiveEjector } from './health/passive-ejection.js';
import type { Logger } from './observe/log.js';
import { logBackendChange, LocalLimitLog, ResetFloodLog } from './observe/backend-log.js';
import { ProxyProtocolRefusalLog } from './observe/proxy-protocol-log.js';
import type { LiveFigures } from './observe/live-figures.js';
import { drainProgress, type DrainProgress } from './observe/drain-progress.js';
import { ProxyMetrics } from './observe/metrics.js';
import { headLimitStatus } from './proxy/client-limits.js';
import type { ExchangeObserver, ForwardingContext } from './proxy/context.js';
import type { ClientChannel, ClientRequest, ClientResponse } from './proxy/client-channel.js';
import { ClientConnection } from './proxy/client-connection.js';
import { Exchange } from './proxy/exchange.js';
import type { Http2StreamChannel } from './proxy/h2-stream.js';
import { UpgradeForwarder } from './proxy/upgrade.js';
import { affinitySettings, discoverySettings, forwardingSettings, healthSettings, http2Settings, poolSettings, proxyProtocolSettings } from './runtime/settings.js';
import { CookieSecret } from './runtime/cookie-secret.js';
import { Http2Listener } from './runtime/h2-listener.js';
import { createProxyListener, listenOn, reconfigureListener } from './runtime/listener.js';
import { planReload } from './runtime/reload-plan.js';
import { ProxyProtocolGate } from './runtime/proxy-protocol-gate.js';
import { STANDALONE, type ProcessRole, type RoleBehaviour } from './runtime/roles.js';
import type { Backend, BackendHealthUpdate, BackendSettings, DrainSetting } from './upstream/backend.js';
import { BackendRegistry } from './upstream/backend-registry.js';
import type { DurableState, RuntimeDrain, StateSink } from './state/durable-state.js';
import { SharedState } from './state/shared-state.js';
import { keepStateInFile } from './state/state-file.js';

/** How long a starting proxy waits for Redis before it serves without the shared pins (they follow when Redis answers). */
const SHARED_STATE_WAIT_MS = 2_000;

export interface LimpetOptions {
  logger: Logger;
  role?: ProcessRole;
  /**
   * The backends as the process that resolves dns and srv entries applied them last (a cluster
   * worker is given its primary's); a process that resolves them itself finds its own.
   */
  backends?: readonly BackendSettings[];
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
  /** Resolves the dns and srv entries; null in a process that is told the backends instead (a worker). */
  private readonly discovery: BackendDiscovery | null;
  /** The backends last applied to the registry: the listed ones and those discovered. */
  private fleet: readonly BackendSettings[];
  /** What outlives reloads: pins, the cookie codec (while the secret stays), the client resolver. */
  private readonly memory: { -readonly [K in keyof AffinityMemory]: AffinityMemory[K] };
  private readonly secrets: CookieSecret;
  private readonly health: ActiveHealthChecker | null;
  private readonly passive: PassiveEjector;
  private readonly role: RoleBehaviour;
  private readonly upgrades = new UpgradeForwarder();
  /** Reads PROXY protocol headers ahead of the proxy listener (idle in a cluster primary, which has none). */
  private readonly proxyHeaders: ProxyProtocolGate;
  private readonly localLimits: LocalLimitLog;
  /** Drains made through the admin API, by backend id: they outlive reloads until the file changes that backend's drain. */
  private readonly runtimeDrains = new Map<string, RuntimeDrain>();
  /** Where pins and runtime drains go as they change (state file, shared store). */
  private readonly stateSinks: StateSink[] = [];
  /** Pins and runtime drains shared with the other replicas (the process that decides health holds it). */
  private readonly shared: SharedState | null;
  private readonly resetFloods: ResetFloodLog;
  private readonly sweepTimer: NodeJS.Timeout;
  private readonly stampTimer: NodeJS.Timeout;
  private closing = false;

  private constructor(
    configGiven: LimpetConfig,
    private readonly logger: Logger,
    processRole: ProcessRole,
    backends: readonly BackendSettings[],
    discovery: BackendDiscovery | null,
  ) {
    this.secrets = new CookieSecret(logger);
    this.localLimits = new LocalLimitLog(logger);
    this.resetFloods = new ResetFloodLog(logger);
    const config = this.secrets.fill(configGiven);
    this.config = config;

    // Backends, and everything that must hear of their changes.
    this.fleet = backends;
    this.registry = new BackendRegistry(backends, poolSettings(config), config.balance.slowStart);
    this.discovery = discovery;
    const pins = new PinTable(config.affinity.sessionTtl, config.affinity.maxSessions, config.affinity.rebalance?.idleAfter ?? null);
    this.metrics = new ProxyMetrics({
      backends: () => this.registry.backends,
      sessionsByBackend: () => pins.countByBackend(),
      drainProgress: () => this.drainProgress(),
      effectiveWeight: (backend) => this.registry.set.effectiveWeight(backend),
      sharedState: () => this.shared,
      ...(discovery === null ? {} : { discoveryErrors: () => discovery.errors }),
    });
    this.passive = new PassiveEjector(config.passive);
    this.role = processRole.behaviour({ passive: this.passive, metrics: this.metrics });
    const relayPin = this.role.pinWritten;
    pins.onWrite = (key, backend) => {
      relayPin?.(key, backend);
      if (this.stateSinks.length > 0) this.pinToSinks(key, backend.id);
    };
    this.registry.listen((backend, change) => {
      if (change === 'added') return void this.metrics.backend(backend);
      if (change === 'retired') {
        this.passive.forget(backend);
        this.metrics.forget(backend);
      }
      // An address that left DNS goes once its drain deadline has passed.
      if (change === 'drainDeadline' && backend.drainDeadlinePassed) this.discovery?.drainDeadlinePassed(backend.id);
      // Tunnels of a backend that can no longer serve (down, ejected, removed, past its drain
      // deadline) close with 1001, so clients reconnect where their HTTP now goes; a draining
      // backend keeps its clients and tunnels until its deadline.
      if (!backend.servesPinned) this.upgrades.closeBackend(backend);
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
    discovery?.listen((drain) => this.applyBackends(discovery.backends(this.config.backends), drain));

    // Affinity and the data path.
    const refusals = new ProxyProtocolRefusalLog(logger);
    this.proxyHeaders = new ProxyProtocolGate(proxyProtocolSettings(config), (reason, peer) => {
      this.metrics.proxyProtocolRejections.inc({ reason });
      refusals.seen(reason, peer);
    });
    this.memory = {
      pins,
      codec: new AffinityCookieCodec(config.affinity.cookie.secret),
      clients: new ClientAddressResolver(config.trustedProxies, this.proxyHeaders),
      onRemap: (from, to, reason) => {
        this.metrics.remapped(from, to, reason);
        this.logger.debug({ msg: 'client remapped', from, to: to.id, reason });
      },
      activity: new ClientActivity(),
      moves: new MoveBudget(this.role.movesPerSecond(config)),
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
        }, this.proxyHeaders, this.http2)
      : null;
    this.admin = processRole.decidesHealth
      ? new AdminServer(
          {
            backends: () => this.registry.backends,
            sessionsByBackend: () => pins.countByBackend(),
            live: (backend) => this.role.live(backend),
            setDraining: (id, draining, deadline) => this.setDraining(id, draining, deadline === null ? null : Date.now() + deadline),
            drainProgress: () => this.drainProgress(),
            effectiveWeight: (backend) => this.registry.set.effectiveWeight(backend),
            metricsContentType: () => this.metrics.contentType(),
            metrics: () => this.role.exposition(),
          },
          config.admin.token,
          logger,
        )
      : null;
    const sharing = config.sharedState;
    this.shared =
      sharing === null || !processRole.decidesHealth
        ? null
        : new SharedState({ ...sharing, sessionTtl: config.affinity.sessionTtl, sharePins: config.affinity.by !== 'cookie' }, this, logger);
    if (this.shared !== null) this.addStateSink(this.shared);

    const sweepEvery = Math.min(10_000, Math.max(1_000, Math.floor(config.affinity.sessionTtl / 4)));
    this.sweepTimer = setInterval(() => pins.sweep(Math.floor(Date.now() / 1000)), sweepEvery).unref();
    // Busy clients (long responses, open tunnels) are re-stamped as often as pins are, so rebalance
    // never takes them for idle; a no-op while rebalance is off, as none are counted.
    this.stampTimer = setInterval(() => this.memory.activity.stampBusy(pins, Math.floor(Date.now() / 1000)), 1_000).unref();
  }

  /**
   * Builds and binds a proxy; all or nothing: when a listener cannot bind, whatever did is closed
   * and a ListenError thrown. With sharedState it first takes the shared pins and drains, waiting
   * at most SHARED_STATE_WAIT_MS for Redis (then it serves, and syncs once Redis answers).
   */
  static async start(config: LimpetConfig, options: LimpetOptions): Promise<Limpet> {
    const role = options.role ?? STANDALONE;
    // The process whose health view counts resolves names too: one resolver per process tree, and
    // every worker is told the same set (cluster/primary.ts).
    const discovery = role.decidesHealth ? new BackendDiscovery(discoverySettings(config), options.logger) : null;
    await discovery?.start(config.backends);
    const backends = discovery?.backends(config.backends) ?? options.backends ?? listedBackends(config.backends);
    const limpet = new Limpet(config, options.logger, role, backends, discovery);
    try {
      // The process whose state counts keeps the state file, restored before anything is served
      // (and, in a cluster, before workers are sent their start-up state).
      const { stateFile } = limpet.config;
      if (role.decidesHealth && stateFile !== null) await keepStateInFile(stateFile, limpet, options.logger);
      await limpet.shared?.firstSync(SHARED_STATE_WAIT_MS);
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

  /** The settings of every backend now, discovered ones included: what a worker is given. */
  get backendSettings(): readonly BackendSettings[] {
    return this.fleet;
  }

  backend(id: string): Backend | undefined {
    return this.registry.get(id);
  }

  /**
   * Drains or undrains a backend at run time: its pinned clients stay, new clients go elsewhere;
   * at `deadlineAt` (epoch ms) the clients still there move. Undraining cancels the deadline.
   */
  setDraining(id: string, draining: boolean, deadlineAt: number | null = null): Backend | undefined {
    const backend = this.registry.get(id);
    if (backend === undefined) return undefined;
    backend.setDraining(draining, deadlineAt);
    const drain: RuntimeDrain = { id, draining, deadlineAt: draining ? deadlineAt : null };
    this.runtimeDrains.set(id, drain);
    for (const sink of this.stateSinks) sink.drainChanged(drain);
    return backend;
  }

  // --- state that outlives the process or reaches other replicas ----------------------------------

  /** From now on, tells `sink` of every pin written or refreshed and every runtime drain. */
  addStateSink(sink: StateSink): void {
    this.stateSinks.push(sink);
  }

  /** The pins and runtime drains to keep, as of now. */
  durableState(): DurableState {
    // A runtime drain of a backend since removed is kept in memory (the backend may come back by
    // reload or DNS) but not handed on.
    const drains = [...this.runtimeDrains.values()].filter((drain) => this.registry.get(drain.id) !== undefined);
    return { pins: this.memory.pins.records(), drains };
  }

  /**
   * Takes back kept state (at start, or from another replica): runtime drains of backends that
   * exist, and pins to existing backends not yet idle past sessionTtl. Told to nobody: it came from
   * where it would go. Returns how many pins were taken.
   */
  restoreState(state: DurableState): number {
    for (const drain of state.drains) this.adoptRuntimeDrain(drain);
    const pins = this.memory.pins;
    const nowSeconds = Math.floor(Date.now() / 1000);
    // Oldest first, so the table's order stays last-seen order.
    const records = state.pins.filter(([, , seen]) => pins.remembers(seen, nowSeconds)).sort((a, b) => a[2] - b[2]);
    const taken: [string, string][] = [];
    for (const [key, id, seen] of records) {
      const backend = this.registry.get(id);
      if (backend === undefined) continue;
      pins.store(key, backend, Math.min(seen, nowSeconds));
      taken.push([key, id]);
    }
    if (taken.length > 0) this.role.pinsLearnt(taken);
    return taken.length;
  }

  /** A runtime drain decided elsewhere (another replica, or before a restart): applied, and kept, but not told again. */
  adoptRuntimeDrain(drain: RuntimeDrain): void {
    const backend = this.registry.get(drain.id);
    if (backend === undefined) return;
    backend.setDraining(drain.draining, drain.deadlineAt);
    this.runtimeDrains.set(drain.id, drain);
  }

  /** A runtime drain another replica lost to its config file: this one forgets it too, keeping the backend as it is. */
  forgetRuntimeDrain(id: string): void {
    this.runtimeDrains.delete(id);
  }

  private pinToSinks(key: string, backendId: string): void {
    const record: [string, string, number] = [key, backendId, Math.floor(Date.now() / 1000)];
    for (const sink of this.stateSinks) sink.pinWritten(record);
  }

  /**
   * Live clients of each backend and whether the draining ones are drained (walks the pins: admin
   * and scrapes only). Live means not yet idle enough for rebalance to move it (idleAfter, plus the
   * stamp period by which a last-seen stamp may lag); without rebalance, seen within sessionTtl.
   */
  drainProgress(): Map<Backend, DrainProgress> {
    const pins = this.memory.pins;
    const idleAfter = this.config.affinity.rebalance?.idleAfter;
    const nowSeconds = Math.floor(Date.now() / 1000);
    const window = idleAfter === undefined ? Math.ceil(this.config.affinity.sessionTtl / 1000) : Math.floor(idleAfter / 1000) + pins.stampPeriodSeconds;
    const since = nowSeconds - window + 1;
    return drainProgress(this.registry.backends, pins.countSeenSince(since), (backend) => this.role.live(backend));
  }

  /**
   * Applies a new, already validated config atomically between two requests. Backend state, counters,
   * remembered pins and open tunnels survive. Returns what could not change without a restart.
   */
  reload(next: LimpetConfig, backends?: readonly BackendSettings[]): string[] {
    const plan = planReload(this.config, this.secrets.fill(next));
    const config = plan.applied;
    this.discovery?.configure(discoverySettings(config), config.backends);
    this.fleet = this.discovery?.backends(config.backends) ?? backends ?? listedBackends(config.backends);
    this.registry.apply(this.fleet, poolSettings(config), plan.drain, config.balance.slowStart);
    // The file changed these backends' drain: it rules them again.
    for (const id of plan.drain.keys()) {
      if (!this.runtimeDrains.delete(id)) continue;
      for (const sink of this.stateSinks) sink.drainForgotten(id);
    }
    this.health?.track(this.registry.backends, healthSettings(config));
    this.passive.configure(config.passive);
    this.memory.pins.configure(config.affinity.sessionTtl, config.affinity.maxSessions, config.affinity.rebalance?.idleAfter ?? null);
    this.shared?.setSessionTtl(config.affinity.sessionTtl);
    this.memory.moves.configure(this.role.movesPerSecond(config));
    if (config.affinity.cookie.secret !== this.config.affinity.cookie.secret) this.memory.codec = new AffinityCookieCodec(config.affinity.cookie.secret);
    this.memory.clients = new ClientAddressResolver(config.trustedProxies, this.proxyHeaders);
    this.proxyHeaders.configure(proxyProtocolSettings(config));
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
    clearInterval(this.stampTimer);
    this.discovery?.stop();
    this.health?.stop();
    const server = this.server;
    const closed = server === null ? Promise.resolve() : new Promise<void>((resolve) => server.close(() => resolve()));
    server?.closeIdleConnections();
    this.proxyHeaders.closeWaiting();
    this.http2?.goAway();
    const idleSweep = setInterval(() => server?.closeIdleConnections(), 100);
    this.upgrades.closeAll();
    await Promise.all([closed, this.admin?.close()]);
    clearInterval(idleSweep);
    // Pins and drains are final now: write them out.
    await Promise.all(this.stateSinks.map((sink) => sink.close()));
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

  /** Takes the backends the deciding process discovered (worker); their health follows as adopted updates. */
  adoptBackends(backends: readonly BackendSettings[]): void {
    this.applyBackends(backends, new Map());
  }

  /** Every backend's health, for a worker that joins. */
  healthUpdates(): BackendHealthUpdate[] {
    return this.registry.backends.map((backend) => ({ id: backend.id, ...backend.health }));
  }

  /** Records a pin another process made, so every process places that client alike. */
  adoptPin(key: string, backendId: string): void {
    const backend = this.registry.get(backendId);
    if (backend === undefined) return;
    this.memory.pins.store(key, backend, Math.floor(Date.now() / 1000));
    if (this.stateSinks.length > 0) this.pinToSinks(key, backendId);
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

  /**
   * Makes `backends` the backends between two requests, as a reload does for the file: new ones
   * wait for their first check, gone ones retire, and the data path gets selection over the new set.
   */
  private applyBackends(backends: readonly BackendSettings[], drain: ReadonlyMap<string, DrainSetting>): void {
    if (this.closing) return;
    this.fleet = backends;
    this.registry.apply(backends, poolSettings(this.config), drain);
    this.health?.track(this.registry.backends);
    this.context = this.buildContext(this.config);
    this.role.backendsApplied(backends);
  }

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
