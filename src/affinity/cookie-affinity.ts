import { hashKey } from '../selection/hash.js';
import type { Backend } from '../upstream/backend.js';
import type { BackendSet } from '../upstream/backend-set.js';
import { findCookie, serializeSetCookie, type AffinityCookie, type AffinityCookieCodec, type CookieAttributes } from './cookie.js';
import type { PinTable } from './pin-table.js';
import { OrderedAffinity, Placement, type ClientHints, type ElasticRules, type RemapListener } from './policy.js';

export class CookiePlacement extends Placement {
  /** The client's nonce (new or from its cookie); it keys the client's order and its session count. */
  nonce: string | null = null;
  /** Whether the response must set a cookie naming the backend that served. */
  issueCookie = false;
  /** `onRecovery: return`: the client's original backend while it is away from it. */
  homeId: string | null = null;
  /** When it was placed (unix seconds): the last-seen stamp a cookie issued for it carries. */
  placedAt = 0;
}

/**
 * Most nonces drawn for one new client so that its hash home is the backend round-robin chose: on
 * average 1 / (that backend's weight share) draws; past this the last draw is kept (its client then
 * merely looks away from home, which rebalance corrects once it is idle).
 */
const MAX_NONCE_DRAWS = 256;

/**
 * Affinity by a signed cookie naming the client's backend: the cookie is the state, so every
 * replica with the same secret routes the client alike without sharing anything. New clients are
 * spread exactly by weight (round-robin), with a nonce drawn so that its hash home is the backend
 * chosen; a client whose backend cannot serve moves to the next in its nonce's hash order, which
 * every replica agrees on. With rebalance the cookie also carries a coarse last-seen time, so every
 * replica can tell an idle client without sharing a table.
 */
export class CookieAffinity extends OrderedAffinity<CookiePlacement> {
  /** Re-issue a max-age cookie once a quarter of its life has passed, so active clients never expire. */
  private readonly refreshSeconds: number;
  /** Rebalance: re-stamp the cookie's last-seen time once it is this old (an eighth of idleAfter). */
  private readonly stampSeconds: number;

  constructor(
    set: BackendSet,
    onRemap: RemapListener,
    /** Nonces seen within sessionTtl, with the backend that served them: the sessions gauge, the load cap and busy clients. */
    private readonly seen: PinTable,
    private readonly codec: AffinityCookieCodec,
    private readonly attributes: CookieAttributes,
    private readonly returnOnRecovery: boolean,
    rules: ElasticRules,
  ) {
    super(set, onRemap, rules);
    this.refreshSeconds = attributes.maxAge === null ? 0 : Math.floor((attributes.maxAge / 1000) * 0.75);
    this.stampSeconds = Math.max(1, Math.floor(rules.idleAfterSeconds / 8));
  }

  newPlacement(): CookiePlacement {
    return new CookiePlacement();
  }

  place(placement: CookiePlacement, _socket: unknown, hints: ClientHints, nowMs: number): void {
    const nowSeconds = Math.floor(nowMs / 1000);
    placement.placedAt = nowSeconds;
    const value = hints.cookieHeader === undefined ? undefined : findCookie(hints.cookieHeader, this.attributes.name);
    let cookie = value === undefined ? null : this.codec.decode(value, nowSeconds);
    const connection = hints.connectionAffinity;
    if (cookie === null && connection !== null && connection.cookie !== null) {
      // An HTTP/2 connection's later cookie-less requests present the cookie its first one was given.
      cookie = connection.cookie;
      placement.issueCookie = true;
    }
    if (cookie !== null) this.placeByCookie(placement, cookie, nowSeconds, nowMs);
    else this.placeNew(placement);
    const { nonce, backend } = placement;
    if (nonce === null || backend === null) return;
    this.began(placement, nonce);
    if (this.seen.get(nonce, nowSeconds) !== backend) this.seen.set(nonce, backend, nowSeconds);
    // The connection's cookie-less requests go where its first one went, and follow it when it moves.
    if (connection !== null && (connection.cookie === null || (connection.cookie.nonce === nonce && connection.cookie.backendId !== backend.id))) {
      connection.cookie = { nonce, backendId: backend.id, homeId: placement.homeId, expiresAt: 0, seenAt: 0 };
    }
  }

  responseCookie(placement: CookiePlacement): string | null {
    if (!placement.issueCookie || placement.nonce === null || placement.backend === null) return null;
    const nowMs = Date.now();
    const attributes = this.attributes;
    const expiresAt = attributes.maxAge === null ? 0 : Math.floor((nowMs + attributes.maxAge) / 1000);
    const seenAt = this.rules.activity === null ? 0 : placement.placedAt;
    const value = this.codec.encode({ nonce: placement.nonce, backendId: placement.backend.id, homeId: placement.homeId, expiresAt, seenAt });
    return serializeSetCookie(attributes, value, nowMs);
  }

  protected movedByRetry(placement: CookiePlacement, next: Backend, failed: Backend): void {
    if (placement.nonce === null) return;
    this.seen.set(placement.nonce, next, Math.floor(Date.now() / 1000));
    placement.issueCookie = true;
    if (this.returnOnRecovery) placement.homeId ??= failed.id;
  }

  /** A new client (or one whose cookie we could not trust): spread exactly by weight, within the load cap. */
  private placeNew(placement: CookiePlacement): void {
    const set = this.set;
    let index = set.roundRobin.next(set.usableForNew);
    if (index >= 0 && this.overLoaded(index)) index = this.nextUnderCap(index);
    if (index < 0) index = set.roundRobin.next(set.usableForPinned);
    if (index < 0) return;
    placement.backend = set.backends[index] as Backend;
    // A nonce whose hash home is the backend chosen: its client is at home, so rebalance leaves it be.
    let nonce = this.codec.newNonce();
    let keyHash = hashKey(nonce);
    for (let draws = 1; set.selector.primary(keyHash) !== index && draws < MAX_NONCE_DRAWS; draws++) {
      nonce = this.codec.newNonce();
      keyHash = hashKey(nonce);
    }
    placement.nonce = nonce;
    placement.keyHash = keyHash;
    placement.issueCookie = true;
  }

  /** Round-robin past backends over the load cap; the first choice when every one is over. */
  private nextUnderCap(first: number): number {
    const set = this.set;
    const open = Uint8Array.from(set.usableForNew);
    for (let index = first; index >= 0; index = set.roundRobin.next(open)) {
      if (!this.overLoaded(index)) return index;
      open[index] = 0;
    }
    return first;
  }

  private placeByCookie(placement: CookiePlacement, cookie: AffinityCookie, nowSeconds: number, nowMs: number): void {
    const set = this.set;
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
      if (this.rules.idleAfterSeconds > 0) {
        if (this.idle(cookie, nowSeconds) && this.moveIdleClient(placement, cookie.nonce, pinned, nowMs)) {
          placement.homeId = null;
          placement.issueCookie = true;
          return;
        }
        // Keep the last-seen stamp fresh enough to tell idleness (a cookie without one gets one now).
        if (nowSeconds - cookie.seenAt >= this.stampSeconds) placement.issueCookie = true;
      }
      if (cookie.expiresAt !== 0 && cookie.expiresAt - nowSeconds < this.refreshSeconds) placement.issueCookie = true;
      return;
    }
    // Its backend is down or gone: the next in the nonce's order, which every replica agrees on.
    const index = this.pickExcept(placement.keyHash, pinned === undefined ? -1 : pinned.index);
    if (index < 0) return;
    this.move(placement, set.backends[index] as Backend, cookie.backendId, CookieAffinity.lostReason(pinned));
    placement.issueCookie = true;
    if (this.returnOnRecovery && pinned !== undefined && !pinned.draining) placement.homeId = cookie.homeId ?? cookie.backendId;
  }

  /**
   * Idle at least idleAfter, by the cookie's stamp (which may lag the client's last request by one
   * stamp period) and by what this process saw of the nonce (a request on another connection, or
   * a busy tunnel another worker re-stamped). A cookie without a stamp is not known to be idle.
   */
  private idle(cookie: AffinityCookie, nowSeconds: number): boolean {
    const idleAfter = this.rules.idleAfterSeconds;
    if (cookie.seenAt === 0 || nowSeconds - cookie.seenAt < idleAfter + this.stampSeconds) return false;
    const seen = this.seen;
    return seen.get(cookie.nonce, nowSeconds) === undefined || nowSeconds - seen.previousSeen >= idleAfter + seen.stampPeriodSeconds;
  }
}
