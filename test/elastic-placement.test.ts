import { afterEach, describe, expect, it } from 'vitest';
import type { Socket } from 'node:net';
import { buildAffinity, type AffinityMemory, type AffinitySettings } from '../src/affinity/build-affinity.js';
import { ClientAddressResolver } from '../src/affinity/client-address.js';
import { AffinityCookieCodec } from '../src/affinity/cookie.js';
import { ClientActivity, MoveBudget } from '../src/affinity/elastic.js';
import { PinTable } from '../src/affinity/pin-table.js';
import type { AffinityPolicy, ClientHints, Placement, RemapReason } from '../src/affinity/policy.js';
import { hashKey } from '../src/selection/hash.js';
import type { Backend, BackendSettings, HealthCheckResult } from '../src/upstream/backend.js';
import { BackendRegistry } from '../src/upstream/backend-registry.js';

/**
 * Elastic placement over the real policies with a fake clock: every `place` is given its time, so
 * hours of idleness and a minute of slow start run in milliseconds, exactly.
 */

const pool = { connectTimeout: 1000, keepAliveTimeout: 1000, maxConnections: 0 };
const checkPolicy = { rise: 1, fall: 1, cooldown: 0 };
const T0 = 1_700_000_000_000;
const SOCKET = { remoteAddress: '10.9.9.9' } as Socket;

const registries: BackendRegistry[] = [];
afterEach(async () => {
  await Promise.all(registries.splice(0).map((registry) => registry.close()));
});

function entries(ids: readonly string[]): BackendSettings[] {
  return ids.map((id, i) => ({ id, url: `http://127.0.0.1:${4000 + i}`, weight: 1, drain: false, drainDeadline: null, healthPath: null }));
}

const ids = (n: number) => Array.from({ length: n }, (_, i) => `app-${i + 1}`);
const passed = (at: number): HealthCheckResult => ({ at, ok: true, status: 200, error: null, durationMs: 1 });

interface Fleet {
  registry: BackendRegistry;
  memory: AffinityMemory;
  remaps: { from: string; to: string; reason: RemapReason }[];
  policy: AffinityPolicy;
  /** Rebuilds the policy over the registry's current set, as a reload does. */
  rebuild(): void;
  /** Adds a backend as a reload does and lets its first check pass at `at`. */
  add(id: string, at: number): Backend;
}

function fleet(
  by: 'header' | 'cookie',
  count: number,
  options: { idleAfter?: number; maxMovesPerSecond?: number; maxLoadFactor?: number; slowStart?: number } = {},
): Fleet {
  const registry = new BackendRegistry(entries(ids(count)), pool, options.slowStart ?? 0);
  registries.push(registry);
  const remaps: Fleet['remaps'] = [];
  const idleAfter = options.idleAfter ?? null;
  const memory: AffinityMemory = {
    pins: new PinTable(3_600_000, 1_000_000, idleAfter),
    codec: new AffinityCookieCodec('elastic-test-secret'),
    clients: new ClientAddressResolver([]),
    onRemap: (from, to, reason) => remaps.push({ from, to: to.id, reason }),
    activity: new ClientActivity(),
    moves: new MoveBudget(options.maxMovesPerSecond ?? 1_000_000),
  };
  const settings: AffinitySettings = {
    by,
    cookie: { name: 'limpet', maxAge: null, path: '/', domain: null, httpOnly: true, secure: false, sameSite: 'lax' },
    onRecovery: 'stay',
    rebalance: idleAfter === null ? null : { idleAfter, maxMovesPerSecond: options.maxMovesPerSecond ?? 1_000_000 },
    maxLoadFactor: options.maxLoadFactor ?? null,
  };
  const made: Fleet = {
    registry,
    memory,
    remaps,
    policy: buildAffinity(settings, registry.set, memory),
    rebuild() {
      made.policy = buildAffinity(settings, registry.set, memory);
    },
    add(id, at) {
      registry.apply(entries([...registry.backends.map((b) => b.id), id]), pool, new Map());
      const added = registry.get(id) as Backend;
      added.checkCompleted(passed(at), checkPolicy);
      registry.set.refresh(at);
      made.rebuild();
      return added;
    },
  };
  return made;
}

/** One request of a header-keyed client at `now`; released at once unless `hold`. */
function visit(f: Fleet, key: string, now: number, hold = false): Placement {
  const placement = f.policy.newPlacement();
  const hints: ClientHints = { forwardedFor: undefined, cookieHeader: undefined, affinityHeader: key, connectionAffinity: null };
  f.policy.place(placement, SOCKET, hints, now);
  if (!hold) f.policy.released(placement);
  return placement;
}

/** One request of a cookie client; returns the placement and the cookie it holds afterwards. */
function visitWithCookie(f: Fleet, cookie: string | undefined, now: number): { placement: Placement; cookie: string } {
  const placement = f.policy.newPlacement();
  f.policy.place(placement, SOCKET, { forwardedFor: undefined, cookieHeader: cookie, affinityHeader: undefined, connectionAffinity: null }, now);
  const line = f.policy.responseCookie(placement);
  f.policy.released(placement);
  return { placement, cookie: line === null ? (cookie as string) : (line.split(';')[0] as string) };
}

const homeOf = (f: Fleet, keyHash: number) => f.registry.set.backends[f.registry.set.selector.primary(keyHash)] as Backend;

describe('rebalance (fake clock)', () => {
  it('4 → 5 backends: idle clients whose home is the new backend move on their next request, active ones never', () => {
    const f = fleet('header', 4, { idleAfter: 30_000 });
    const keys = Array.from({ length: 1000 }, (_, i) => `client-${i}`);
    const active = keys.filter((_, i) => i % 2 === 0);
    const idle = keys.filter((_, i) => i % 2 === 1);
    const first = new Map(keys.map((key) => [key, visit(f, key, T0).backend as Backend]));
    const app5 = f.add('app-5', T0 + 1_000);
    // Active clients request every 0.5 s for a minute; not one moves, even those whose home is now app-5.
    for (let t = T0 + 1_500; t <= T0 + 60_000; t += 500) {
      for (const key of active) {
        const placement = visit(f, key, t);
        expect(placement.backend).toBe(first.get(key));
        expect(placement.remappedFrom).toBeNull();
      }
    }
    // The idle half returns after 60 s: exactly those whose home is no longer their backend move
    // home, with the notice — app-5's share, and the few keys Maglev shifted between old backends.
    const movers = idle.filter((key) => homeOf(f, hashKey(key)) !== first.get(key));
    for (const key of idle) {
      const placement = visit(f, key, T0 + 60_000);
      expect(placement.backend).toBe(homeOf(f, hashKey(key)));
      expect(placement.remappedFrom).toBe(movers.includes(key) ? first.get(key)!.id : null);
    }
    expect(f.remaps.every((remap) => remap.reason === 'rebalance')).toBe(true);
    expect(f.remaps).toHaveLength(movers.length);
    expect(f.remaps.filter((remap) => remap.to !== 'app-5').length).toBeLessThan(movers.length * 0.1);
    // Of the idle clients, about the new backend's share (1/5) moved to it.
    expect(Math.abs(f.remaps.filter((remap) => remap.to === 'app-5').length / idle.length - 0.2)).toBeLessThan(0.05);
    // Their next request is no move.
    for (const key of movers) expect(visit(f, key, T0 + 61_000).remappedFrom).toBeNull();
    // New clients take app-5 at its share at once.
    const fresh = Array.from({ length: 2000 }, (_, i) => visit(f, `new-${i}`, T0 + 61_000).backend);
    expect(Math.abs(fresh.filter((b) => b === app5).length / 2000 - 0.2)).toBeLessThan(0.05);
  });

  it('never moves a client with a request in flight, even if it has been idle since', () => {
    const f = fleet('header', 2, { idleAfter: 10_000 });
    const key = Array.from({ length: 200 }, (_, i) => `k${i}`).find((k) => visit(f, k, T0).backend!.id === 'app-1' && true)!;
    f.registry.get('app-2')!.setDraining(true, null, T0);
    f.rebuild();
    const long = visit(f, key, T0 + 1_000, true); // a long download still running
    expect(long.backend!.id).toBe('app-1');
    f.registry.get('app-2')!.setDraining(false);
    f.registry.get('app-1')!.setDraining(true, null, T0 + 2_000);
    f.rebuild();
    // A second request an hour later, while the first is still in flight: it stays.
    expect(visit(f, key, T0 + 3_600_000).backend!.id).toBe('app-1');
    f.policy.released(long);
    // Nothing in flight now, but the request just made was activity: idle again first.
    expect(visit(f, key, T0 + 3_600_000 + 1_000).backend!.id).toBe('app-1');
    const moved = visit(f, key, T0 + 3_600_000 + 20_000);
    expect([moved.backend!.id, moved.remappedFrom]).toEqual(['app-2', 'app-1']);
    expect(f.remaps.at(-1)?.reason).toBe('drain');
  });

  it('moves at most maxMovesPerSecond clients a second; the rest move after their next idle period', () => {
    const f = fleet('header', 4, { idleAfter: 5_000, maxMovesPerSecond: 10 });
    const keys = Array.from({ length: 2000 }, (_, i) => `c${i}`);
    for (const key of keys) visit(f, key, T0);
    const app5 = f.add('app-5', T0);
    const movers = keys.filter((key) => homeOf(f, hashKey(key)) === app5);
    expect(movers.length).toBeGreaterThan(100);
    let moved = 0;
    for (const key of movers) if (visit(f, key, T0 + 60_000).backend === app5) moved++;
    expect(moved).toBe(10); // one second's budget, all in the same second
    // Half a second later, five more tokens; those denied before were active just now, so not idle.
    let later = 0;
    for (const key of movers) if (visit(f, key, T0 + 60_500).remappedFrom !== null) later++;
    expect(later).toBe(0);
    let afterIdle = 0;
    for (const key of movers) if (visit(f, key, T0 + 120_000).remappedFrom !== null) afterIdle++;
    expect(afterIdle).toBe(10);
  });

  it('without rebalance nobody is ever moved by a new backend (pins stay, as before)', () => {
    const f = fleet('header', 4);
    const keys = Array.from({ length: 500 }, (_, i) => `c${i}`);
    const first = keys.map((key) => visit(f, key, T0).backend);
    f.add('app-5', T0 + 1_000);
    expect(keys.map((key) => visit(f, key, T0 + 1_800_000).backend)).toEqual(first);
    expect(f.remaps).toEqual([]);
  });

  it('cookie mode: a new client\'s nonce has the backend round-robin chose as its home, so with no fleet change nobody moves', () => {
    const f = fleet('cookie', 5, { idleAfter: 30_000 });
    const clients = Array.from({ length: 1000 }, () => visitWithCookie(f, undefined, T0));
    const counts = new Map<string, number>();
    for (const { placement } of clients) {
      expect(homeOf(f, placement.keyHash)).toBe(placement.backend);
      counts.set(placement.backend!.id, (counts.get(placement.backend!.id) ?? 0) + 1);
    }
    // Still exactly by weight.
    expect([...counts.values()]).toEqual([200, 200, 200, 200, 200]);
    // An hour idle, then back: nobody moves.
    const back = clients.map((client) => visitWithCookie(f, client.cookie, T0 + 3_600_000));
    expect(back.every(({ placement }, i) => placement.backend === clients[i]!.placement.backend && placement.remappedFrom === null)).toBe(true);
    expect(f.remaps).toEqual([]);
  });

  it('cookie mode: after a backend is added, idle cookie clients whose home it is move; active ones keep their cookie backend', () => {
    const f = fleet('cookie', 4, { idleAfter: 30_000 });
    let clients = Array.from({ length: 1000 }, () => visitWithCookie(f, undefined, T0));
    const app5 = f.add('app-5', T0 + 1_000);
    const isActive = (i: number) => i % 2 === 0;
    for (let t = T0 + 2_000; t <= T0 + 62_000; t += 500) {
      clients = clients.map((client, i) => {
        if (!isActive(i)) return client;
        const next = visitWithCookie(f, client.cookie, t);
        expect(next.placement.backend).toBe(client.placement.backend);
        return { placement: client.placement, cookie: next.cookie };
      });
    }
    let idle = 0;
    let moved = 0;
    clients.forEach((client, i) => {
      if (isActive(i)) return;
      idle++;
      const back = visitWithCookie(f, client.cookie, T0 + 62_000);
      const home = homeOf(f, client.placement.keyHash);
      // Home: app-5 for about a fifth, their old backend for nearly all others.
      expect(back.placement.backend).toBe(home);
      if (home !== client.placement.backend) {
        if (home === app5) moved++;
        expect(back.placement.remappedFrom).toBe(client.placement.backend!.id);
        // The new cookie names the new backend and is honoured from now on.
        expect(visitWithCookie(f, back.cookie, T0 + 63_000).placement.backend).toBe(home);
      }
    });
    expect(Math.abs(moved / idle - 0.2)).toBeLessThan(0.05);
    expect(f.remaps.filter((remap) => remap.reason === 'rebalance' && remap.to === 'app-5')).toHaveLength(moved);
  });

  it('cookie mode: the last-seen stamp is re-issued only once it is an eighth of idleAfter old', () => {
    const f = fleet('cookie', 3, { idleAfter: 80_000 });
    let { cookie } = visitWithCookie(f, undefined, T0);
    let issued = 0;
    for (let t = T0 + 1_000; t <= T0 + 100_000; t += 1_000) {
      const next = visitWithCookie(f, cookie, t);
      if (next.cookie !== cookie) issued++;
      cookie = next.cookie;
    }
    // 100 requests over 100 s with idleAfter 80 s: a stamp every 10 s.
    expect(issued).toBe(10);
  });
});

describe('slow start and bounded load (fake clock)', () => {
  it('slow start ramps the new backend\'s share of new clients from about 0 to its weight; pinned clients are unaffected', () => {
    const f = fleet('header', 4, { slowStart: 60_000 });
    const pinned = Array.from({ length: 400 }, (_, i) => `old-${i}`);
    const before = pinned.map((key) => visit(f, key, T0).backend);
    const app5 = f.add('app-5', T0);
    const shares: number[] = [];
    const admitted = new Set<string>();
    for (const seconds of [0, 15, 30, 45, 60, 75]) {
      const now = T0 + seconds * 1000;
      f.registry.set.refresh(now);
      let on = 0;
      for (let i = 0; i < 4000; i++) {
        const key = `new-${i}`;
        // Fresh pins each round: forget the last round's clients.
        const placement = visit(f, `${key}@${seconds}`, now);
        if (placement.backend === app5) {
          on++;
          admitted.add(key);
        }
      }
      shares.push(on / 4000);
      const fraction = Math.min(1, seconds / 60);
      expect(Math.abs(on / 4000 - 0.2 * Math.max(0.01, fraction))).toBeLessThan(0.03);
    }
    expect(shares[0]).toBeLessThan(0.01);
    for (let i = 1; i < shares.length; i++) expect(shares[i]).toBeGreaterThanOrEqual(shares[i - 1]! - 0.01);
    expect(pinned.map((key) => visit(f, key, T0 + 75_000).backend)).toEqual(before);
    console.log(`slow start 60s, new-client share of the added 5th backend at 0/15/30/45/60/75 s: ${shares.map((s) => `${(s * 100).toFixed(1)}%`).join(' ')}`);
  });

  it('maxLoadFactor: with every pinned client on one backend, new clients avoid it until the others catch up; pinned clients stay', () => {
    const f = fleet('header', 3, { maxLoadFactor: 1.25 });
    const [, b2, b3] = f.registry.backends as [Backend, Backend, Backend];
    b2.setDraining(true, null, T0);
    b3.setDraining(true, null, T0);
    const pinned = Array.from({ length: 300 }, (_, i) => `pinned-${i}`);
    for (const key of pinned) expect(visit(f, key, T0).backend!.id).toBe('app-1');
    f.remaps.length = 0;
    b2.setDraining(false);
    b3.setDraining(false);
    const fresh = Array.from({ length: 300 }, (_, i) => visit(f, `new-${i}`, T0 + 1_000).backend!.id);
    const onBusy = fresh.filter((id) => id === 'app-1').length;
    expect(onBusy / fresh.length).toBeLessThanOrEqual(0.05);
    expect(pinned.every((key) => visit(f, key, T0 + 2_000).backend!.id === 'app-1')).toBe(true);
    expect(f.remaps).toEqual([]);
    // Once the others hold their share, new clients spread over all three again.
    const later = Array.from({ length: 3000 }, (_, i) => visit(f, `later-${i}`, T0 + 3_000).backend!.id);
    expect(later.filter((id) => id === 'app-1').length).toBeGreaterThan(300);
  });

  it('maxLoadFactor in cookie mode: round-robin passes over a backend above its share', () => {
    const f = fleet('cookie', 2, { maxLoadFactor: 1.5 });
    const [, b2] = f.registry.backends as [Backend, Backend];
    b2.setDraining(true, null, T0);
    for (let i = 0; i < 100; i++) expect(visitWithCookie(f, undefined, T0).placement.backend!.id).toBe('app-1');
    b2.setDraining(false);
    // app-1 holds 100 of 100: it is over 1.5 × its half until app-2 holds 34 (101 ≤ 0.75 × (101 + 34)).
    const next = Array.from({ length: 33 }, () => visitWithCookie(f, undefined, T0 + 1_000).placement.backend!.id);
    expect(next.filter((id) => id === 'app-1')).toHaveLength(0);
    const after = Array.from({ length: 100 }, () => visitWithCookie(f, undefined, T0 + 1_000).placement.backend!.id);
    expect(after.filter((id) => id === 'app-1').length).toBeGreaterThan(10);
  });

  it('rebalance does not move a client onto a backend that slow start would not yet give it', () => {
    const f = fleet('header', 4, { idleAfter: 5_000, slowStart: 100_000 });
    const keys = Array.from({ length: 2000 }, (_, i) => `k${i}`);
    for (const key of keys) visit(f, key, T0);
    const app5 = f.add('app-5', T0);
    f.registry.set.refresh(T0 + 10_000); // 10 % into the ramp
    const movers = keys.filter((key) => homeOf(f, hashKey(key)) === app5);
    const moved = movers.filter((key) => visit(f, key, T0 + 10_000).backend === app5).length;
    expect(moved / movers.length).toBeLessThan(0.2);
    expect(moved / movers.length).toBeGreaterThan(0.02);
  });
});

describe('drain with a deadline (fake clock)', () => {
  it('idle clients of a draining backend move before the deadline, the others at it, all with reason drain', () => {
    const f = fleet('header', 3, { idleAfter: 10_000 });
    const keys = Array.from({ length: 300 }, (_, i) => `c${i}`);
    for (const key of keys) visit(f, key, T0);
    const app1 = f.registry.get('app-1') as Backend;
    const onApp1 = keys.filter((key) => visit(f, key, T0 + 1_000).backend === app1);
    app1.setDraining(true, T0 + 600_000, T0 + 1_000);
    const active = onApp1.filter((_, i) => i % 2 === 0);
    const idle = onApp1.filter((_, i) => i % 2 === 1);
    for (let t = T0 + 2_000; t < T0 + 600_000; t += 5_000) for (const key of active) expect(visit(f, key, t).backend).toBe(app1);
    for (const key of idle) {
      const placement = visit(f, key, T0 + 300_000);
      expect(placement.backend).not.toBe(app1);
      expect(placement.remappedFrom).toBe('app-1');
    }
    // The deadline passes: every remaining client moves on its next request.
    app1.setDraining(true, T0 + 600_000, T0 + 600_000);
    expect(app1.drainDeadlinePassed).toBe(true);
    for (const key of active) {
      const placement = visit(f, key, T0 + 600_001);
      expect(placement.backend).not.toBe(app1);
      expect(placement.remappedFrom).toBe('app-1');
    }
    expect(f.remaps.length).toBe(onApp1.length);
    expect(f.remaps.every((remap) => remap.reason === 'drain' && remap.from === 'app-1')).toBe(true);
  });
});
