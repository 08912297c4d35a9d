import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Backend } from './upstream/backend.js';
import type { RemapReason } from './affinity/router.js';

/** Bucket bounds for backend response time: from half a millisecond to ten seconds. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** What the gauges read at scrape time: the live backends and their pin counts. */
export interface MetricsSource {
  backends(): readonly Backend[];
  sessionsByBackend(): Map<Backend, number>;
}

/** Per-backend label children, bound once so the request path never looks labels up. */
class BackendMeters {
  readonly byStatus: (Counter.Internal | undefined)[] = [];
  readonly duration: Histogram.Internal<'backend'>;
  readonly retries: Counter.Internal;
  /** Plain totals for the status page, which wants rates without parsing the exposition. */
  requests = 0;
  errors = 0;
  remapsIn = 0;

  constructor(
    private readonly metrics: ProxyMetrics,
    readonly id: string,
  ) {
    this.duration = metrics.requestDuration.labels(id);
    this.retries = metrics.upstreamRetries.labels(id);
  }

  count(status: number): void {
    let child = this.byStatus[status];
    if (child === undefined) {
      child = this.metrics.requestsTotal.labels(this.id, String(status));
      this.byStatus[status] = child;
    }
    child.inc();
    this.requests++;
    if (status >= 500) this.errors++;
  }
}

/**
 * limpet's Prometheus metrics (names fixed by the contract). Counters and the histogram are updated
 * on the request path through pre-bound children; gauges are read from live state when scraped.
 */
export class ProxyMetrics {
  readonly registry = new Registry();
  readonly requestsTotal: Counter<'backend' | 'code'>;
  readonly requestDuration: Histogram<'backend'>;
  readonly upstreamRetries: Counter<'backend'>;
  readonly remaps: Counter<'from' | 'to' | 'reason'>;
  readonly healthChecks: Counter<'backend' | 'result'>;
  readonly configReloads: Counter<'result'>;
  private readonly meters = new Map<Backend, BackendMeters>();
  /** Requests answered by the proxy itself before any backend was chosen (no backend available, bad target). */
  private readonly unplaced: Counter.Internal[] = [];

  constructor(private readonly source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requestsTotal = new Counter({
      name: 'limpet_requests_total',
      help: 'Requests answered, by backend and status code ("none" when no backend was chosen).',
      labelNames: ['backend', 'code'],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'limpet_request_duration_seconds',
      help: 'Time from receiving a request to the end of its response, by backend.',
      labelNames: ['backend'],
      buckets: DURATION_BUCKETS,
      registers,
    });
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
    this.gauge('limpet_backend_inflight_requests', 'Requests being forwarded to the backend now.', (b) => b.inflight, 'sum');
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
      let child = this.unplaced[status];
      if (child === undefined) {
        child = this.requestsTotal.labels('none', String(status));
        this.unplaced[status] = child;
      }
      child.inc();
      return;
    }
    const meters = this.backend(backend);
    meters.count(status);
    meters.duration.observe(seconds);
  }

  remapped(from: string, to: Backend, reason: RemapReason): void {
    this.remaps.inc({ from, to: to.id, reason });
    this.backend(to).remapsIn++;
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
