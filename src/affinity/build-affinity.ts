import type { BackendSet } from '../upstream/backend-set.js';
import type { ClientAddressResolver } from './client-address.js';
import type { AffinityCookieCodec, CookieAttributes } from './cookie.js';
import { CookieAffinity } from './cookie-affinity.js';
import { KeyAffinity } from './key-affinity.js';
import type { PinTable } from './pin-table.js';
import type { AffinityMode, AffinityPolicy, RemapListener } from './policy.js';

export interface AffinitySettings {
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
}

/** The affinity policy for a config generation's settings and backend set. */
export function buildAffinity(settings: AffinitySettings, set: BackendSet, memory: AffinityMemory): AffinityPolicy {
  const returnOnRecovery = settings.onRecovery === 'return';
  if (settings.by === 'cookie') return new CookieAffinity(set, memory.onRemap, memory.pins, memory.codec, settings.cookie, returnOnRecovery);
  return new KeyAffinity(set, memory.onRemap, memory.pins, memory.clients, settings.by === 'header', returnOnRecovery);
}
