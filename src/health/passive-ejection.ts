import type { Backend } from '../upstream/backend.js';

export interface PassiveSettings {
  maxFails: number;
  window: number; // ms
}

/**
 * Passive detection: counts connection failures that real requests meet, per backend, in a sliding
 * window. At `maxFails` the backend is ejected at once, without waiting for the next active check;
 * the active checker lets it back in after the cooldown.
 */
export class PassiveEjector {
  /** Failure times per backend, oldest first, at most maxFails long. */
  private readonly failures = new Map<Backend, number[]>();

  constructor(
    private settings: PassiveSettings,
    private readonly onEject: (backend: Backend) => void,
  ) {}

  configure(settings: PassiveSettings): void {
    this.settings = settings;
  }

  /** Records a failure; returns true when it ejected the backend. */
  recordFailure(backend: Backend, now: number): boolean {
    if (backend.ejected) return false;
    let times = this.failures.get(backend);
    if (times === undefined) {
      times = [];
      this.failures.set(backend, times);
    }
    times.push(now);
    while (times.length > 0 && now - (times[0] as number) > this.settings.window) times.shift();
    while (times.length > this.settings.maxFails) times.shift();
    if (times.length < this.settings.maxFails) return false;
    times.length = 0;
    backend.ejected = true;
    backend.ejectedAt = now;
    this.onEject(backend);
    return true;
  }

  forget(backend: Backend): void {
    this.failures.delete(backend);
  }
}
