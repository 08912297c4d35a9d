/**
 * The runtime state worth keeping beyond this process — for a restart (`stateFile`) or for other
 * replicas (`sharedState`): remembered pins and the drains made through the admin API. Everything
 * else (health, counters) is rebuilt from the config and the backends themselves.
 */

/** A remembered pin: client key (address, header value or cookie nonce), backend id, last-seen unix second. */
export type PinRecord = [key: string, backendId: string, seenSecond: number];

/**
 * A drain or undrain made through the admin API. It overrides the config file's `drain` for that
 * backend until the file itself changes that backend's drain.
 */
export interface RuntimeDrain {
  id: string;
  draining: boolean;
  /** Epoch ms when its remaining clients move; null for none. */
  deadlineAt: number | null;
}

export interface DurableState {
  pins: PinRecord[];
  drains: RuntimeDrain[];
}

/** Where runtime state goes as it changes. Called on the event loop of the process that owns the state; must not block. */
export interface StateSink {
  pinWritten(record: PinRecord): void;
  drainChanged(drain: RuntimeDrain): void;
  /** The config file changed this backend's drain: the runtime one no longer applies. */
  drainForgotten(id: string): void;
  /** Writes what is pending; called at shutdown. */
  close(): Promise<void>;
}
