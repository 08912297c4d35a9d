import type { Backend } from '../upstream/backend.js';
import type { LiveFigures } from './live-figures.js';

/** How far a backend has drained: what a deploy script or a Kubernetes preStop hook waits on. */
export interface DrainProgress {
  /** Clients seen within the live window (affinity.rebalance.idleAfter, or sessionTtl without rebalance). */
  liveClients: number;
  /** Draining, with no live client, no request in flight and no WebSocket left. */
  drained: boolean;
}

/**
 * Every backend's progress from the clients seen within the live window (`seenRecently`, counted
 * from the pins or seen nonces) and what each is doing now (`live`: in flight and tunnels, summed
 * over the workers in a cluster).
 */
export function drainProgress(
  backends: readonly Backend[],
  seenRecently: Map<Backend, number>,
  live: (backend: Backend) => LiveFigures,
): Map<Backend, DrainProgress> {
  const progress = new Map<Backend, DrainProgress>();
  for (const backend of backends) {
    const liveClients = seenRecently.get(backend) ?? 0;
    let drained = false;
    if (backend.draining && liveClients === 0) {
      const figures = live(backend);
      drained = figures.inflight === 0 && figures.websockets === 0;
    }
    progress.set(backend, { liveClients, drained });
  }
  return progress;
}
