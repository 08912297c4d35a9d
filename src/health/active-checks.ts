import type { Backend } from '../upstream/backend.js';

export interface HealthCheckSettings {
  path: string;
  interval: number; // ms
  timeout: number; // ms
  rise: number;
  fall: number;
  expectStatus: { min: number; max: number };
  /** How long a passively ejected backend waits before a passing check may bring it back. */
  cooldown: number; // ms
}

/** Told about every check and every state change the checks cause. */
export interface HealthListener {
  checked(backend: Backend, ok: boolean): void;
  changed(backend: Backend): void;
}

interface Probe {
  backend: Backend;
  timer: NodeJS.Timeout | null;
  passes: number;
  failures: number;
  running: boolean;
}

/** ±15 % of the interval, so a fleet of proxies (or workers) never probes a backend in lockstep. */
const JITTER = 0.15;

/**
 * Active health checks: a GET of each backend's health path every `interval` (jittered), marking it
 * down after `fall` consecutive failures and up after `rise` consecutive passes. It only writes
 * backend health; selection reads it through the backend set.
 */
export class ActiveHealthChecker {
  private readonly probes = new Map<Backend, Probe>();
  private stopped = false;

  constructor(
    private settings: HealthCheckSettings,
    private readonly listener: HealthListener,
  ) {}

  /** Starts probing new backends and stops probing removed ones; kept backends keep their counters. */
  track(backends: readonly Backend[], settings: HealthCheckSettings = this.settings): void {
    this.settings = settings;
    const wanted = new Set(backends);
    for (const [backend, probe] of this.probes) {
      if (wanted.has(backend)) continue;
      if (probe.timer !== null) clearTimeout(probe.timer);
      this.probes.delete(backend);
    }
    for (const backend of backends) {
      if (this.probes.has(backend)) continue;
      const probe: Probe = { backend, timer: null, passes: 0, failures: 0, running: false };
      this.probes.set(backend, probe);
      // The first probe comes soon but at a random point, spreading the fleet from the start.
      this.schedule(probe, Math.random() * Math.min(this.settings.interval, 1000));
    }
  }

  stop(): void {
    this.stopped = true;
    for (const probe of this.probes.values()) if (probe.timer !== null) clearTimeout(probe.timer);
    this.probes.clear();
  }

  private schedule(probe: Probe, delay: number): void {
    if (this.stopped) return;
    probe.timer = setTimeout(() => {
      probe.timer = null;
      void this.run(probe).finally(() => {
        if (this.probes.get(probe.backend) === probe) {
          const interval = this.settings.interval;
          this.schedule(probe, interval * (1 - JITTER + Math.random() * 2 * JITTER));
        }
      });
    }, delay);
    probe.timer.unref();
  }

  private async run(probe: Probe): Promise<boolean> {
    if (probe.running) return probe.backend.healthy;
    probe.running = true;
    const { backend } = probe;
    const settings = this.settings;
    const started = Date.now();
    let status: number | null = null;
    let error: string | null = null;
    try {
      const response = await backend.checkDispatcher.request({
        path: backend.healthPath ?? settings.path,
        method: 'GET',
        headers: { 'user-agent': 'limpet-health-check' },
        headersTimeout: settings.timeout,
        bodyTimeout: settings.timeout,
        signal: AbortSignal.timeout(settings.timeout),
      });
      status = response.statusCode;
      await response.body.dump();
      if (status < settings.expectStatus.min || status > settings.expectStatus.max) {
        error = `status ${status}, expected ${settings.expectStatus.min}-${settings.expectStatus.max}`;
      }
    } catch (caught) {
      error = describe(caught, settings.timeout);
    } finally {
      probe.running = false;
    }
    const ok = error === null;
    backend.lastCheck = { at: started, ok, status, error, durationMs: Date.now() - started };
    if (!ok) backend.lastError = error;
    if (this.probes.get(backend) !== probe) return ok;
    this.listener.checked(backend, ok);
    this.record(probe, ok, started);
    return ok;
  }

  private record(probe: Probe, ok: boolean, now: number): void {
    const { backend } = probe;
    let changed = false;
    if (backend.awaitingFirstCheck) {
      backend.awaitingFirstCheck = false;
      if (ok) {
        backend.healthy = true;
        probe.passes = 1;
        this.listener.changed(backend);
        return;
      }
    }
    if (ok) {
      probe.failures = 0;
      probe.passes++;
      if (!backend.healthy && probe.passes >= this.settings.rise) {
        backend.healthy = true;
        changed = true;
      }
      if (backend.ejected && now - backend.ejectedAt >= this.settings.cooldown) {
        backend.ejected = false;
        changed = true;
      }
    } else {
      probe.passes = 0;
      probe.failures++;
      if (backend.healthy && probe.failures >= this.settings.fall) {
        backend.healthy = false;
        changed = true;
      }
    }
    if (changed) this.listener.changed(backend);
  }
}

function describe(error: unknown, timeout: number): string {
  if (error instanceof Error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (error.name === 'TimeoutError' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
      return `no answer within ${timeout} ms`;
    }
    return code === undefined ? error.message : `${code}: ${error.message}`;
  }
  return String(error);
}
