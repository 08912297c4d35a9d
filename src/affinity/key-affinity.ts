import type { Socket } from 'node:net';
import { hashKey } from '../selection/hash.js';
import type { Backend } from '../upstream/backend.js';
import type { BackendSet } from '../upstream/backend-set.js';
import type { ClientAddressResolver } from './client-address.js';
import type { PinTable } from './pin-table.js';
import { OrderedAffinity, Placement, type ClientHints, type ElasticRules, type RemapListener } from './policy.js';

export class KeyPlacement extends Placement {
  /** The pin-table key: the client's address or header value. */
  pinKey: string | null = null;
}

/**
 * Affinity by client address (`by: ip`) or by a request header (`by: header`, falling back to the
 * address when the header is absent). A client's first choice is its key's place in the weighted
 * hash order; the pin table remembers where it actually went, so recoveries and drains move only
 * the clients they must.
 */
export class KeyAffinity extends OrderedAffinity<KeyPlacement> {
  constructor(
    set: BackendSet,
    onRemap: RemapListener,
    private readonly pins: PinTable,
    private readonly clients: ClientAddressResolver,
    /** Header mode: true; the header's value is read into `hints.affinityHeader` while the head is copied. */
    private readonly byHeader: boolean,
    private readonly returnOnRecovery: boolean,
    rules: ElasticRules,
  ) {
    super(set, onRemap, rules);
  }

  newPlacement(): KeyPlacement {
    return new KeyPlacement();
  }

  place(placement: KeyPlacement, socket: Socket, hints: ClientHints, nowMs: number): void {
    const key =
      this.byHeader && hints.affinityHeader !== undefined && hints.affinityHeader !== ''
        ? hints.affinityHeader
        : this.clients.resolve(socket, hints.forwardedFor);
    const nowSeconds = Math.floor(nowMs / 1000);
    const set = this.set;
    const keyHash = hashKey(key);
    placement.keyHash = keyHash;
    placement.pinKey = key;
    const pins = this.pins;
    const pinned = pins.get(key, nowSeconds);
    if (pinned !== undefined) {
      if (pinned.index >= 0 && set.usableForPinned[pinned.index] === 1) {
        placement.backend = pinned;
        if (this.returnOnRecovery && !pinned.draining) {
          const index = set.selector.pick(keyHash, set.usableForNew);
          if (index >= 0 && index !== pinned.index) {
            this.move(placement, set.backends[index] as Backend, pinned.id, 'recovered');
            pins.set(key, placement.backend, nowSeconds);
          }
        } else if (
          // Idle at least idleAfter: its stamp may lag its last request by one stamp period.
          this.rules.idleAfterSeconds > 0 &&
          nowSeconds - pins.previousSeen >= this.rules.idleAfterSeconds + pins.stampPeriodSeconds &&
          this.moveIdleClient(placement, key, pinned, nowMs)
        ) {
          pins.set(key, placement.backend, nowSeconds);
        }
        this.began(placement, key);
        return;
      }
      const index = this.pickExcept(keyHash, pinned.index);
      if (index < 0) return;
      this.move(placement, set.backends[index] as Backend, pinned.id, KeyAffinity.lostReason(pinned));
      pins.set(key, placement.backend as Backend, nowSeconds);
      this.began(placement, key);
      return;
    }
    // Not remembered: the client's first usable choice. If its hash home can't take it, say so, so
    // every replica tells the app the same thing whether or not it had seen this client before.
    // Slow start or the load cap may place it further down its order: it had no session to move.
    const index = this.pickForNew(keyHash, -1);
    if (index < 0) return;
    const backend = set.backends[index] as Backend;
    const home = set.backends[set.selector.primary(keyHash)] as Backend;
    if (home !== backend && set.usableForNew[home.index] === 0) this.move(placement, backend, home.id, home.available ? 'drain' : 'down');
    else placement.backend = backend;
    pins.set(key, backend, nowSeconds);
    this.began(placement, key);
  }

  responseCookie(): null {
    return null;
  }

  protected movedByRetry(placement: KeyPlacement, next: Backend): void {
    if (placement.pinKey !== null) this.pins.set(placement.pinKey, next, Math.floor(Date.now() / 1000));
  }
}
