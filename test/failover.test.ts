import { describe, expect, it } from 'vitest';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { Agent } from 'node:http';
import { answerWithId, backendsYaml, startBackend, type BackendHandler } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { cookiePair, request, waitFor } from './support/client.js';
import { startProxy } from './support/proxy.js';

const cleanup = useCleanup();

function sourceAddress(i: number): string {
  return `127.0.${Math.floor(i / 250) + 1}.${(i % 250) + 2}`;
}

/** Backends whose health endpoint and app can be switched between healthy, failing (503) and hung. */
function controllable() {
  const state = new Map<string, 'ok' | 'sick' | 'hung'>();
  const held: import('node:http').ServerResponse[] = [];
  const handler: BackendHandler = (req, res, id) => {
    const mode = state.get(id) ?? 'ok';
    if (mode === 'hung') {
      held.push(res);
      return;
    }
    if (req.url === '/health') {
      res.writeHead(mode === 'ok' ? 200 : 503).end();
      return;
    }
    answerWithId(req, res, id);
  };
  return { state, handler, release: () => held.splice(0).forEach((r) => r.destroy()) };
}

const FAST_HEALTH = 'healthCheck: { interval: 100ms, timeout: 150ms, rise: 1, fall: 2 }';

async function pinAll(port: number, clients: number): Promise<string[]> {
  const pins: string[] = [];
  for (let i = 0; i < clients; i++) {
    const res = await request(port, { localAddress: sourceAddress(i) });
    expect(res.status).toBe(200);
    pins.push(res.headers['x-backend'] as string);
  }
  return pins;
}

describe('failover', () => {
  it('moves only a killed backend\'s clients, spreads them evenly, and shows no errors for requests after the kill', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3', 'app-4'].map((id) => startBackend(id))));
    const started = await startProxy(`affinity: { by: ip }\nhealthCheck: { interval: 5s }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const clients = 1200;
    const before = await pinAll(started.port, clients);
    const victim = backends[1]!;
    await victim.close();

    const after: string[] = [];
    const statuses: number[] = [];
    // concurrent load from all clients right after the kill
    const queue = [...before.keys()];
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        for (let i = queue.shift(); i !== undefined; i = queue.shift()) {
          const res = await request(started.port, { localAddress: sourceAddress(i) });
          statuses[i] = res.status;
          after[i] = res.headers['x-backend'] as string;
        }
      }),
    );
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    let othersMoved = 0;
    const spread = new Map<string, number>();
    for (let i = 0; i < clients; i++) {
      if (before[i] !== victim.id) {
        if (after[i] !== before[i]) othersMoved++;
        continue;
      }
      expect(after[i]).not.toBe(victim.id);
      spread.set(after[i]!, (spread.get(after[i]!) ?? 0) + 1);
    }
    expect(othersMoved).toBe(0);
    expect(spread.size).toBe(3);
    const counts = [...spread.values()];
    const mean = counts.reduce((a, b) => a + b, 0) / counts.length;
    expect(Math.max(...counts) / mean).toBeLessThanOrEqual(1.15);
    // passive detection took it out without waiting for the 5 s check
    expect(proxy.backend(victim.id)!.status).toBe('down');
  });

  it('tells the new backend where a remapped client came from, once per move', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2'].map((id) => startBackend(id))));
    const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const pins = await pinAll(started.port, 40);
    const victimId = pins[0]!;
    const victim = backends.find((b) => b.id === victimId)!;
    const survivor = backends.find((b) => b.id !== victimId)!;
    await victim.close();
    survivor.seen.length = 0;
    await request(started.port, { localAddress: sourceAddress(0) });
    expect(survivor.seen[0]!.headers['x-limpet-remapped-from']).toBe(victimId);
    await request(started.port, { localAddress: sourceAddress(0) });
    expect(survivor.seen[1]!.headers['x-limpet-remapped-from']).toBeUndefined();
  });

  it('marks a hung backend down through its checks and serves its clients elsewhere', async () => {
    const control = controllable();
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, control.handler))));
    const started = await startProxy(`affinity: { by: ip }\n${FAST_HEALTH}\ntimeouts: { response: 2s }\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const before = await pinAll(started.port, 60);
    const victimId = before[0]!;
    const hungAt = Date.now();
    control.state.set(victimId, 'hung');
    await waitFor(() => proxy.backend(victimId)!.status === 'down', 10_000, 'hung backend to be marked down');
    const detectedMs = Date.now() - hungAt;
    console.log(`hung backend marked down after ${detectedMs} ms (fall × interval + timeout = ${2 * 100 + 150} ms, plus jitter)`);
    for (let i = 0; i < before.length; i++) {
      const res = await request(started.port, { localAddress: sourceAddress(i) });
      expect(res.status).toBe(200);
      if (before[i] === victimId) expect(res.headers['x-backend']).not.toBe(victimId);
      else expect(res.headers['x-backend']).toBe(before[i]);
    }
    control.release();
  });

  it('answers 504 for a request to a backend that never answers', async () => {
    const control = controllable();
    const backends = cleanup.add([await startBackend('app-1', control.handler)]);
    const started = await startProxy(`affinity: { by: ip }\nhealthCheck: { interval: 1h }\ntimeouts: { response: 300ms }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    control.state.set('app-1', 'hung');
    const res = await request(started.port);
    expect(res.status).toBe(504);
    control.release();
  });

  for (const mode of ['ip', 'cookie'] as const) {
    for (const onRecovery of ['stay', 'return'] as const) {
      it(`${mode} clients with onRecovery: ${onRecovery} ${onRecovery === 'stay' ? 'stay where they moved' : 'go back'} when their backend heals`, async () => {
        const control = controllable();
        const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, control.handler))));
        const started = await startProxy(
          `affinity: { by: ${mode}, onRecovery: ${onRecovery}, cookie: { secret: s } }\n${FAST_HEALTH}\n${backendsYaml(backends)}`,
        );
        const proxy = cleanup.add(started.limpet);
        const clients = 90;
        const cookies: string[] = [];
        const home: string[] = [];
        const send = async (i: number) => {
          const res = await request(started.port, mode === 'ip' ? { localAddress: sourceAddress(i) } : { headers: cookies[i] ? { cookie: cookies[i]! } : {} });
          expect(res.status).toBe(200);
          const pair = cookiePair(res.headers);
          if (pair) cookies[i] = pair;
          return res.headers['x-backend'] as string;
        };
        for (let i = 0; i < clients; i++) home[i] = await send(i);
        const victimId = 'app-2';
        control.state.set(victimId, 'sick');
        await waitFor(() => proxy.backend(victimId)!.status === 'down', 10_000, 'backend down');
        const moved: number[] = [];
        for (let i = 0; i < clients; i++) {
          const now = await send(i);
          if (home[i] === victimId) {
            expect(now).not.toBe(victimId);
            moved.push(i);
          } else expect(now).toBe(home[i]);
        }
        expect(moved.length).toBeGreaterThan(10);
        control.state.set(victimId, 'ok');
        await waitFor(() => proxy.backend(victimId)!.status === 'up', 10_000, 'backend up');
        let wentBack = 0;
        for (const i of moved) if ((await send(i)) === victimId) wentBack++;
        expect(wentBack).toBe(onRecovery === 'stay' ? 0 : moved.length);
        // nobody else was disturbed by the recovery
        for (let i = 0; i < clients; i++) if (home[i] !== victimId) expect(await send(i)).toBe(home[i]);
      });
    }
  }

  it('drain keeps pinned clients (ip and cookie) and sends new clients elsewhere', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id))));
    for (const mode of ['ip', 'cookie']) {
      const started = await startProxy(`affinity: { by: ${mode}, cookie: { secret: s } }\n${backendsYaml(backends)}`);
      const proxy = cleanup.add(started.limpet);
      const pinned: { i: number; cookie?: string }[] = [];
      for (let i = 0; i < 60; i++) {
        const res = await request(started.port, { localAddress: sourceAddress(i) });
        if (res.headers['x-backend'] === 'app-1') pinned.push({ i, cookie: cookiePair(res.headers) });
      }
      expect(pinned.length).toBeGreaterThan(5);
      proxy.setDraining('app-1', true);
      expect(proxy.backend('app-1')!.status).toBe('draining');
      for (const p of pinned) {
        const res = await request(started.port, mode === 'ip' ? { localAddress: sourceAddress(p.i) } : { headers: { cookie: p.cookie! } });
        expect(res.headers['x-backend']).toBe('app-1');
      }
      for (let i = 1000; i < 1100; i++) {
        const res = await request(started.port, { localAddress: sourceAddress(i) });
        expect(res.headers['x-backend']).not.toBe('app-1');
      }
      await proxy.close();
    }
  });

  it('answers 503 with Retry-After when every backend is down', async () => {
    const control = controllable();
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2'].map((id) => startBackend(id, control.handler))));
    const started = await startProxy(`affinity: { by: ip }\n${FAST_HEALTH}\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    control.state.set('app-1', 'sick');
    control.state.set('app-2', 'sick');
    await waitFor(() => proxy.backends.every((b) => b.status === 'down'), 10_000, 'all down');
    const res = await request(started.port);
    expect(res.status).toBe(503);
    expect(res.headers['retry-after']).toBe('5');
    expect(res.body).toMatch(/no backend/i);
  });

  it('retries a request with a body on the next backend when its backend refuses the connection', async () => {
    const echo: BackendHandler = (req, res, id) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => res.writeHead(200, { 'x-backend': id }).end(body));
    };
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, echo))));
    const started = await startProxy(`affinity: { by: ip }\nhealthCheck: { interval: 1h }\npassive: { maxFails: 1000 }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    await backends[0]!.close();
    for (let i = 0; i < 60; i++) {
      const res = await request(started.port, { method: 'POST', body: `payload-${i}`, localAddress: sourceAddress(i) });
      expect(res.status).toBe(200);
      expect(res.body).toBe(`payload-${i}`);
      expect(res.headers['x-backend']).not.toBe('app-1');
    }
  });

  it('resends a request whose pooled keep-alive socket the backend had closed, instead of a 502', async () => {
    // Answers the first request on each connection, then resets the connection on the second without answering.
    const server = createTcpServer((socket: Socket) => {
      let requests = 0;
      let buffered = '';
      socket.on('data', (chunk) => {
        buffered += chunk.toString('latin1');
        while (buffered.includes('\r\n\r\n')) {
          buffered = buffered.slice(buffered.indexOf('\r\n\r\n') + 4);
          requests++;
          if (requests === 1) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Backend: stale\r\n\r\nok\n');
          else socket.resetAndDestroy();
        }
      });
      socket.on('error', () => {});
    });
    cleanup.add(() => server.close());
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    const started = await startProxy(`affinity: { by: ip }\nhealthCheck: { interval: 1h }\nbackends: [{ id: stale, url: "http://127.0.0.1:${port}" }]`);
    const proxy = cleanup.add(started.limpet);
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = 0; i < 30; i++) {
      const res = await request(started.port, { agent });
      expect(res.status).toBe(200);
    }
    agent.destroy();
    expect(proxy.backend('stale')!.status).toBe('up');
  });
});

describe('a backend that resets every connection once it reads a request', () => {
  it('retries bodiless idempotent requests on the next backend, and answers 502 to requests with a body', async () => {
    const resetting = createTcpServer((socket: Socket) => {
      socket.on('error', () => {});
      socket.once('data', () => socket.resetAndDestroy());
    });
    cleanup.add(() => resetting.close());
    await new Promise<void>((resolve) => resetting.listen(0, '127.0.0.1', resolve));
    const { port: resetPort } = resetting.address() as import('node:net').AddressInfo;
    const steady = cleanup.add(await startBackend('steady'));
    const started = await startProxy(
      `affinity: { by: ip }\nhealthCheck: { interval: 1h }\npassive: { maxFails: 1000 }\nbackends:\n  - { id: resetter, url: "http://127.0.0.1:${resetPort}" }\n  - { id: steady, url: "${steady.url}" }`,
    );
    cleanup.add(started.limpet);
    const gets = await Promise.all(Array.from({ length: 20 }, (_, i) => request(started.port, { localAddress: sourceAddress(i) })));
    expect(gets.map((r) => r.status)).toEqual(gets.map(() => 200));
    // Those placed on the resetting backend arrived at the steady one as remapped.
    const remapped = steady.seen.filter((r) => r.headers['x-limpet-remapped-from'] === 'resetter');
    expect(remapped.length).toBeGreaterThan(0);

    // New clients, so some are placed on the resetting backend again.
    const posts = await Promise.all(
      Array.from({ length: 20 }, (_, i) => request(started.port, { method: 'POST', body: 'payload', localAddress: sourceAddress(100 + i) })),
    );
    const failed = posts.filter((r) => r.status === 502).length;
    expect(failed).toBeGreaterThan(0);
    // A request whose body went out may have had effects: the failed ones were never sent again.
    expect(posts.filter((r) => r.status === 200).length).toBe(20 - failed);
    expect(steady.seen.filter((r) => r.method === 'POST').length).toBe(20 - failed);
  });
});
