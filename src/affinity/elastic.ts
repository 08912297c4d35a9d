import type { PinTable } from './pin-table.js';

/** `affinity.rebalance` and `balance.maxLoadFactor`, as affinity reads them. */
export interface ElasticSettings {
  /** Null: a live client is never moved. */
  rebalance: { idleAfter: number; maxMovesPerSecond: number } | null;
  maxLoadFactor: number | null;
}

/**
 * Clients with a request in flight or an open tunnel here, by key (address, header value or nonce).
 * Rebalance never moves such a client. Kept only while rebalance is on: one map update when a
 * request starts and one when it ends.
 */
export class ClientActivity {
  private readonly busy = new Map<string, number>();

  begin(key: string): void {
    this.busy.set(key, (this.busy.get(key) ?? 0) + 1);
  }

  end(key: string): void {
    const left = (this.busy.get(key) ?? 1) - 1;
    if (left > 0) this.busy.set(key, left);
    else this.busy.delete(key);
  }

  isBusy(key: string): boolean {
    return this.busy.has(key);
  }

  get size(): number {
    return this.busy.size;
  }

  /**
   * Re-stamps the pins of busy clients: a long download or an open WebSocket sends no new request,
   * yet its client is not idle — here, and in the other workers, which learn the stamp with the pin.
   */
  stampBusy(pins: PinTable, nowSeconds: number): void {
    for (const key of this.busy.keys()) pins.touch(key, nowSeconds);
  }
}

/**
 * A token bucket for voluntary moves (rebalance, idle clients of a draining backend): at most
 * `perSecond` on average, in bursts of at most one second's worth, so a scale-up does not move
 * every returning client at once.
 */
export class MoveBudget {
  private tokens: number;
  private refilledAt = 0;
  private perSecond: number;

  constructor(perSecond: number) {
    this.perSecond = perSecond;
    this.tokens = Math.max(1, perSecond);
  }

  configure(perSecond: number): void {
    this.perSecond = perSecond;
    this.tokens = Math.min(this.tokens, Math.max(1, perSecond));
  }

  /** Takes one move if the budget allows it now. */
  take(nowMs: number): boolean {
    const capacity = Math.max(1, this.perSecond);
    this.tokens = Math.min(capacity, this.tokens + ((nowMs - this.refilledAt) / 1000) * this.perSecond);
    this.refilledAt = nowMs;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
