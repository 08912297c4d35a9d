import { hashKey } from '../selection/hash.js';
import type { Backend } from '../upstream/backend.js';
import type { BackendSet } from '../upstream/backend-set.js';
import { findCookie, serializeSetCookie, type AffinityCookieCodec, type CookieAttributes } from './cookie.js';
import type { PinTable } from './pin-table.js';
import { OrderedAffinity, Placement, type ClientHints, type RemapListener } from './policy.js';

export class CookiePlacement extends Placement {
  /** The client's nonce (new or from its cookie); it keys the client's order and its session count. */
  nonce: string | null = null;
  /** Whether the response must set a cookie naming the backend that served. */
  issueCookie = false;
  /** `onRecovery: return`: the client's original backend while it is away from it. */
  homeId: string | null = null;
}

/**
 * Affinity by a signed cookie naming the client's backend: the cookie is the state, so every
 * replica with the same secret routes the client alike without sharing anything. New clients are
 * spread exactly by weight (round-robin); a client whose backend cannot serve moves to the next in
 * its nonce's hash order, which every replica agrees on.
 */
export class CookieAffinity extends OrderedAffinity<CookiePlacement> {
  /** Re-issue a max-age cookie once a quarter of its life has passed, so active clients never expire. */
  private readonly refreshSeconds: number;

  constructor(
    set: BackendSet,
    onRemap: RemapListener,
    /** Remembers nonces seen within sessionTtl: not for routing, only so the sessions gauge can count them. */
    private readonly seen: PinTable,
    private readonly codec: AffinityCookieCodec,
    private readonly attributes: CookieAttributes,
    private readonly returnOnRecovery: boolean,
  ) {
    super(set, onRemap);
    this.refreshSeconds = attributes.maxAge === null ? 0 : Math.floor((attributes.maxAge / 1000) * 0.75);
  }

  newPlacement(): CookiePlacement {
    return new CookiePlacement();
  }

  place(placement: CookiePlacement, _socket: unknown, hints: ClientHints, nowMs: number): void {
    const nowSeconds = Math.floor(nowMs / 1000);
    this.placeByCookie(placement, hints, nowSeconds);
    const { nonce, backend } = placement;
    if (nonce !== null && backend !== null && this.seen.get(nonce, nowSeconds) !== backend) this.seen.set(nonce, backend, nowSeconds);
    // A client moved off its backend: its connection's cookie-less requests follow it there.
    const connection = hints.connectionAffinity;
    const shared = connection?.cookie;
    if (connection != null && shared != null && backend !== null && shared.nonce === nonce && shared.backendId !== backend.id) {
      connection.cookie = { nonce: shared.nonce, backendId: backend.id, homeId: placement.homeId, expiresAt: 0 };
    }
  }

  responseCookie(placement: CookiePlacement): string | null {
    if (!placement.issueCookie || placement.nonce === null || placement.backend === null) return null;
    const nowMs = Date.now();
    const attributes = this.attributes;
    const expiresAt = attributes.maxAge === null ? 0 : Math.floor((nowMs + attributes.maxAge) / 1000);
    const value = this.codec.encode({ nonce: placement.nonce, backendId: placement.backend.id, homeId: placement.homeId, expiresAt });
    return serializeSetCookie(attributes, value, nowMs);
  }

  protected movedByRetry(placement: CookiePlacement, next: Backend, failed: Backend): void {
    if (placement.nonce === null) return;
    this.seen.set(placement.nonce, next, Math.floor(Date.now() / 1000));
    placement.issueCookie = true;
    if (this.returnOnRecovery) placement.homeId ??= failed.id;
  }

  private placeByCookie(placement: CookiePlacement, hints: ClientHints, nowSeconds: number): void {
    const set = this.set;
    const value = hints.cookieHeader === undefined ? undefined : findCookie(hints.cookieHeader, this.attributes.name);
    let cookie = value === undefined ? null : this.codec.decode(value, nowSeconds);
    const connection = hints.connectionAffinity;
    if (cookie === null && connection !== null) {
      // An HTTP/2 connection's later cookie-less requests present the cookie its first one was given.
      cookie = connection.cookie;
      placement.issueCookie = true;
    }
    if (cookie === null) {
      // A new client (or one whose cookie we could not trust): spread exactly by weight.
      let index = set.roundRobin.next(set.usableForNew);
      if (index < 0) index = set.roundRobin.next(set.usableForPinned);
      if (index < 0) return;
      placement.backend = set.backends[index] as Backend;
      placement.nonce = this.codec.newNonce();
      placement.issueCookie = true;
      placement.keyHash = hashKey(placement.nonce);
      if (connection !== null) connection.cookie = { nonce: placement.nonce, backendId: placement.backend.id, homeId: null, expiresAt: 0 };
      return;
    }
    placement.keyHash = hashKey(cookie.nonce);
    placement.nonce = cookie.nonce;
    const pinned = set.get(cookie.backendId);
    if (pinned !== undefined && set.usableForPinned[pinned.index] === 1) {
      placement.backend = pinned;
      placement.homeId = cookie.homeId;
      if (cookie.homeId !== null && this.returnOnRecovery) {
        const home = set.get(cookie.homeId);
        if (home !== undefined && set.usableForNew[home.index] === 1) {
          this.move(placement, home, pinned.id, 'recovered');
          placement.homeId = null;
          placement.issueCookie = true;
          return;
        }
      }
      if (cookie.expiresAt !== 0 && cookie.expiresAt - nowSeconds < this.refreshSeconds) placement.issueCookie = true;
      return;
    }
    // Its backend is down or gone: the next in the nonce's order, which every replica agrees on.
    const index = this.pickExcept(placement.keyHash, pinned === undefined ? -1 : pinned.index);
    if (index < 0) return;
    this.move(placement, set.backends[index] as Backend, cookie.backendId, pinned === undefined ? 'removed' : 'down');
    placement.issueCookie = true;
    if (this.returnOnRecovery && pinned !== undefined) placement.homeId = cookie.homeId ?? cookie.backendId;
  }
}
