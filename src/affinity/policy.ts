import type { Socket } from 'node:net';
import type { Backend } from '../upstream/backend.js';
import type { BackendSet } from '../upstream/backend-set.js';
import type { AffinityCookie } from './cookie.js';

export type AffinityMode = 'ip' | 'cookie' | 'header';
export type RemapReason = 'down' | 'drain' | 'removed' | 'recovered';

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
}

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
}

/**
 * What both modes share: walking a client's preference order over the current backend set, and
 * recording a move. Selection itself stays pure (Selector); this adds the usable flags and the remap
 * notice.
 */
export abstract class OrderedAffinity<P extends Placement> implements AffinityPolicy<P> {
  constructor(
    protected readonly set: BackendSet,
    private readonly onRemap: RemapListener,
  ) {}

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

  /** First backend in the key's order that takes new clients, else any that can serve at all. */
  protected pickExcept(keyHash: number, exclude: number): number {
    const set = this.set;
    const index = set.selector.pickExcept(keyHash, set.usableForNew, exclude);
    return index >= 0 ? index : set.selector.pickExcept(keyHash, set.usableForPinned, exclude);
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
