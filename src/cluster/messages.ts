import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { LimpetConfig } from '../config/schema.js';
import type { BackendHealthUpdate, BackendSettings } from '../upstream/backend.js';
import type { LiveFigures } from '../observe/live-figures.js';

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** Primary → worker. */
export type ToWorker =
  | { t: 'init'; config: LimpetConfig; backends: readonly BackendSettings[]; states: BackendHealthUpdate[]; pins: [string, string][] }
  | { t: 'state'; update: BackendHealthUpdate }
  | { t: 'pins'; pins: [string, string][] }
  /** `backends`: the primary's after the reload, discovered ones included. */
  | { t: 'reload'; config: LimpetConfig; backends: readonly BackendSettings[] }
  /** Discovery changed the backends; their health follows as `state` updates. */
  | { t: 'backends'; backends: readonly BackendSettings[] }
  | { t: 'metrics'; id: number }
  | { t: 'stop' };

/** Worker → primary. */
export type ToPrimary =
  | { t: 'hello' }
  /** Serving: the listener is bound. */
  | { t: 'ready' }
  /** The listener could not bind (a ListenError's fields; `code` and `reason` are its cause's). */
  | { t: 'listenFailed'; host: string; port: number; setting: string; code: string; reason: string }
  | { t: 'failed'; id: string; message: string }
  | { t: 'pins'; pins: [string, string][] }
  | { t: 'metrics'; id: number; json: MetricsJson }
  | { t: 'live'; figures: Record<string, LiveFigures> };
