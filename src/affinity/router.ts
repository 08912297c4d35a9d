import { hashKey } from '../selection/hash.js';
import type { Backend } from '../upstream/backend.js';
import type { BackendSet } from '../upstream/backend-set.js';
import type { ClientAddressResolver } from './client-address.js';
import { AffinityCookieCodec, findCookie, serializeSetCookie, type CookieAttributes } from './cookie.js';
import { PinTable } from './pin-table.js';

export type AffinityMode = 'ip' | 'cookie' | 'header';
export type RemapReason = 'down' | 'drain' | 'removed' | 'recovered';

export interface AffinitySettings {
  by: AffinityMode;
  cookie: CookieAttributes;
  /** Lower-case name of the header that keys clients in header mode. */
  headerName: string;
  onRecovery: 'stay' | 'return';
  sessionTtl: number;
  maxSessions: number;
}

/** What the request tells the router about its client. Filled while the request head is copied. */
export interface ClientHints {
  forwardedFor: string | undefined;
  cookieHeader: string | undefined;
  affinityHeader: string | undefined;
}

/** Receives a remap as it happens (metrics, logs); called once per client moved, not per request. */
export type RemapListener = (from: string, to: Backend, reason: RemapReason) => void;

/**
 * The routing decision for one request, kept for its retries: which backend, whether the client was
 * moved (and from where), and the hash that orders the backends for this client.
 */
export class Placement {
  backend: Backend | null = null;
  /** Orders the backends for this client: hash of its address or header value, or of its cookie nonce. */
  keyHash = 0;
  /** The pin-table key: the client's address or header value, or its cookie nonce. */
  pinKey: string | null = null;
  remappedFrom: string | null = null;
  /** Cookie mode: the client's nonce (new or from its cookie). */
  nonce: string | null = null;
  /** Cookie mode: whether the response must set a cookie naming the backend that served. */
  issueCookie = false;
  /** Cookie mode, `onRecovery: return`: the client's original backend while it is away from it. */
  homeId: string | null = null;
  /** Backends already tried for this request (retries only). */
  tried: Backend[] | null = null;
}

/**
 * Maps a request to its backend: client key → pinned backend, or a remap when that backend can't
 * serve. Selection itself is pure (Selector); this adds memory (pin table, cookie) and policy.
 */
export class AffinityRouter {
  private set: BackendSet;
  private codec: AffinityCookieCodec;
  private secret: string | Buffer;
  readonly pins: PinTable;
  private cookieRefreshSeconds = 0;

  constructor(
    public settings: AffinitySettings,
    secret: string | Buffer,
    private clients: ClientAddressResolver,
    set: BackendSet,
    private readonly onRemap: RemapListener,
  ) {
    this.set = set;
    this.secret = secret;
    this.codec = new AffinityCookieCodec(secret);
    this.pins = new PinTable(settings.sessionTtl, settings.maxSessions);
    this.reconfigure(settings, secret, clients, set);
  }

  /** Applies a reload in place: remembered pins survive, and so do cookies when the secret is unchanged. */
  reconfigure(settings: AffinitySettings, secret: string | Buffer, clients: ClientAddressResolver, set: BackendSet): void {
    this.settings = settings;
    this.clients = clients;
    this.set = set;
    if (!sameSecret(secret, this.secret)) {
      this.secret = secret;
      this.codec = new AffinityCookieCodec(secret);
    }
    this.pins.configure(settings.sessionTtl, settings.maxSessions);
    // Re-issue a max-age cookie once a quarter of its life has passed, so active clients never expire.
    this.cookieRefreshSeconds = settings.cookie.maxAge === null ? 0 : Math.floor((settings.cookie.maxAge / 1000) * 0.75);
  }

  get backends(): BackendSet {
    return this.set;
  }

  /** Decides the backend for a request; leaves `placement.backend` null when no backend can serve. */
  place(placement: Placement, socket: import('node:net').Socket, hints: ClientHints, nowMs: number): void {
    if (this.settings.by === 'cookie') {
      this.placeByCookie(placement, hints, nowMs);
      this.noteCookieClient(placement, Math.floor(nowMs / 1000));
    } else {
      const key =
        this.settings.by === 'header' && hints.affinityHeader !== undefined && hints.affinityHeader !== ''
          ? hints.affinityHeader
          : this.clients.resolve(socket, hints.forwardedFor);
      this.placeByKey(placement, key, Math.floor(nowMs / 1000));
    }
  }

  /**
   * The next backend in this client's order after the ones tried, for a request that never reached
   * its backend. Returns null when there is none left.
   */
  retry(placement: Placement): Backend | null {
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
    // The client now lives on `next`: move its pin (or cookie) there and tell the app where it came from.
    this.move(placement, next, placement.remappedFrom ?? failed.id, 'down');
    if (placement.pinKey !== null) this.pins.set(placement.pinKey, next, Math.floor(Date.now() / 1000));
    if (placement.nonce !== null) {
      placement.issueCookie = true;
      if (this.settings.onRecovery === 'return') placement.homeId ??= failed.id;
    }
    return next;
  }

  /** The Set-Cookie line to send with the response, if the client needs a (new) cookie. */
  setCookieFor(placement: Placement): string | null {
    if (!placement.issueCookie || placement.nonce === null || placement.backend === null) return null;
    const nowMs = Date.now();
    const attributes = this.settings.cookie;
    const expiresAt = attributes.maxAge === null ? 0 : Math.floor((nowMs + attributes.maxAge) / 1000);
    const value = this.codec.encode({
      nonce: placement.nonce,
      backendId: placement.backend.id,
      homeId: placement.homeId,
      expiresAt,
    });
    return serializeSetCookie(attributes, value, nowMs);
  }

  private placeByCookie(placement: Placement, hints: ClientHints, nowMs: number): void {
    const set = this.set;
    const nowSeconds = Math.floor(nowMs / 1000);
    const value = hints.cookieHeader === undefined ? undefined : findCookie(hints.cookieHeader, this.settings.cookie.name);
    const cookie = value === undefined ? null : this.codec.decode(value, nowSeconds);
    if (cookie === null) {
      // A new client (or one whose cookie we could not trust): spread exactly by weight.
      let index = set.roundRobin.next(set.usableForNew);
      if (index < 0) index = set.roundRobin.next(set.usableForPinned);
      if (index < 0) return;
      placement.backend = set.backends[index] as Backend;
      placement.nonce = this.codec.newNonce();
      placement.issueCookie = true;
      placement.keyHash = hashKey(placement.nonce);
      return;
    }
    placement.keyHash = hashKey(cookie.nonce);
    placement.nonce = cookie.nonce;
    const pinned = set.get(cookie.backendId);
    if (pinned !== undefined && set.usableForPinned[pinned.index] === 1) {
      placement.backend = pinned;
      placement.homeId = cookie.homeId;
      if (cookie.homeId !== null && this.settings.onRecovery === 'return') {
        const home = set.get(cookie.homeId);
        if (home !== undefined && set.usableForNew[home.index] === 1) {
          this.move(placement, home, pinned.id, 'recovered');
          placement.homeId = null;
          placement.issueCookie = true;
          return;
        }
      }
      if (cookie.expiresAt !== 0 && cookie.expiresAt - nowSeconds < this.cookieRefreshSeconds) {
        placement.issueCookie = true;
      }
      return;
    }
    // Its backend is down or gone: the next in the nonce's order, which every replica agrees on.
    const index = this.pickExcept(placement.keyHash, pinned === undefined ? -1 : pinned.index);
    if (index < 0) return;
    this.move(placement, set.backends[index] as Backend, cookie.backendId, pinned === undefined ? 'removed' : 'down');
    placement.issueCookie = true;
    if (this.settings.onRecovery === 'return' && pinned !== undefined) placement.homeId = cookie.homeId ?? cookie.backendId;
  }

  private placeByKey(placement: Placement, key: string, nowSeconds: number): void {
    const set = this.set;
    const keyHash = hashKey(key);
    placement.keyHash = keyHash;
    placement.pinKey = key;
    const pinned = this.pins.get(key, nowSeconds);
    if (pinned !== undefined) {
      if (pinned.index >= 0 && set.usableForPinned[pinned.index] === 1) {
        placement.backend = pinned;
        if (this.settings.onRecovery === 'return' && !pinned.draining) {
          const index = set.selector.pick(keyHash, set.usableForNew);
          if (index >= 0 && index !== pinned.index) {
            this.move(placement, set.backends[index] as Backend, pinned.id, 'recovered');
            this.pins.set(key, placement.backend, nowSeconds);
          }
        }
        return;
      }
      const index = this.pickExcept(keyHash, pinned.index);
      if (index < 0) return;
      this.move(placement, set.backends[index] as Backend, pinned.id, pinned.index < 0 ? 'removed' : 'down');
      this.pins.set(key, placement.backend as Backend, nowSeconds);
      return;
    }
    // Not remembered: the client's first usable choice. If its hash home can't take it, say so, so
    // every replica tells the app the same thing whether or not it had seen this client before.
    const index = this.pickExcept(keyHash, -1);
    if (index < 0) return;
    const backend = set.backends[index] as Backend;
    const home = set.backends[set.selector.primary(keyHash)] as Backend;
    if (home !== backend) this.move(placement, backend, home.id, home.available ? 'drain' : 'down');
    else placement.backend = backend;
    this.pins.set(key, backend, nowSeconds);
  }

  /**
   * Cookie clients need no table to be routed, but remembering nonces seen within sessionTtl lets
   * the sessions gauge count them; the pin key also lets a retry move the entry.
   */
  private noteCookieClient(placement: Placement, nowSeconds: number): void {
    const { nonce, backend } = placement;
    if (nonce === null || backend === null) return;
    placement.pinKey = nonce;
    if (this.pins.get(nonce, nowSeconds) !== backend) this.pins.set(nonce, backend, nowSeconds);
  }

  /** First backend in the key's order that takes new clients, else any that can serve at all. */
  private pickExcept(keyHash: number, exclude: number): number {
    const set = this.set;
    const index = set.selector.pickExcept(keyHash, set.usableForNew, exclude);
    return index >= 0 ? index : set.selector.pickExcept(keyHash, set.usableForPinned, exclude);
  }

  private move(placement: Placement, to: Backend, from: string, reason: RemapReason): void {
    placement.backend = to;
    placement.remappedFrom = from;
    this.onRemap(from, to, reason);
  }
}

function sameSecret(a: string | Buffer, b: string | Buffer): boolean {
  return typeof a === 'string' && typeof b === 'string' ? a === b : Buffer.from(a).equals(Buffer.from(b));
}
