import { afterAll, describe, expect, it } from 'vitest';
import { Backend, type BackendChange, type HealthCheckResult, type InflightRequest } from '../src/upstream/backend.js';
import { BackendRegistry } from '../src/upstream/backend-registry.js';
import { parseConfig } from '../src/config/load.js';
import { backendsYaml, startBackends } from './support/backends.js';
import { waitFor } from './support/client.js';
import { startProxy } from './support/proxy.js';

const pool = { connectTimeout: 1000, keepAliveTimeout: 1000, maxConnections: 0 };
const policy = { rise: 2, fall: 3, cooldown: 10_000 };
const created: Backend[] = [];
afterAll(() => Promise.all(created.map((backend) => backend.close())));

function backend(pending = false): { backend: Backend; changes: BackendChange[] } {
  const changes: BackendChange[] = [];
  const made = new Backend({ id: 'a', url: 'http://127.0.0.1:1', weight: 1, drain: false, drainDeadline: null, healthPath: null }, pool, (_b, change) => changes.push(change), pending);
  created.push(made);
  return { backend: made, changes };
}

const check = (ok: boolean, at = 0): HealthCheckResult => ({ at, ok, status: ok ? 200 : null, error: ok ? null : 'ECONNREFUSED', durationMs: 1 });

describe('Backend: every transition is a method, each change announced once', () => {
  it('takes traffic before its first check, is verified by its first pass, and counts only verified backends as ready', () => {
    const { backend: up, changes } = backend();
    expect([up.available, up.verified]).toEqual([true, false]);
    up.checkCompleted(check(true), policy);
    expect([up.available, up.verified]).toEqual([true, true]);
    // Presumed up, as it takes traffic: `fall` failures take it down, not the first.
    const { backend: down, changes: downChanges } = backend();
    down.checkCompleted(check(false), policy);
    down.checkCompleted(check(false), policy);
    expect([down.available, down.verified]).toEqual([true, false]);
    down.checkCompleted(check(false), policy);
    expect([down.available, down.status]).toEqual([false, 'down']);
    expect([changes, downChanges]).toEqual([['verified'], ['down']]);
  });

  it('goes down after `fall` consecutive failures and up after `rise` consecutive passes', () => {
    const { backend: b, changes } = backend();
    b.checkCompleted(check(true), policy);
    changes.length = 0;
    expect(b.available).toBe(true);
    b.checkCompleted(check(false), policy);
    b.checkCompleted(check(false), policy);
    b.checkCompleted(check(true), policy);
    b.checkCompleted(check(false), policy);
    b.checkCompleted(check(false), policy);
    expect(b.status).toBe('up');
    b.checkCompleted(check(false), policy);
    expect(b.status).toBe('down');
    expect(b.available).toBe(false);
    b.checkCompleted(check(true), policy);
    expect(b.available).toBe(false);
    b.checkCompleted(check(true), policy);
    expect(b.available).toBe(true);
    expect(changes).toEqual(['down', 'up']);
    expect(b.lastError).toBe('ECONNREFUSED');
  });

  it('lets a pending backend (added by a reload) in on its first passing check alone', () => {
    const { backend: b, changes } = backend(true);
    expect(b.available).toBe(false);
    b.checkCompleted(check(true), policy);
    expect(b.available).toBe(true);
    expect(changes).toEqual(['up']);
    const { backend: failed } = backend(true);
    failed.checkCompleted(check(false), policy);
    failed.checkCompleted(check(true), policy);
    expect(failed.available).toBe(false);
    failed.checkCompleted(check(true), policy);
    expect(failed.available).toBe(true);
  });

  it('stays ejected until a check passes after the cooldown, whatever the checks said before', () => {
    const { backend: b, changes } = backend();
    b.checkCompleted(check(true, 500), policy);
    changes.length = 0;
    b.eject(1_000);
    b.eject(2_000);
    expect(b.available).toBe(false);
    expect(b.status).toBe('down');
    b.checkCompleted(check(true, 5_000), policy);
    expect(b.ejected).toBe(true);
    b.checkCompleted(check(true, 11_000), policy);
    expect(b.available).toBe(true);
    expect(changes).toEqual(['ejected', 'readmitted']);
  });

  it('keeps serving pinned clients while draining but takes no new ones', () => {
    const { backend: b, changes } = backend();
    expect(b.setDraining(true)).toBe(true);
    expect(b.setDraining(true)).toBe(false);
    expect([b.available, b.takesNewClients, b.status]).toEqual([true, false, 'draining']);
    b.setDraining(false);
    expect(changes).toEqual(['draining', 'undrained']);
  });

  it('adopts the health another process decided, in one change', () => {
    const { backend: b, changes } = backend();
    b.adopt({ check: 'down', ejected: false, draining: true, drainDeadlineAt: null, rampSince: null, lastCheck: null, lastError: 'status 500' });
    expect([b.available, b.draining, b.lastError]).toEqual([false, true, 'status 500']);
    expect(changes).toEqual(['adopted']);
  });
});

describe('BackendRegistry: backends by id across reloads', () => {
  it('reuses kept ids, starts new ones pending, retires removed ones, and refreshes selection on every change', async () => {
    const registry = new BackendRegistry(
      [
        { id: 'a', url: 'http://127.0.0.1:1', weight: 1, drain: false, drainDeadline: null, healthPath: null },
        { id: 'b', url: 'http://127.0.0.1:2', weight: 1, drain: false, drainDeadline: null, healthPath: null },
      ],
      pool,
    );
    const seen: string[] = [];
    registry.listen((b, change) => seen.push(`${b.id}:${change}`));
    const [a, b] = registry.backends as [Backend, Backend];
    a.checkCompleted(check(false), { ...policy, fall: 1 });
    expect(Array.from(registry.set.usableForPinned)).toEqual([0, 1]);
    registry.apply(
      [
        { id: 'a', url: 'http://127.0.0.1:1', weight: 3, drain: false, drainDeadline: null, healthPath: null },
        { id: 'c', url: 'http://127.0.0.1:3', weight: 1, drain: false, drainDeadline: null, healthPath: null },
      ],
      pool,
      new Map([['a', { draining: true, deadline: null }]]),
    );
    const c = registry.get('c') as Backend;
    expect(registry.get('a')).toBe(a);
    expect(a.weight).toBe(3);
    expect(a.draining).toBe(true);
    expect(registry.get('b')).toBeUndefined();
    expect([b.retired, b.index, b.available]).toEqual([true, -1, false]);
    expect([c.index, c.available]).toEqual([1, false]);
    c.checkCompleted(check(true), policy);
    expect(Array.from(registry.set.usableForNew)).toEqual([0, 1]);
    expect(seen).toEqual(['a:added', 'b:added', 'a:down', 'c:added', 'b:retired', 'a:draining', 'c:up']);
    expect(a.verified).toBe(false);
    await registry.close();
  });
});

describe('ActiveHealthChecker on reload', () => {
  it('brings the next check within a shortened interval instead of waiting out the old one', async () => {
    const backends = await startBackends(1);
    const yaml = (interval: string) => `affinity: { by: ip }\nhealthCheck: { interval: ${interval} }\n${backendsYaml(backends)}`;
    const started = await startProxy(yaml('1h'));
    try {
      const backend = started.limpet.backend('app-1')!;
      // The first check comes within a second of start, whatever the interval; the next one in an hour.
      await waitFor(() => backend.lastCheck !== null || undefined, 10_000, 'the first check');
      const first = backend.lastCheck!.at;
      started.limpet.reload(parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n${yaml('100ms')}`, 'test.yaml', {}));
      await waitFor(() => (backend.lastCheck!.at > first) || undefined, 10_000, 'a check within the new interval');
    } finally {
      await started.limpet.close();
      await Promise.all(backends.map((b) => b.close()));
    }
  });
});

describe('Backend: the requests in flight at it', () => {
  /** A request that records being told, and may finish (unlink itself) when it is. */
  class Request implements InflightRequest {
    inflightPrev: InflightRequest | null = null;
    inflightNext: InflightRequest | null = null;
    constructor(
      readonly name: string,
      private readonly told: string[],
      private readonly onLost: (() => void) | null = null,
    ) {}
    backendLost(): void {
      this.told.push(this.name);
      this.onLost?.();
    }
  }

  it('tells each request still in flight when released, also when requests finish while they are told', () => {
    const { backend: b } = backend();
    const told: string[] = [];
    const [first, middle, last] = ['first', 'middle', 'last'].map((name) => new Request(name, told));
    for (const request of [first!, middle!, last!]) b.requestStarted(request);
    b.requestFinished(middle!);
    b.releaseInflight();
    expect(told.sort()).toEqual(['first', 'last']);
    expect(b.inflight).toBe(2);

    // Each one finishes as it is told: every one is still told, and none is left listed.
    b.requestFinished(first!);
    b.requestFinished(last!);
    told.length = 0;
    const requests: Request[] = [];
    for (const name of ['a', 'b', 'c']) {
      const request: Request = new Request(name, told, () => b.requestFinished(request));
      requests.push(request);
      b.requestStarted(request);
    }
    b.releaseInflight();
    expect(told.sort()).toEqual(['a', 'b', 'c']);
    expect(b.inflight).toBe(0);
    told.length = 0;
    b.releaseInflight();
    expect(told).toEqual([]);
  });
});
