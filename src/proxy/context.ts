import type { Logger } from '../observe/log.js';
import type { ClientAddressResolver } from '../affinity/client-address.js';
import type { AffinityPolicy } from '../affinity/policy.js';
import type { LocalResourceError, UpstreamError } from '../errors.js';
import type { Backend } from '../upstream/backend.js';
import type { ClientLimits } from './client-limits.js';

/** Hooks for what the data path learns: passive health and metrics listen here. */
export interface ExchangeObserver {
  /** A request met a failure at `backend` that puts its health in question: passive detection counts these. */
  upstreamFailed(backend: Backend, failure: UpstreamError): void;
  /** A request failed for want of something of limpet's own (descriptors, ports): the operator must hear of it. */
  localLimitReached(failure: LocalResourceError): void;
  /** A request that failed at `failed` is being sent again. */
  retried(failed: Backend): void;
  /** A response (or proxy error) was sent for a request placed on `backend`; duration in seconds. */
  completed(backend: Backend | null, status: number, seconds: number): void;
}

/** What forwarding needs from the running proxy; built per config generation and swapped whole on reload. */
export interface ForwardingContext {
  readonly affinity: AffinityPolicy;
  readonly clients: ClientAddressResolver;
  /** Time allowed for response headers, and between body chunks, before a 504 / cut. */
  readonly responseTimeout: number;
  /** Time allowed to open a tunnel's connection to the backend. */
  readonly connectTimeout: number;
  /** Time a client may take no bytes of a response or tunnel before it is cut off. */
  readonly clientSendTimeout: number;
  /** Idle time after which a tunnel is closed. */
  readonly tunnelIdle: number;
  readonly retries: number;
  readonly protocol: 'http' | 'https';
  /** Lower-case name of the affinity header in header mode, else null. */
  readonly affinityHeader: string | null;
  readonly limits: ClientLimits;
  readonly accessLog: Logger | null;
  /** Whether the access log's path keeps its query string, which can carry tokens (log.accessQuery). */
  readonly accessLogQuery: boolean;
  readonly observer: ExchangeObserver;
}
