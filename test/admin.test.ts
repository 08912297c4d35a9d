import { describe, expect, it } from 'vitest';
import { backendsYaml, startBackends } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startProxy, type LogCapture } from './support/proxy.js';
import { parseExposition, sample, type Exposition } from './support/exposition.js';
import { parseConfig } from '../src/config/load.js';
import type { Limpet } from '../src/limpet.js';

const cleanup = useCleanup();

/** The histogram's bounds, from half a millisecond up, in exposition order. */
const BUCKET_BOUNDS = ['0.0005', '0.001', '0.0025', '0.005', '0.01', '0.025', '0.05', '0.1', '0.25', '0.5', '1', '2.5', '5', '10', '+Inf'];

/** `[le, cumulative count]` for each `limpet_request_duration_seconds_bucket` of one backend, as exposed. */
function durationBuckets(metrics: Exposition, backend: string): [string, number][] {
  return metrics.samples
    .filter((s) => s.name === 'limpet_request_duration_seconds_bucket' && s.labels.backend === backend)
    .map((s) => [s.labels.le!, s.value]);
}

async function scrape(limpet: Limpet) {
  const res = await request(limpet.adminAddress.port, { path: '/metrics' });
  expect(res.status).toBe(200);
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseExposition(res.body);
}

describe('metrics', () => {
  it('exposes every contract metric with its labels, and the exposition parses', async () => {
    const backends = cleanup.add(await startBackends(2));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    await request(started.port);
    const metrics = await scrape(proxy);
    for (const [name, type] of [
      ['limpet_backend_up', 'gauge'],
      ['limpet_backend_draining', 'gauge'],
      ['limpet_requests_total', 'counter'],
      ['limpet_request_duration_seconds', 'histogram'],
      ['limpet_backend_inflight_requests', 'gauge'],
      ['limpet_sessions', 'gauge'],
      ['limpet_session_remaps_total', 'counter'],
      ['limpet_health_checks_total', 'counter'],
      ['limpet_upstream_retries_total', 'counter'],
      ['limpet_websocket_connections', 'gauge'],
      ['limpet_config_reloads_total', 'counter'],
      ['process_cpu_seconds_total', 'counter'],
      ['nodejs_eventloop_lag_seconds', 'gauge'],
    ] as const) {
      expect(metrics.types.get(name), name).toBe(type);
    }
    expect(sample(metrics, 'limpet_backend_up', { backend: 'app-1' })).toBe(1);
    expect(sample(metrics, 'limpet_config_reloads_total', { result: 'failure' })).toBe(0);
    // The one request is in the histogram of the backend that served it, in exactly the buckets
    // whose bound its duration does not exceed; the other backend's histogram is empty.
    const served = backends.find((b) => b.seen.length > 0)!.id;
    const idle = backends.find((b) => b.id !== served)!.id;
    const seconds = sample(metrics, 'limpet_request_duration_seconds_sum', { backend: served });
    expect(seconds).toBeGreaterThan(0);
    expect(durationBuckets(metrics, served)).toEqual(BUCKET_BOUNDS.map((le) => [le, le === '+Inf' || seconds <= Number(le) ? 1 : 0]));
    expect(sample(metrics, 'limpet_request_duration_seconds_count', { backend: served })).toBe(1);
    expect(durationBuckets(metrics, idle)).toEqual(BUCKET_BOUNDS.map((le) => [le, 0]));
    expect(sample(metrics, 'limpet_request_duration_seconds_count', { backend: idle })).toBe(0);
  });

  it('counts each request for its backend and status code, and the pinned client', async () => {
    const backends = cleanup.add(await startBackends(2));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const first = await request(started.port, { localAddress: '127.0.0.77' });
    const id = first.headers['x-backend'] as string;
    const before = sample(await scrape(proxy), 'limpet_requests_total', { backend: id, code: '200' });
    for (let i = 0; i < 5; i++) await request(started.port, { localAddress: '127.0.0.77' });
    const after = await scrape(proxy);
    expect(sample(after, 'limpet_requests_total', { backend: id, code: '200' })).toBe(before + 5);
    expect(sample(after, 'limpet_sessions', { backend: id })).toBe(1);
    expect(sample(after, 'limpet_request_duration_seconds_count', { backend: id })).toBe(before + 5);
    // Cumulative buckets: never fewer as the bound grows, and +Inf holds every request.
    const counts = durationBuckets(after, id).map(([, count]) => count);
    expect(counts).toHaveLength(BUCKET_BOUNDS.length);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(counts.at(-1)).toBe(before + 5);
  });

  it('shows a killed backend as down, counts remaps with reason down, and retries', async () => {
    const backends = cleanup.add(await startBackends(3));
    // Real requests must meet the dead backend (and be retried) before a check marks it down: checks
    // run every 100 ms from the start, but until the reload it takes 100 failed ones, not one.
    const yaml = (fall: number) => `affinity: { by: ip }\nhealthCheck: { interval: 100ms, timeout: 100ms, fall: ${fall} }\n${backendsYaml(backends)}`;
    const started = await startProxy(yaml(100));
    const proxy = cleanup.add(started.limpet);
    for (let i = 0; i < 30; i++) await request(started.port, { localAddress: `127.0.3.${i + 2}` });
    const victim = backends[0]!;
    await victim.close();
    for (let i = 0; i < 30; i++) expect((await request(started.port, { localAddress: `127.0.3.${i + 2}` })).status).toBe(200);
    proxy.reload(parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n${yaml(1)}`, 'test.yaml', {}));
    await waitFor(async () => sample(await scrape(proxy), 'limpet_backend_up', { backend: victim.id }) === 0, 10_000, 'backend_up 0');
    await waitFor(async () => sample(await scrape(proxy), 'limpet_health_checks_total', { backend: victim.id, result: 'fail' }) > 0, 10_000, 'a failed check');
    const metrics = await scrape(proxy);
    const remaps = [...metrics.samples].filter((s) => s.name === 'limpet_session_remaps_total' && s.labels.from === victim.id && s.labels.reason === 'down');
    expect(remaps.reduce((sum, s) => sum + s.value, 0)).toBeGreaterThan(0);
    expect(sample(metrics, 'limpet_upstream_retries_total', { backend: victim.id })).toBeGreaterThan(0);
  });
});

describe('admin API', () => {
  it('serves healthz, readyz and the backend list', async () => {
    const backends = cleanup.add(await startBackends(2));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const admin = proxy.adminAddress.port;
    expect((await request(admin, { path: '/healthz' })).status).toBe(200);
    // Ready once the first check has found a backend up.
    await waitFor(async () => (await request(admin, { path: '/readyz' })).status === 200 || undefined, 10_000, 'readyz 200');
    const list = JSON.parse((await request(admin, { path: '/backends' })).body) as Record<string, unknown>[];
    expect(list.map((b) => b.id)).toEqual(['app-1', 'app-2']);
    for (const entry of list) {
      for (const key of ['id', 'url', 'weight', 'state', 'sessions', 'inflight', 'lastCheck']) expect(entry).toHaveProperty(key);
      expect(entry.state).toBe('up');
    }
    expect((await request(admin, { path: '/nope' })).status).toBe(404);
    expect((await request(admin, { path: '/backends', method: 'DELETE' })).status).toBe(405);
  });

  it('drains and undrains through the API, guarded by the token', async () => {
    const backends = cleanup.add(await startBackends(2));
    const started = await startProxy(`affinity: { by: ip }\nadmin: { listen: "127.0.0.1:0", token: t0ken }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const admin = proxy.adminAddress.port;
    expect((await request(admin, { path: '/backends/app-1/drain', method: 'POST' })).status).toBe(401);
    expect((await request(admin, { path: '/backends/app-1/drain', method: 'POST', headers: { authorization: 'Bearer wrong' } })).status).toBe(401);
    expect(proxy.backend('app-1')!.draining).toBe(false);
    const auth = { authorization: 'Bearer t0ken' };
    expect((await request(admin, { path: '/backends/nope/drain', method: 'POST', headers: auth })).status).toBe(404);
    const drained = await request(admin, { path: '/backends/app-1/drain', method: 'POST', headers: auth });
    expect(drained.status).toBe(200);
    expect(JSON.parse(drained.body).state).toBe('draining');
    expect(sample(await scrape(proxy), 'limpet_backend_draining', { backend: 'app-1' })).toBe(1);
    // new clients avoid it
    for (let i = 0; i < 30; i++) expect((await request(started.port, { localAddress: `127.0.4.${i + 2}` })).headers['x-backend']).toBe('app-2');
    const undrained = await request(admin, { path: '/backends/app-1/undrain', method: 'POST', headers: auth });
    expect(JSON.parse(undrained.body).state).toBe('up');
    expect(sample(await scrape(proxy), 'limpet_backend_draining', { backend: 'app-1' })).toBe(0);
  });

  it('logs every rejected call on a mutating route with its method, path and peer', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`admin: { listen: "127.0.0.1:0", token: t0ken }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const admin = proxy.adminAddress.port;
    const rejected = () => started.logs.lines.filter((l) => l.msg === 'admin call rejected');
    expect((await request(admin, { path: '/backends/app-1/drain', method: 'POST', localAddress: '127.0.5.7' })).status).toBe(401);
    expect((await request(admin, { path: '/backends/app-1/drain?token=t0ken', method: 'GET' })).status).toBe(405);
    expect((await request(admin, { path: '/backends/app-1/drain', method: 'POST', headers: { authorization: 'Bearer t0ken' } })).status).toBe(200);
    expect(rejected()).toEqual([
      expect.objectContaining({ level: 'warn', status: 401, method: 'POST', path: '/backends/app-1/drain', from: '127.0.5.7' }),
      expect.objectContaining({ level: 'warn', status: 405, method: 'GET', path: '/backends/app-1/drain', from: '127.0.0.1' }),
    ]);
  });

  it('warns when the admin port listens beyond loopback without a token, at start and when a reload drops the token', async () => {
    const backends = cleanup.add(await startBackends(1));
    const unguarded = (logs: LogCapture) => logs.lines.filter((l) => String(l.msg).startsWith('the admin port is reachable beyond loopback'));
    const loopback = await startProxy(backendsYaml(backends));
    cleanup.add(loopback.limpet);
    expect(unguarded(loopback.logs)).toEqual([]);

    const open = await startProxy(`admin: { listen: "0.0.0.0:0" }\n${backendsYaml(backends)}`);
    cleanup.add(open.limpet);
    expect(unguarded(open.logs)).toEqual([expect.objectContaining({ level: 'warn', host: '0.0.0.0' })]);

    const guarded = await startProxy(`admin: { listen: "0.0.0.0:0", token: t0ken }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(guarded.limpet);
    expect(unguarded(guarded.logs)).toEqual([]);
    proxy.reload(parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "0.0.0.0:0" }\n${backendsYaml(backends)}`, 'test.yaml', {}));
    expect(unguarded(guarded.logs)).toEqual([expect.objectContaining({ level: 'warn', host: '0.0.0.0' })]);
  });

  it('reports not ready when no backend is up', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`affinity: { by: ip }\nhealthCheck: { interval: 100ms, timeout: 100ms, fall: 1 }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    await backends[0]!.close();
    await waitFor(async () => (await request(proxy.adminAddress.port, { path: '/readyz' })).status === 503, 10_000, 'readyz 503');
  });

  it('serves the status page', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const page = await request(proxy.adminAddress.port, { path: '/' });
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toMatch(/text\/html/);
    expect(page.body).toContain('<title>limpet status</title>');
  });
});
