import type { Backend, CheckPolicy, HealthCheckResult } from '../upstream/backend.js';

export interface HealthCheckSettings extends CheckPolicy {
  path: string;
  interval: number; // ms
  timeout: number; // ms
  expectStatus: { min: number; max: number };
}

/** Told of every completed check (metrics count them). */
export type CheckListener = (backend: Backend, ok: boolean) => void;

interface Probe {
  backend: Backend;
  timer: NodeJS.Timeout | null;
  running: boolean;
}

/** ±15 % of the interval, so a fleet of proxies (or workers) never probes a backend in lockstep. */
const JITTER = 0.15;

/**
 * Active health checks: a GET of each backend's health path every `interval` (jittered). It only
 * probes and hands each result to the backend, which decides its own verdict (`rise`/`fall`);
 * selection reads that verdict through the backend set. The checker never routes.
 */
export class ActiveHealthChecker {
  private readonly probes = new Map<Backend, Probe>();
  private stopped = false;

  constructor(
    private settings: HealthCheckSettings,
    private readonly checked: CheckListener,
  ) {}

  /**
   * Starts probing new backends and stops probing removed ones; kept backends keep their schedule,
   * unless the interval changed: then their next probe comes within the new one.
   */
  track(backends: readonly Backend[], settings: HealthCheckSettings = this.settings): void {
    const newInterval = settings.interval !== this.settings.interval;
    this.settings = settings;
    const wanted = new Set(backends);
    for (const [backend, probe] of this.probes) {
      if (wanted.has(backend)) continue;
      if (probe.timer !== null) clearTimeout(probe.timer);
      this.probes.delete(backend);
    }
    if (newInterval) {
      for (const probe of this.probes.values()) {
        if (probe.timer === null) continue;
        clearTimeout(probe.timer);
        this.schedule(probe, Math.random() * settings.interval);
      }
    }
    for (const backend of backends) {
      if (this.probes.has(backend)) continue;
      const probe: Probe = { backend, timer: null, running: false };
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

  private async run(probe: Probe): Promise<void> {
    if (probe.running) return;
    probe.running = true;
    const { backend } = probe;
    const settings = this.settings;
    let result: HealthCheckResult;
    try {
      result = await check(backend, settings);
    } finally {
      probe.running = false;
    }
    // Stopped or no longer tracked while it ran: the result belongs to nobody.
    if (this.probes.get(backend) !== probe) return;
    this.checked(backend, result.ok);
    backend.checkCompleted(result, settings);
  }
}

async function check(backend: Backend, settings: HealthCheckSettings): Promise<HealthCheckResult> {
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
  }
  return { at: started, ok: error === null, status, error, durationMs: Date.now() - started };
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
