import type { Backend } from '../upstream/backend.js';

export interface PassiveSettings {
  maxFails: number;
  window: number; // ms
}

/**
 * Passive detection: counts the failures real requests meet at a backend (those that put its
 * health in question), per backend, in a sliding window. At `maxFails` the backend is ejected at
 * once, without waiting for the next active check; a passing check after the cooldown readmits it.
 */
export class PassiveEjector {
  /** Failure times per backend, oldest first, at most maxFails long. */
  private readonly failures = new Map<Backend, number[]>();

  constructor(private settings: PassiveSettings) {}

  configure(settings: PassiveSettings): void {
    this.settings = settings;
  }

  /** Records a failure; ejects the backend when it is the `maxFails`th within the window. */
  recordFailure(backend: Backend, now: number): void {
    if (backend.ejected) return;
    let times = this.failures.get(backend);
    if (times === undefined) {
      times = [];
      this.failures.set(backend, times);
    }
    times.push(now);
    while (times.length > 0 && now - (times[0] as number) > this.settings.window) times.shift();
    while (times.length > this.settings.maxFails) times.shift();
    if (times.length < this.settings.maxFails) return;
    times.length = 0;
    backend.eject(now);
  }

  forget(backend: Backend): void {
    this.failures.delete(backend);
  }
}
