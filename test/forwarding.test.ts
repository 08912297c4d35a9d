import { describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { backendsYaml, startBackend, startBackends } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startProxy } from './support/proxy.js';

const cleanup = useCleanup();

describe('forwarding', () => {
  it('logs the path without its query string, unless log.accessQuery is on; the backend gets the query either way', async () => {
    const backends = cleanup.add(await startBackends(1));
    const target = '/reset?token=s3cret&next=%2Fhome';
    for (const [accessQuery, logged] of [[false, '/reset'], [true, target]] as const) {
      const started = await startProxy(`log: { access: true, accessQuery: ${accessQuery} }\n${backendsYaml(backends)}`, 'info');
      cleanup.add(started.limpet);
      expect((await request(started.port, { path: target })).status).toBe(200);
      expect(backends[0]!.seen.at(-1)!.url).toBe(target);
      expect(started.logs.lines.filter((line) => line.msg === 'request').map((line) => line.path)).toEqual([logged]);
    }
  });

  it('preserves Host, strips hop-by-hop headers and the headers Connection names, and adds X-Forwarded-*', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const res = await request(started.port, {
      path: '/a/b?c=d',
      headers: {
        host: 'shop.example',
        connection: 'keep-alive, X-Secret-Hop',
        'x-secret-hop': 'must not pass',
        'keep-alive': 'timeout=5',
        'proxy-authorization': 'Basic Zm9vOmJhcg==',
        'x-limpet-remapped-from': 'forged',
        'x-app': 'kept',
      },
    });
    expect(res.status).toBe(200);
    const seen = backends[0]!.seen[0]!;
    expect(seen.url).toBe('/a/b?c=d');
    expect(seen.headers.host).toBe('shop.example');
    expect(seen.headers['x-app']).toBe('kept');
    expect(seen.headers['x-secret-hop']).toBeUndefined();
    expect(seen.headers['keep-alive']).toBeUndefined();
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(seen.headers['x-limpet-remapped-from']).toBeUndefined();
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.1');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe('shop.example');
    expect(seen.headers.via).toBe('1.1 limpet');
  });

  it('replaces X-Forwarded-* from an untrusted peer and extends them from a trusted one', async () => {
    const backends = cleanup.add(await startBackends(1));
    const untrusting = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(untrusting.limpet);
    const forged = { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.example', host: 'real.example' };
    await request(untrusting.port, { headers: forged, localAddress: '127.0.0.9' });
    let seen = backends[0]!.seen.at(-1)!;
    expect(seen.headers['x-forwarded-for']).toBe('127.0.0.9');
    expect(seen.headers['x-forwarded-proto']).toBe('http');
    expect(seen.headers['x-forwarded-host']).toBe('real.example');
    await untrusting.limpet.close();

    const trusting = await startProxy(`affinity: { by: ip }\ntrustedProxies: ["127.0.0.9/32"]\n${backendsYaml(backends)}`);
    cleanup.add(trusting.limpet);
    await request(trusting.port, { headers: forged, localAddress: '127.0.0.9' });
    seen = backends[0]!.seen.at(-1)!;
    expect(seen.headers['x-forwarded-for']).toBe('6.6.6.6, 127.0.0.9');
    expect(seen.headers['x-forwarded-proto']).toBe('https');
    expect(seen.headers['x-forwarded-host']).toBe('evil.example');
  });

  it('streams a POST body and the response status, headers and body back', async () => {
    const backends = cleanup.add([
      await startBackend('echo', (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (c: Buffer) => chunks.push(c));
        req.on('end', () => {
          res.writeHead(201, { 'x-length': String(Buffer.concat(chunks).length), 'set-cookie': ['a=1', 'b=2'] });
          res.end(Buffer.concat(chunks));
        });
      }),
    ]);
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const res = await request(started.port, { method: 'POST', body: 'hello body', headers: { 'content-type': 'text/plain' } });
    expect(res.status).toBe(201);
    expect(res.body).toBe('hello body');
    expect(res.headers['x-length']).toBe('10');
    expect(res.headers['set-cookie']).toEqual(['a=1', 'b=2']);
  });

  it('answers 503 with Retry-After, not 502, when no backend accepts a connection, and is not ready before a check passes', async () => {
    const closed = await startBackend('gone');
    await closed.close();
    const started = await startProxy(`affinity: { by: ip }\nretries: 0\n${backendsYaml([closed])}`);
    const proxy = cleanup.add(started.limpet);
    // Before any check: routed to (it may be up), but the proxy does not call itself ready.
    expect(proxy.backend('gone')!.lastCheck).toBeNull();
    expect((await request(proxy.adminAddress.port, { path: '/readyz' })).status).toBe(503);
    const res = await request(started.port);
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('5');
    expect(res.body).toMatch(/no backend/i);
  });

  it('is ready once a check has found a backend up', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`affinity: { by: ip }\nhealthCheck: { interval: 100ms }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    await waitFor(async () => (await request(proxy.adminAddress.port, { path: '/readyz' })).status === 200 || undefined, 10_000, 'readyz 200');
    expect(proxy.backend('app-1')!.lastCheck?.ok).toBe(true);
  });

  it('answers 504 when the backend accepts but never answers within timeouts.response', async () => {
    const silent = createServer(() => {
      /* accepts, reads, never answers */
    });
    cleanup.add(() => silent.close());
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as { port: number }).port;
    const started = await startProxy(`affinity: { by: ip }\ntimeouts: { response: 300ms }\nbackends: [{ id: silent, url: "http://127.0.0.1:${port}" }]`);
    cleanup.add(started.limpet);
    const res = await request(started.port);
    expect(res.status).toBe(504);
  });

  it('routes each request on a keep-alive connection on its own (header affinity)', async () => {
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`affinity: { by: header, header: X-Session-Id }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const { Agent } = await import('node:http');
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    const servedBy = new Map<string, string>();
    for (let i = 0; i < 60; i++) {
      const session = `session-${i % 20}`;
      const res = await request(started.port, { headers: { 'x-session-id': session }, agent });
      const previous = servedBy.get(session);
      if (previous !== undefined) expect(res.headers['x-backend']).toBe(previous);
      servedBy.set(session, res.headers['x-backend'] as string);
    }
    agent.destroy();
    // one connection carried sessions pinned to different backends
    expect(new Set(servedBy.values()).size).toBe(3);
  });

  it('refuses a request target that is not a path with 400', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const res = await request(started.port, { method: 'OPTIONS', path: '*' });
    expect(res.status).toBe(400);
    expect(backends[0]!.seen).toHaveLength(0);
  });
});
