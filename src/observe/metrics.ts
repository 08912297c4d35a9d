import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { Backend } from '../upstream/backend.js';
import type { RemapReason } from '../affinity/policy.js';
import type { DrainProgress } from './drain-progress.js';
import type { LiveFigures } from './live-figures.js';
import { PROXY_PROTOCOL_REFUSALS } from '../runtime/proxy-protocol-gate.js';

/** Bucket bounds for backend response time: from half a millisecond to ten seconds. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What the gauges read at scrape time: the live backends and their pin counts, failed discovery lookups by name. */
export interface MetricsSource {
  backends(): readonly Backend[];
  sessionsByBackend(): Map<Backend, number>;
  drainProgress(): Map<Backend, DrainProgress>;
  effectiveWeight(backend: Backend): number;
  /** The shared-state connection, when this process holds one. */
  sharedState(): { readonly up: boolean; readonly outages: number } | null;
  /** Absent where nothing is resolved (a cluster worker). */
  discoveryErrors?(): ReadonlyMap<string, number>;
}

const LOWEST_STATUS = 100;
const HIGHEST_STATUS = 599;

/**
 * One backend's request counts and response-time histogram, kept in plain arrays: recording a
 * request is a few array writes, and Prometheus samples are built only when scraped. (prom-client
 * re-hashes label values on every call, even through bound children: ~0.5 µs a request.)
 */
class BackendMeters {
  readonly byStatus = new Float64Array(HIGHEST_STATUS - LOWEST_STATUS + 1);
  /** Per bucket (not cumulative); the last slot is +Inf. */
  readonly buckets = new Float64Array(DURATION_BUCKETS.length + 1);
  durationSum = 0;
  durationCount = 0;
  readonly retries: Counter.Internal;
  /** Totals for the status page, which wants rates without parsing the exposition. */
  requests = 0;
  errors = 0;
  remapsIn = 0;

  constructor(
    metrics: ProxyMetrics,
    readonly id: string,
  ) {
    this.retries = metrics.upstreamRetries.labels(id);
  }

  count(status: number): void {
    const slot = status - LOWEST_STATUS;
    if (slot >= 0 && slot < this.byStatus.length) this.byStatus[slot]! += 1;
    this.requests++;
    if (status >= 500) this.errors++;
  }

  observe(seconds: number): void {
    let i = 0;
    while (i < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[i] as number)) i++;
    this.buckets[i]! += 1;
    this.durationSum += seconds;
    this.durationCount++;
  }
}

type Sample = { metricName?: string; labels: Record<string, string | number>; value: number };

/**
 * A metric whose samples are computed at scrape time from the meters, shaped the way prom-client's
 * registry (and its cluster aggregation) expects.
 */
function scrapeTimeMetric(name: string, help: string, type: 'counter' | 'histogram', samples: () => Sample[]) {
  return {
    name,
    help,
    type,
    aggregator: 'sum' as const,
    get: async () => ({ name, help, type, aggregator: 'sum' as const, values: samples() }),
    reset: () => {},
  };
}

/**
 * limpet's Prometheus metrics (names fixed by the contract). Per-request figures go into plain
 * per-backend arrays; everything else is a prom-client metric or a gauge read from live state when
 * scraped.
 */
export class ProxyMetrics {
  readonly registry = new Registry();
  readonly upstreamRetries: Counter<'backend'>;
  readonly remaps: Counter<'from' | 'to' | 'reason'>;
  readonly healthChecks: Counter<'backend' | 'result'>;
  readonly configReloads: Counter<'result'>;
  readonly connectionsDropped: Counter;
  readonly proxyProtocolRejections: Counter<'reason'>;
  /** Open client connections of this process, kept by the listener. */
  clientConnections = 0;
  /** HTTP/2, kept by its listener: open connections, requests, streams the client reset, connections closed for a reset flood. */
  readonly http2 = { connections: 0, requests: 0, streamsReset: 0, resetFloods: 0 };
  private readonly meters = new Map<Backend, BackendMeters>();
  /** Requests answered by the proxy itself before any backend was chosen (no backend available, bad target). */
  private readonly unplaced = new Float64Array(HIGHEST_STATUS - LOWEST_STATUS + 1);

  constructor(private readonly source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.registry.registerMetric(
      scrapeTimeMetric('limpet_requests_total', 'Requests answered, by backend and status code ("none" when no backend was chosen).', 'counter', () =>
        this.requestSamples(),
      ) as unknown as Metric,
    );
    this.registry.registerMetric(
      scrapeTimeMetric('limpet_request_duration_seconds', 'Time from receiving a request to the end of its response, by backend.', 'histogram', () =>
        this.durationSamples(),
      ) as unknown as Metric,
    );
    this.registry.registerMetric(
      scrapeTimeMetric('limpet_discovery_errors_total', 'DNS lookups of a dns or srv backend entry that failed or found nothing, by name.', 'counter', () =>
        [...(this.source.discoveryErrors?.() ?? [])].map(([name, value]) => ({ labels: { name }, value })),
      ) as unknown as Metric,
    );
    this.upstreamRetries = new Counter({
      name: 'limpet_upstream_retries_total',
      help: 'Requests sent again because they could not reach this backend.',
      labelNames: ['backend'],
      registers,
    });
    this.remaps = new Counter({
      name: 'limpet_session_remaps_total',
      help: 'Clients moved from one backend to another, by reason.',
      labelNames: ['from', 'to', 'reason'],
      registers,
    });
    this.healthChecks = new Counter({
      name: 'limpet_health_checks_total',
      help: 'Active health checks, by backend and result.',
      labelNames: ['backend', 'result'],
      registers,
    });
    this.configReloads = new Counter({
      name: 'limpet_config_reloads_total',
      help: 'Config reloads, by result.',
      labelNames: ['result'],
      registers,
    });
    // Across workers, state gauges agree (one health view) so take the max; counts add up.
    this.gauge('limpet_backend_up', 'Whether the backend is up (1) or down (0).', (b) => (b.available ? 1 : 0), 'max');
    this.gauge('limpet_backend_draining', 'Whether the backend is draining (1): keeps its clients, takes no new ones.', (b) => (b.draining ? 1 : 0), 'max');
    this.gauge(
      'limpet_backend_effective_weight',
      'The weight the backend has for new clients now: 0 when it takes none, below its weight while slow start ramps it up.',
      (b) => this.source.effectiveWeight(b),
      'max',
    );
    // Each process can only say drained for what it sees; the backend is drained when all agree.
    const drained = this.source;
    new Gauge({
      name: 'limpet_backend_drained',
      help: 'Whether the backend is draining and has no live client, request in flight or WebSocket left (1): safe to stop.',
      labelNames: ['backend'],
      registers,
      aggregator: 'min',
      collect() {
        this.reset();
        const backends = drained.backends();
        // Counting live clients walks the pins: only worth it while some backend drains.
        const progress = backends.some((backend) => backend.draining) ? drained.drainProgress() : null;
        for (const backend of backends) this.set({ backend: backend.id }, progress?.get(backend)?.drained === true ? 1 : 0);
      },
    });
    this.gauge('limpet_backend_inflight_requests', 'Requests being forwarded to the backend now.', (b) => b.inflight, 'sum');
    this.gauge(
      'limpet_backend_queued_requests',
      'Requests waiting for a connection to the backend (limits.maxBackendConnections reached).',
      (b) => b.queued,
      'sum',
    );
    this.gauge('limpet_websocket_connections', 'Open WebSocket tunnels to the backend.', (b) => b.tunnels, 'sum');
    const live = this.source;
    new Gauge({
      name: 'limpet_sessions',
      help: 'Clients currently pinned to the backend (seen within affinity.sessionTtl).',
      labelNames: ['backend'],
      registers,
      // Every worker holds every pin, so the workers' counts are the same, not parts of a total.
      aggregator: 'max',
      collect() {
        this.reset();
        const counts = live.sessionsByBackend();
        for (const backend of live.backends()) this.set({ backend: backend.id }, counts.get(backend) ?? 0);
      },
    });
    this.connectionsDropped = new Counter({
      name: 'limpet_client_connections_dropped_total',
      help: 'Client connections closed on arrival because limits.maxConnections were open.',
      registers,
    });
    this.proxyProtocolRejections = new Counter({
      name: 'limpet_proxy_protocol_rejections_total',
      help: 'Client connections closed for their PROXY protocol header (proxyProtocol), by reason.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of PROXY_PROTOCOL_REFUSALS) this.proxyProtocolRejections.inc({ reason }, 0);
    const metrics = this;
    new Gauge({
      name: 'limpet_client_connections',
      help: 'Open client connections, WebSocket tunnels included.',
      registers,
      aggregator: 'sum',
      collect() {
        this.set(metrics.clientConnections);
      },
    });
    const holder = this.source;
    // Only in the process that holds the connection (standalone, or a cluster's primary).
    new Gauge({
      name: 'limpet_shared_state_up',
      help: 'Whether Redis (sharedState) is reachable (1); while it is not, replicas route from local pins and hashing.',
      registers,
      aggregator: 'max',
      collect() {
        this.reset();
        const shared = holder.sharedState();
        if (shared !== null) this.set(shared.up ? 1 : 0);
      },
    });
    new Counter({
      name: 'limpet_shared_state_outages_total',
      help: 'Times Redis (sharedState) became unreachable.',
      registers,
      aggregator: 'max',
      collect() {
        this.reset();
        const shared = holder.sharedState();
        if (shared !== null) this.inc(shared.outages);
      },
    });
    new Gauge({
      name: 'limpet_http2_connections',
      help: 'Open HTTP/2 client connections (also counted in limpet_client_connections).',
      registers,
      aggregator: 'sum',
      collect() {
        this.set(metrics.http2.connections);
      },
    });
    const http2Counter = (name: string, help: string, read: () => number) =>
      this.registry.registerMetric(scrapeTimeMetric(name, help, 'counter', () => [{ labels: {}, value: read() }]) as unknown as Metric);
    http2Counter('limpet_http2_requests_total', 'Requests received over HTTP/2 (also counted in limpet_requests_total).', () => this.http2.requests);
    http2Counter(
      'limpet_http2_streams_reset_total',
      'HTTP/2 streams the client reset (or broke the protocol on) before their answer was complete.',
      () => this.http2.streamsReset,
    );
    http2Counter(
      'limpet_http2_reset_floods_total',
      'HTTP/2 connections closed with ENHANCE_YOUR_CALM for resetting more streams than their budget (rapid reset).',
      () => this.http2.resetFloods,
    );
    this.configReloads.inc({ result: 'success' }, 0);
    this.configReloads.inc({ result: 'failure' }, 0);
  }

  /** The meters of one backend; created on first use and kept across reloads. */
  backend(backend: Backend): BackendMeters {
    let meters = this.meters.get(backend);
    if (meters === undefined) {
      meters = new BackendMeters(this, backend.id);
      this.meters.set(backend, meters);
      for (const result of ['pass', 'fail']) this.healthChecks.inc({ backend: backend.id, result }, 0);
      meters.retries.inc(0);
    }
    return meters;
  }

  requestCompleted(backend: Backend | null, status: number, seconds: number): void {
    if (backend === null) {
      const slot = status - LOWEST_STATUS;
      if (slot >= 0 && slot < this.unplaced.length) this.unplaced[slot]! += 1;
      return;
    }
    const meters = this.backend(backend);
    meters.count(status);
    meters.observe(seconds);
    if (backend.retired) this.forget(backend);
  }

  /**
   * A removed backend's figures go once its last request has ended (its series leave /metrics), so a
   * fleet whose addresses come and go, as discovered ones do, does not pile up meters and series.
   */
  forget(backend: Backend): void {
    if (backend.inflight > 0 || !this.meters.delete(backend)) return;
    // An address back under the same id keeps its series.
    if (this.source.backends().some((current) => current.id === backend.id)) return;
    this.upstreamRetries.remove(backend.id);
    for (const result of ['pass', 'fail']) this.healthChecks.remove({ backend: backend.id, result });
  }

  private requestSamples(): Sample[] {
    const samples: Sample[] = [];
    const add = (backend: string, counts: Float64Array) => {
      for (let slot = 0; slot < counts.length; slot++) {
        const value = counts[slot] as number;
        if (value > 0) samples.push({ labels: { backend, code: String(slot + LOWEST_STATUS) }, value });
      }
    };
    for (const meters of this.meters.values()) add(meters.id, meters.byStatus);
    add('none', this.unplaced);
    return samples;
  }

  private durationSamples(): Sample[] {
    const samples: Sample[] = [];
    const name = 'limpet_request_duration_seconds';
    for (const meters of this.meters.values()) {
      let cumulative = 0;
      for (let i = 0; i <= DURATION_BUCKETS.length; i++) {
        cumulative += meters.buckets[i] as number;
        const le = i < DURATION_BUCKETS.length ? (DURATION_BUCKETS[i] as number) : '+Inf';
        samples.push({ metricName: `${name}_bucket`, labels: { backend: meters.id, le }, value: cumulative });
      }
      samples.push({ metricName: `${name}_sum`, labels: { backend: meters.id }, value: meters.durationSum });
      samples.push({ metricName: `${name}_count`, labels: { backend: meters.id }, value: meters.durationCount });
    }
    return samples;
  }

  remapped(from: string, to: Backend, reason: RemapReason): void {
    this.remaps.inc({ from, to: to.id, reason });
    this.backend(to).remapsIn++;
  }

  /** This process's figures of one backend, for the admin API and status page. */
  live(backend: Backend): LiveFigures {
    const meters = this.backend(backend);
    return { inflight: backend.inflight, websockets: backend.tunnels, requests: meters.requests, errors: meters.errors, remapsIn: meters.remapsIn };
  }

  contentType(): string {
    return this.registry.contentType;
  }

  async exposition(): Promise<string> {
    return this.registry.metrics();
  }

  private gauge(name: string, help: string, read: (backend: Backend) => number, aggregator: 'max' | 'sum'): void {
    const live = this.source;
    new Gauge({
      name,
      help,
      labelNames: ['backend'],
      registers: [this.registry],
      aggregator,
      collect() {
        // Reset first so a backend removed from the config disappears from the gauge.
        this.reset();
        for (const backend of live.backends()) this.set({ backend: backend.id }, read(backend));
      },
    });
  }
}
