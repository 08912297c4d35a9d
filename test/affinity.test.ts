import { describe, expect, it } from 'vitest';
import { backendsYaml, startBackends } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { cookiePair, request } from './support/client.js';
import { startProxy } from './support/proxy.js';

const cleanup = useCleanup();

/** 127.0.x.y source addresses, skipping 127.0.0.1 so the proxy sees many distinct clients. */
function sourceAddress(i: number): string {
  return `127.0.${Math.floor(i / 250) + 1}.${(i % 250) + 2}`;
}

describe('ip affinity', () => {
  it('keeps every source address on one backend and spreads addresses over all backends', async () => {
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const clients = 300;
    const counts = new Map<string, number>();
    for (let i = 0; i < clients; i++) {
      const first = await request(started.port, { localAddress: sourceAddress(i) });
      for (let r = 0; r < 2; r++) {
        const again = await request(started.port, { localAddress: sourceAddress(i) });
        expect(again.headers['x-backend']).toBe(first.headers['x-backend']);
      }
      const id = first.headers['x-backend'] as string;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect(counts.size).toBe(3);
    // 300 random clients over 3 backends: each within ±30 % of 100 (≈ 4 σ)
    for (const count of counts.values()) expect(count).toBeGreaterThan(70);
  });

  it('does not let X-Forwarded-For from an untrusted peer steer the client', async () => {
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const servedBy = new Set<string>();
    for (let i = 0; i < 60; i++) {
      const res = await request(started.port, { localAddress: '127.0.0.50', headers: { 'x-forwarded-for': `10.1.${i}.${i}` } });
      servedBy.add(res.headers['x-backend'] as string);
    }
    expect(servedBy.size).toBe(1);
  });

  it('believes X-Forwarded-For from a trusted proxy, taking the rightmost untrusted hop', async () => {
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`affinity: { by: ip }\ntrustedProxies: ["127.0.0.50", "10.99.0.0/16"]\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const servedBy = new Set<string>();
    for (let i = 0; i < 60; i++) {
      // the client's own spoofed first hop must be ignored: the rightmost untrusted hop is 192.0.2.i
      const xff = `6.6.6.6, 192.0.2.${i}, 10.99.1.1`;
      const first = await request(started.port, { localAddress: '127.0.0.50', headers: { 'x-forwarded-for': xff } });
      const spoofed = await request(started.port, { localAddress: '127.0.0.50', headers: { 'x-forwarded-for': `7.7.7.${i}, 192.0.2.${i}, 10.99.1.1` } });
      expect(spoofed.headers['x-backend']).toBe(first.headers['x-backend']);
      servedBy.add(first.headers['x-backend'] as string);
    }
    expect(servedBy.size).toBe(3);
  });

  it('treats an IPv4-mapped IPv6 peer as the same client as its IPv4 address', async () => {
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const { normaliseAddress } = await import('../src/affinity/client-address.js');
    expect(normaliseAddress('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(normaliseAddress('2001:DB8::1')).toBe('2001:db8::1');
  });
});

describe('cookie affinity', () => {
  const cookieConfig = (extra = '') => `affinity: { by: cookie, cookie: { secret: test-secret${extra} } }`;

  it('sets a signed cookie that keeps the client on its backend, and names no address', async () => {
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`${cookieConfig(', maxAge: 1h')}\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const first = await request(started.port);
    const setCookie = (first.headers['set-cookie'] ?? [])[0]!;
    expect(setCookie).toMatch(/^limpet=[^;]+; Path=\/; Max-Age=3600; Expires=[^;]+; HttpOnly; SameSite=Lax$/);
    for (const b of backends) expect(setCookie).not.toContain(String(b.port));
    expect(setCookie).not.toContain('127.0.0.1');
    const cookie = cookiePair(first.headers)!;
    for (let i = 0; i < 20; i++) {
      const res = await request(started.port, { headers: { cookie: `other=1; ${cookie}; theme=dark` } });
      expect(res.headers['x-backend']).toBe(first.headers['x-backend']);
      expect(res.headers['set-cookie']).toBeUndefined();
    }
  });

  it('spreads new clients exactly by weight', async () => {
    const backends = cleanup.add(await startBackends(3));
    const yaml = ['backends:', ...backends.map((b, i) => `  - { id: ${b.id}, url: "${b.url}", weight: ${i + 1} }`)].join('\n');
    const started = await startProxy(`${cookieConfig()}\n${yaml}`);
    cleanup.add(started.limpet);
    const counts = new Map<string, number>();
    for (let i = 0; i < 600; i++) {
      const res = await request(started.port);
      const id = res.headers['x-backend'] as string;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    expect(Object.fromEntries(counts)).toEqual({ 'app-1': 100, 'app-2': 200, 'app-3': 300 });
  });

  it('ignores tampered, forged and foreign-secret cookies: the client is pinned afresh, never a 5xx', async () => {
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`${cookieConfig()}\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const first = await request(started.port);
    const [name, value] = cookiePair(first.headers)!.split('=') as [string, string];
    const pinnedId = first.headers['x-backend'] as string;
    const otherId = backends.find((b) => b.id !== pinnedId)!.id;
    const parts = value.split('.');
    const attempts = [
      // point the cookie at another backend, keeping the MAC
      [parts[0], otherId, parts[2], parts[3]].join('.'),
      // flip one character of the MAC
      [parts[0], parts[1], parts[2], parts[3]!.slice(0, -1) + (parts[3]!.endsWith('A') ? 'B' : 'A')].join('.'),
      // a plausible cookie made without the secret
      `AAAAAAAAAAAAAAAA.${otherId}.0.AAAAAAAAAAAAAAAAAAAAAA`,
      'garbage',
      '',
      `${value}x`,
    ];
    for (const forged of attempts) {
      const res = await request(started.port, { headers: { cookie: `${name}=${forged}` } });
      expect(res.status).toBe(200);
      expect(cookiePair(res.headers)).toBeDefined();
      expect(cookiePair(res.headers)).not.toBe(`${name}=${forged}`);
    }
    // a cookie signed with another secret is foreign too
    const foreign = await startProxy(`affinity: { by: cookie, cookie: { secret: other-secret } }\n${backendsYaml(backends)}`);
    const foreignCookie = cookiePair((await request(foreign.port)).headers)!;
    await foreign.limpet.close();
    const res = await request(started.port, { headers: { cookie: foreignCookie } });
    expect(cookiePair(res.headers)).toBeDefined();
    expect(cookiePair(res.headers)).not.toBe(foreignCookie);
  });

  it('is honoured by every replica sharing the secret', async () => {
    const backends = cleanup.add(await startBackends(3));
    const a = await startProxy(`${cookieConfig()}\n${backendsYaml(backends)}`);
    const b = await startProxy(`${cookieConfig()}\n${backendsYaml(backends)}`);
    cleanup.add([a.limpet, b.limpet]);
    for (let i = 0; i < 10; i++) {
      const first = await request(a.port);
      const again = await request(b.port, { headers: { cookie: cookiePair(first.headers)! } });
      expect(again.headers['x-backend']).toBe(first.headers['x-backend']);
      expect(again.headers['set-cookie']).toBeUndefined();
    }
  });

  it('uses secure and SameSite=None attributes as configured', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`${cookieConfig(', secure: true, sameSite: none, path: /app, httpOnly: false')}\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const res = await request(started.port);
    expect((res.headers['set-cookie'] ?? [])[0]).toMatch(/^limpet=[^;]+; Path=\/app; Secure; SameSite=None$/);
  });
});
