import type { LimpetConfig } from '../config/schema.js';
import type { UpstreamError } from '../errors.js';
import type { PassiveEjector } from '../health/passive-ejection.js';
import type { LiveFigures } from '../observe/live-figures.js';
import type { ProxyMetrics } from '../observe/metrics.js';
import type { Backend, BackendChange, BackendSettings } from '../upstream/backend.js';

/** The parts of a running proxy a role's behaviour is built from. */
export interface LocalParts {
  readonly passive: PassiveEjector;
  readonly metrics: ProxyMetrics;
}

/** What differs between the parts a process can play, as behaviour the proxy calls without asking which. */
export interface RoleBehaviour {
  /** A failure on real traffic that puts `backend`'s health in question. */
  failureSeen(backend: Backend, failure: UpstreamError): void;
  /** A backend changed state here (after selection was refreshed). */
  backendChanged(backend: Backend, change: BackendChange): void;
  /** Discovery changed the backends here (applied already): who else serves must get the same set. */
  backendsApplied(backends: readonly BackendSettings[]): void;
  /** Told of every pin written or refreshed here; null when nobody needs to know. */
  readonly pinWritten: ((key: string, backend: Backend) => void) | null;
  /** Pins this process took from elsewhere (shared state, a state file), as [key, backend id]: workers need them too. */
  pinsLearnt(pins: [string, string][]): void;
  /** What a backend is doing right now, for the admin API. */
  live(backend: Backend): LiveFigures;
  /** The /metrics text. */
  exposition(): Promise<string>;
  /** This process's share of affinity.rebalance.maxMovesPerSecond, a rate for the whole proxy: workers split it. */
  movesPerSecond(config: LimpetConfig): number;
}

/**
 * The part a process plays. A standalone proxy does everything. With `workers` > 1 the primary
 * holds the one health view (checks, passive ejection), the admin port and the reloader, and serves
 * no traffic; each worker serves traffic and reports what it learns to the primary.
 */
export interface ProcessRole {
  /** Accepts client connections on the proxy port. */
  readonly servesTraffic: boolean;
  /** Runs the active checks and serves the admin port: the process whose health view counts. */
  readonly decidesHealth: boolean;
  behaviour(local: LocalParts): RoleBehaviour;
}

/** Everything in one process. */
export const STANDALONE: ProcessRole = {
  servesTraffic: true,
  decidesHealth: true,
  behaviour: (local) => ({
    failureSeen: (backend) => local.passive.recordFailure(backend, Date.now()),
    backendChanged: () => {},
    backendsApplied: () => {},
    pinWritten: null,
    pinsLearnt: () => {},
    live: (backend) => local.metrics.live(backend),
    exposition: () => local.metrics.exposition(),
    movesPerSecond: (config) => config.affinity.rebalance?.maxMovesPerSecond ?? 0,
  }),
};
