import type { Socket } from 'node:net';
import { mix32 } from '../selection/hash.js';
import type { Backend } from '../upstream/backend.js';
import type { BackendSet } from '../upstream/backend-set.js';
import type { AffinityCookie } from './cookie.js';
import type { ClientActivity, MoveBudget } from './elastic.js';
import type { PinTable } from './pin-table.js';

export type AffinityMode = 'ip' | 'cookie' | 'header';
export type RemapReason = 'down' | 'drain' | 'removed' | 'recovered' | 'rebalance';

/** What the request tells affinity about its client. Filled while the request head is copied. */
export interface ClientHints {
  forwardedFor: string | undefined;
  cookieHeader: string | undefined;
  affinityHeader: string | undefined;
  /** HTTP/2: what the client's connection remembers for its requests without an affinity cookie; null otherwise. */
  connectionAffinity: ConnectionAffinity | null;
}

/**
 * What one HTTP/2 connection remembers for its requests that carry no affinity cookie. A browser
 * sends a page's requests in parallel on one connection before the first Set-Cookie is back: they
 * are one client, and go where the first of them went, with the same cookie (haproxy#2295).
 */
export class ConnectionAffinity {
  /** The cookie the connection's first cookie-less request was given; null until then. */
  cookie: AffinityCookie | null = null;
}

/** Receives a remap as it happens (metrics, logs); called once per client moved, not per request. */
export type RemapListener = (from: string, to: Backend, reason: RemapReason) => void;

/**
 * The routing decision for one request, kept for its retries. Each affinity mode extends it with
 * what that mode needs to remember.
 */
export class Placement {
  backend: Backend | null = null;
  /** Orders the backends for this client: hash of its key (address, header value or cookie nonce). */
  keyHash = 0;
  /** The id of the backend the client was moved away from, for `X-Limpet-Remapped-From`. */
  remappedFrom: string | null = null;
  /** Backends already tried for this request (retries only). */
  tried: Backend[] | null = null;
  /** The client key counted busy for this request while rebalance is on, until `released`. */
  busyKey: string | null = null;
}

/**
 * What shapes placement beyond the hash order: slow start and the load cap for clients placed
 * afresh, and rebalance (moving idle clients home). Shared by every policy built over one memory.
 */
export interface ElasticRules {
  /** `affinity.rebalance.idleAfter` in whole seconds; 0 when rebalance is off. */
  readonly idleAfterSeconds: number;
  /** Busy clients, never moved; null when rebalance is off. */
  readonly activity: ClientActivity | null;
  readonly budget: MoveBudget;
  readonly maxLoadFactor: number | null;
  /** Where live clients are counted for the load cap: remembered pins (ip/header) or seen nonces (cookie). */
  readonly loads: PinTable;
}

/** Salt of the hash that decides which keys a ramping backend admits, independent of the key's order. */
const RAMP_SALT = 0x72616d70;

/**
 * How clients are kept on their backend: one implementation per kind of key (address or header,
 * signed cookie). The data path asks only these three questions and never knows which mode runs.
 */
export interface AffinityPolicy<P extends Placement = Placement> {
  newPlacement(): P;
  /** Decides the backend for a request; leaves `placement.backend` null when no backend can serve. */
  place(placement: P, socket: Socket, hints: ClientHints, nowMs: number): void;
  /**
   * The next backend in this client's order after the ones tried, for a request that never reached
   * its backend; the client's pin moves there. Null when none is left.
   */
  retry(placement: P): Backend | null;
  /** The Set-Cookie line to send with the response, if the client needs a (new) cookie. */
  responseCookie(placement: P): string | null;
  /** The request (or tunnel) placed with `placement` is over; its client may count as idle again. */
  released(placement: P): void;
}

/**
 * What both modes share: walking a client's preference order over the current backend set, and
 * recording a move. Selection itself stays pure (Selector); this adds the usable flags and the remap
 * notice.
 */
export abstract class OrderedAffinity<P extends Placement> implements AffinityPolicy<P> {
  /** Backend indices still open to a capped pick; reused, as placement is synchronous. */
  private scratch: Uint8Array;

  constructor(
    protected readonly set: BackendSet,
    private readonly onRemap: RemapListener,
    protected readonly rules: ElasticRules,
  ) {
    this.scratch = new Uint8Array(set.backends.length);
  }

  abstract newPlacement(): P;
  abstract place(placement: P, socket: Socket, hints: ClientHints, nowMs: number): void;
  abstract responseCookie(placement: P): string | null;
  /** Records where a retried client now lives (its pin or its cookie). */
  protected abstract movedByRetry(placement: P, next: Backend, failed: Backend): void;

  retry(placement: P): Backend | null {
    const failed = placement.backend as Backend;
    const tried = (placement.tried ??= []);
    tried.push(failed);
    const set = this.set;
    const usable = Uint8Array.from(set.usableForNew);
    for (const backend of tried) if (backend.index >= 0) usable[backend.index] = 0;
    let index = set.selector.pick(placement.keyHash, usable);
    if (index < 0) {
      usable.set(set.usableForPinned);
      for (const backend of tried) if (backend.index >= 0) usable[backend.index] = 0;
      index = set.selector.pick(placement.keyHash, usable);
    }
    if (index < 0) return null;
    const next = set.backends[index] as Backend;
    // The client now lives on `next`: tell the app where it came from.
    this.move(placement, next, placement.remappedFrom ?? failed.id, 'down');
    this.movedByRetry(placement, next, failed);
    return next;
  }

  released(placement: P): void {
    const key = placement.busyKey;
    if (key === null) return;
    placement.busyKey = null;
    this.rules.activity?.end(key);
  }

  /** Counts the client busy until its request is released (rebalance on only). */
  protected began(placement: P, key: string): void {
    const activity = this.rules.activity;
    if (activity === null) return;
    activity.begin(key);
    placement.busyKey = key;
  }

  /** First backend in the key's order that takes new clients, else any that can serve at all. */
  protected pickExcept(keyHash: number, exclude: number): number {
    const set = this.set;
    const index = set.selector.pickExcept(keyHash, set.usableForNew, exclude);
    return index >= 0 ? index : set.selector.pickExcept(keyHash, set.usableForPinned, exclude);
  }

  /**
   * For a client placed afresh or moved by choice: the first backend in its order that takes new
   * clients and that slow start and the load cap admit; if none admits it, the first that takes
   * new clients; else any that can serve.
   */
  protected pickForNew(keyHash: number, exclude: number): number {
    const set = this.set;
    const first = set.selector.pickExcept(keyHash, set.usableForNew, exclude);
    if (first < 0) return set.selector.pickExcept(keyHash, set.usableForPinned, exclude);
    if (this.admits(first, keyHash)) return first;
    const open = this.scratch;
    open.set(set.usableForNew);
    open[first] = 0;
    if (exclude >= 0) open[exclude] = 0;
    for (;;) {
      const next = set.selector.pick(keyHash, open);
      if (next < 0) return first;
      if (this.admits(next, keyHash)) return next;
      open[next] = 0;
    }
  }

  /**
   * Whether a new client with this key may go to the backend at `index` now: a ramping backend
   * admits the keys whose ramp hash falls within its fraction (the same keys on every replica, and
   * more of them as it ramps), and a backend over the load cap admits none.
   */
  protected admits(index: number, keyHash: number): boolean {
    const fraction = this.set.rampFraction[index] as number;
    if (fraction < 1 && mix32((keyHash ^ RAMP_SALT) >>> 0) >= fraction * 0x1_0000_0000) return false;
    return !this.overLoaded(index);
  }

  /**
   * `balance.maxLoadFactor`: the backend holds more than the factor times its weighted share of
   * the live clients of the backends taking new ones (counting the client being placed, as HAProxy's
   * bounded-load hashing does).
   */
  protected overLoaded(index: number): boolean {
    const factor = this.rules.maxLoadFactor;
    if (factor === null) return false;
    const { backends, usableForNew } = this.set;
    const loads = this.rules.loads;
    let clients = 0;
    let weights = 0;
    for (let i = 0; i < backends.length; i++) {
      if (usableForNew[i] === 0) continue;
      const backend = backends[i] as Backend;
      clients += loads.count(backend);
      weights += this.set.effectiveWeight(backend);
    }
    const backend = backends[index] as Backend;
    const share = weights === 0 ? 1 : this.set.effectiveWeight(backend) / weights;
    return loads.count(backend) + 1 > factor * share * (clients + 1);
  }

  /**
   * Rebalance, for a client idle long enough and with nothing in flight elsewhere: one pinned to a
   * backend that is not its home goes home, when its home takes new clients and admits it; one
   * pinned to a draining backend goes where a new client would. Within the move budget; returns
   * whether it moved.
   */
  protected moveIdleClient(placement: P, key: string, pinned: Backend, nowMs: number): boolean {
    const { activity, budget } = this.rules;
    if (activity === null || activity.isBusy(key)) return false;
    const set = this.set;
    let target: number;
    if (pinned.draining) {
      target = this.pickForNew(placement.keyHash, pinned.index);
      if (target < 0 || set.usableForNew[target] === 0) return false;
    } else {
      target = set.selector.primary(placement.keyHash);
      if (target === pinned.index || set.usableForNew[target] === 0 || !this.admits(target, placement.keyHash)) return false;
    }
    if (!budget.take(nowMs)) return false;
    this.move(placement, set.backends[target] as Backend, pinned.id, pinned.draining ? 'drain' : 'rebalance');
    return true;
  }

  /** Why a client whose backend can no longer serve it moves. */
  protected static lostReason(pinned: Backend | undefined): RemapReason {
    if (pinned === undefined || pinned.index < 0) return 'removed';
    return pinned.draining && pinned.available ? 'drain' : 'down';
  }

  /**
   * Places the client on `to`, moved away from the backend with id `from`. Landing back on a
   * backend of that id (removed and added again, or a retry returning where the client was) is no
   * move: no remap notice, nothing counted.
   */
  protected move(placement: P, to: Backend, from: string, reason: RemapReason): void {
    placement.backend = to;
    if (to.id === from) {
      placement.remappedFrom = null;
      return;
    }
    placement.remappedFrom = from;
    this.onRemap(from, to, reason);
  }
}
