import { describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { backendsYaml, startBackend, startBackends } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request } from './support/client.js';
import { startProxy } from './support/proxy.js';

const cleanup = useCleanup();

describe('forwarding', () => {
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

  it('answers 502 when the backend refuses connections', async () => {
    const closed = await startBackend('gone');
    await closed.close();
    const started = await startProxy(`affinity: { by: ip }\nretries: 0\n${backendsYaml([closed])}`);
    cleanup.add(started.limpet);
    const res = await request(started.port);
    expect(res.status).toBe(502);
    expect(res.body).toMatch(/bad gateway/i);
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
