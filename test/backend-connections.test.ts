import { describe, expect, it } from 'vitest';
import type { ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { backendsYaml, startBackend, type TestBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startProxy } from './support/proxy.js';
import { parseExposition } from './support/exposition.js';
import { parseConfig } from '../src/config/load.js';
import type { Limpet } from '../src/limpet.js';

const cleanup = useCleanup();
/** This test's proxy, for `metric`. */
let proxy: Limpet;

interface HoldingBackend {
  backend: TestBackend;
  /** `/hold` responses under way: headers sent, a byte every 50 ms until released. */
  held: ServerResponse[];
  /** Distinct connections that carried a `/hold` request (health checks use others). */
  holdConnections: Set<Socket>;
  /** Ends every held response; later `/hold` requests are answered at once. */
  release(): void;
}

/**
 * A backend that keeps `/hold` responses open, trickling a byte every 50 ms so that neither
 * timeouts.response nor the body timeout cuts them, and answers anything else at once.
 */
async function holdingBackend(): Promise<HoldingBackend> {
  const held: ServerResponse[] = [];
  const holdConnections = new Set<Socket>();
  const timers: NodeJS.Timeout[] = [];
  let holding = true;
  const started = await startBackend('app-1', (req, res, id) => {
    if (req.url !== '/hold') {
      res.end(id);
      return;
    }
    holdConnections.add(req.socket);
    if (!holding) {
      res.end('done');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain' });
    held.push(res);
    timers.push(setInterval(() => res.write('.'), 50));
  });
  return {
    backend: started,
    held,
    holdConnections,
    release() {
      holding = false;
      for (const timer of timers.splice(0)) clearInterval(timer);
      for (const res of held.splice(0)) res.end('done');
    },
  };
}

/** A holding backend and a proxy configured by `yaml` in front of it, both ended after the test. */
async function start(yaml: (backend: TestBackend) => string): Promise<{ backend: HoldingBackend; port: number }> {
  const backend = await holdingBackend();
  cleanup.add(backend.backend);
  proxy = cleanup.add((await startProxy(yaml(backend.backend))).limpet);
  // Released before the proxy closes, which waits for the responses under way.
  cleanup.add(() => backend.release());
  return { backend, port: proxy.address.port };
}

async function metric(name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metrics = await request(proxy.adminAddress.port, { path: '/metrics' });
  return parseExposition(metrics.body).samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
}

const FAST_CHECKS = 'healthCheck: { interval: 100ms, timeout: 500ms, fall: 2, rise: 1 }';

describe('limits.maxBackendConnections', () => {
  it('keeps at most that many connections to a backend busy; later requests wait their turn, and checks still pass', async () => {
    const { backend, port } = await start((b) => `affinity: { by: ip }\nlimits: { maxBackendConnections: 2 }\n${FAST_CHECKS}\n${backendsYaml([b])}`);
    const responses = Array.from({ length: 5 }, () => request(port, { path: '/hold' }));
    await waitFor(() => backend.held.length === 2 || undefined, 10_000, 'two requests held at the backend');
    await waitFor(async () => ((await metric('limpet_backend_queued_requests', { backend: 'app-1' })) === 3) || undefined,
      10_000, 'three requests queued');

    // The two connections stay busy while several checks run: the checks go on a connection of their own.
    const passesBefore = (await metric('limpet_health_checks_total', { backend: 'app-1', result: 'pass' })) ?? 0;
    await waitFor(async () => ((await metric('limpet_health_checks_total', { backend: 'app-1', result: 'pass' })) ?? 0) >= passesBefore + 3 || undefined,
      10_000, 'three more passing checks');
    expect(backend.held.length).toBe(2);
    expect((await metric('limpet_health_checks_total', { backend: 'app-1', result: 'fail' })) ?? 0).toBe(0);
    expect(await metric('limpet_backend_up', { backend: 'app-1' })).toBe(1);

    backend.release();
    const done = await Promise.all(responses);
    expect(done.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(backend.backend.seen.filter((r) => r.url === '/hold')).toHaveLength(5);
    expect(backend.holdConnections.size).toBeLessThanOrEqual(2);
    expect(await metric('limpet_backend_queued_requests', { backend: 'app-1' })).toBe(0);
  });

  it('answers 503 to a request still waiting after timeouts.response, which then never reaches the backend', async () => {
    const { backend, port } = await start((b) => `affinity: { by: ip }\nlimits: { maxBackendConnections: 1 }\ntimeouts: { response: 300ms }\n${backendsYaml([b])}`);
    const first = request(port, { path: '/hold' });
    await waitFor(() => backend.held.length === 1 || undefined, 10_000, 'the first request held');

    const waited = await request(port, { path: '/queued' });
    expect(waited.status).toBe(503);
    expect(waited.headers['retry-after']).toBe('1');
    expect(waited.body).toBe('Backend busy\n');

    backend.release();
    expect((await first).status).toBe(200);
    // Sent after the first finished, so it follows the timed-out request out of the queue.
    expect((await request(port, { path: '/after' })).status).toBe(200);
    expect(backend.backend.seen.map((r) => r.url)).toEqual(['/hold', '/after']);
    expect(await metric('limpet_requests_total', { backend: 'app-1', code: '503' })).toBe(1);
    // A busy backend is not a failing one: passive detection was not told.
    expect(await metric('limpet_backend_up', { backend: 'app-1' })).toBe(1);
    expect(await metric('limpet_backend_queued_requests', { backend: 'app-1' })).toBe(0);
  });

  it('lets go at once of a queued request whose client leaves, and never sends it', async () => {
    // timeouts.response stays at 30 s: the queue entry must go when the client does, not then.
    const { backend, port } = await start((b) => `affinity: { by: ip }\nlimits: { maxBackendConnections: 1 }\n${backendsYaml([b])}`);
    const first = request(port, { path: '/hold' });
    await waitFor(() => backend.held.length === 1 || undefined, 10_000, 'the first request held');

    const leaving = connect(port, '127.0.0.1');
    leaving.on('error', () => undefined);
    leaving.write('GET /gone HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor(async () => ((await metric('limpet_backend_queued_requests', { backend: 'app-1' })) === 1) || undefined,
      10_000, 'the second request queued');
    leaving.destroy();
    await waitFor(async () => ((await metric('limpet_backend_queued_requests', { backend: 'app-1' })) === 0) || undefined,
      10_000, 'the queue empty again');

    backend.release();
    expect((await first).status).toBe(200);
    expect((await request(port, { path: '/after' })).status).toBe(200);
    expect(backend.backend.seen.map((r) => r.url)).toEqual(['/hold', '/after']);
  });

  it('takes a new cap on reload, without cutting requests under way on the old pool', async () => {
    const yaml = (b: TestBackend, cap: number) => `affinity: { by: ip }\nlimits: { maxBackendConnections: ${cap} }\n${backendsYaml([b])}`;
    const { backend, port } = await start((b) => yaml(b, 0));
    const underWay = request(port, { path: '/hold' });
    await waitFor(() => backend.held.length === 1 || undefined, 10_000, 'a request under way');

    proxy.reload(parseConfig(yaml(backend.backend, 1), 'test.yaml', {}));
    const responses = Array.from({ length: 3 }, () => request(port, { path: '/hold' }));
    // The new pool holds one connection: one of the three is held, two wait.
    await waitFor(() => backend.held.length === 2 || undefined, 10_000, 'one new request held');
    await waitFor(async () => ((await metric('limpet_backend_queued_requests', { backend: 'app-1' })) === 2) || undefined,
      10_000, 'two requests queued');

    backend.release();
    expect((await underWay).status).toBe(200);
    expect((await Promise.all(responses)).map((r) => r.status)).toEqual([200, 200, 200]);
  });

  it('rejects a negative or fractional cap with file:line', () => {
    expect(() => parseConfig('limits: { maxBackendConnections: -1 }\nbackends: [{ id: a, url: "http://127.0.0.1:1" }]\n', 'bad.yaml', {}))
      .toThrow(/bad\.yaml:1:\d+.*limits\.maxBackendConnections/);
    expect(() => parseConfig('limits: { maxBackendConnections: 1.5 }\nbackends: [{ id: a, url: "http://127.0.0.1:1" }]\n', 'bad.yaml', {}))
      .toThrow(/bad\.yaml:1:\d+.*limits\.maxBackendConnections/);
  });
});
