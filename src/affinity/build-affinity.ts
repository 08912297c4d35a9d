import type { BackendSet } from '../upstream/backend-set.js';
import type { ClientAddressResolver } from './client-address.js';
import type { AffinityCookieCodec, CookieAttributes } from './cookie.js';
import { CookieAffinity } from './cookie-affinity.js';
import { KeyAffinity } from './key-affinity.js';
import type { PinTable } from './pin-table.js';
import type { ClientActivity, ElasticSettings, MoveBudget } from './elastic.js';
import type { AffinityMode, AffinityPolicy, ElasticRules, RemapListener } from './policy.js';

export interface AffinitySettings extends ElasticSettings {
  by: AffinityMode;
  cookie: CookieAttributes;
  onRecovery: 'stay' | 'return';
}

/** What outlives a reload and every affinity built over it. */
export interface AffinityMemory {
  /** Remembered pins (ip/header) or seen nonces (cookie). */
  readonly pins: PinTable;
  readonly codec: AffinityCookieCodec;
  readonly clients: ClientAddressResolver;
  readonly onRemap: RemapListener;
  /** Clients with a request in flight or a tunnel open (counted only while rebalance is on). */
  readonly activity: ClientActivity;
  /** This process's share of affinity.rebalance.maxMovesPerSecond. */
  readonly moves: MoveBudget;
}

/** The affinity policy for a config generation's settings and backend set. */
export function buildAffinity(settings: AffinitySettings, set: BackendSet, memory: AffinityMemory): AffinityPolicy {
  const returnOnRecovery = settings.onRecovery === 'return';
  const rebalance = settings.rebalance;
  const rules: ElasticRules = {
    idleAfterSeconds: rebalance === null ? 0 : Math.floor(rebalance.idleAfter / 1000),
    activity: rebalance === null ? null : memory.activity,
    budget: memory.moves,
    maxLoadFactor: settings.maxLoadFactor,
    loads: memory.pins,
  };
  if (settings.by === 'cookie') return new CookieAffinity(set, memory.onRemap, memory.pins, memory.codec, settings.cookie, returnOnRecovery, rules);
  return new KeyAffinity(set, memory.onRemap, memory.pins, memory.clients, settings.by === 'header', returnOnRecovery, rules);
}
