import { describe, expect, it } from 'vitest';
import type { IncomingMessage } from 'node:http';
import { connect, type Socket } from 'node:net';
import { ConfigError, parseConfig, type ConfigIssue } from '../src/config/load.js';
import { hashKey } from '../src/selection/hash.js';
import { Selector } from '../src/selection/selector.js';
import type { Limpet } from '../src/limpet.js';
import { answerWithId, backendsYaml, startBackend, type TestBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { cookiePair, request, waitFor, type TestResponse } from './support/client.js';
import { parseExposition, sample, type Exposition } from './support/exposition.js';
import { startProxy } from './support/proxy.js';

/**
 * Elastic fleets over real sockets: rebalance after a scale-up (ip and cookie), drains with a
 * deadline (admin API and YAML) with WebSockets, slow start, and what the admin API and metrics say.
 */

const cleanup = useCleanup();

const HEALTH = 'healthCheck: { interval: 100ms, timeout: 500ms, rise: 1, fall: 2 }';
const address = (i: number) => `127.0.${Math.floor(i / 250) + 3}.${(i % 250) + 2}`;

interface BackendView {
  id: string;
  state: string;
  weight: number;
  effectiveWeight: number;
  drainDeadline: string | null;
  drained: boolean;
  liveClients: number;
  sessions: number;
  websockets: number;
}

async function scrape(limpet: Limpet): Promise<Exposition> {
  return parseExposition((await admin(limpet, '/metrics')).body);
}

/** A counter sample, 0 when the series does not exist yet. */
function count(exposition: Exposition, name: string, labels: Record<string, string>): number {
  return exposition.samples.some((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) ? sample(exposition, name, labels) : 0;
}

async function admin(limpet: Limpet, path: string, method = 'GET'): Promise<TestResponse> {
  return request(limpet.adminAddress.port, { path, method });
}

async function views(limpet: Limpet): Promise<BackendView[]> {
  return JSON.parse((await admin(limpet, '/backends')).body) as BackendView[];
}

async function view(limpet: Limpet, id: string): Promise<BackendView> {
  const res = await admin(limpet, `/backends/${id}`);
  expect(res.status).toBe(200);
  return JSON.parse(res.body) as BackendView;
}

/** The home of each key for a fleet of these ids (weight 1 each), in config order: what the proxy's selector computes. */
function homes(ids: readonly string[]): (key: string) => string {
  const selector = new Selector(ids.map((id) => ({ id, weight: 1 })));
  return (key) => ids[selector.primary(hashKey(key))] as string;
}

function reloadWith(limpet: Limpet, yaml: string): void {
  limpet.reload(parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n${yaml}`, 'test.yaml', {}));
}

/** The request a backend saw from a client address (its X-Forwarded-For), last first. */
function lastFrom(backend: TestBackend, client: string) {
  return [...backend.seen].reverse().find((seen) => seen.headers['x-forwarded-for'] === client);
}

/** A backend that answers with its id and accepts WebSocket upgrades (keeping the socket, recording its bytes). */
async function startUpgradingBackend(id: string): Promise<TestBackend & { upgraded: Socket[] }> {
  const backend = await startBackend(id, answerWithId);
  const upgraded: Socket[] = [];
  const close = backend.close;
  // Upgraded sockets leave the server's books: close them too, or the server never finishes closing.
  backend.close = () => {
    for (const socket of upgraded) socket.destroy();
    return close();
  };
  backend.server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
    upgraded.push(socket);
    socket.on('error', () => {});
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n');
  });
  return Object.assign(backend, { upgraded });
}

/** Opens a WebSocket tunnel through the proxy from `from`; resolves once upgraded, with what it receives after the 101. */
async function openTunnel(port: number, from: string): Promise<{ socket: Socket; afterHead: () => Buffer; closed: Promise<void> }> {
  const socket = connect({ port, host: '127.0.0.1', localAddress: from });
  cleanup.add(() => socket.destroy());
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
  socket.write('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  const all = () => Buffer.concat(chunks);
  await waitFor(() => all().includes('\r\n\r\n'), 10_000, 'the 101');
  expect(all().toString('latin1')).toMatch(/^HTTP\/1\.1 101 /);
  return { socket, afterHead: () => all().subarray(all().indexOf('\r\n\r\n') + 4), closed };
}

const CLOSE_1001 = Buffer.from([0x88, 0x02, 0x03, 0xe9]);

describe('rebalance after a scale-up', () => {
  it('by ip: idle clients go to their new home on their next request, with the notice; active ones never move', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3', 'app-4', 'app-5'].map((id) => startBackend(id))));
    const first4 = backends.slice(0, 4);
    const base = `affinity: { by: ip, rebalance: { idleAfter: 1s, maxMovesPerSecond: 100000 } }\n${HEALTH}\n`;
    const started = await startProxy(`${base}${backendsYaml(first4)}`);
    const proxy = cleanup.add(started.limpet);
    const clients = Array.from({ length: 80 }, (_, i) => address(i));
    const home = homes(backends.map((b) => b.id));
    const pinned = new Map<string, string>();
    for (const client of clients) pinned.set(client, (await request(started.port, { localAddress: client })).headers['x-backend'] as string);
    const homeBefore = homes(first4.map((b) => b.id));
    expect(clients.every((client) => pinned.get(client) === homeBefore(client))).toBe(true);

    // Half keep requesting; the other half go idle.
    const active = clients.filter((_, i) => i % 2 === 0);
    const idle = clients.filter((_, i) => i % 2 === 1);
    let running = true;
    const activeSeen: { client: string; status: number; backend: string; remapped: boolean }[] = [];
    const loops = active.map(async (client) => {
      while (running) {
        const res = await request(started.port, { localAddress: client });
        activeSeen.push({ client, status: res.status, backend: res.headers['x-backend'] as string, remapped: lastFrom(backends.find((b) => b.id === res.headers['x-backend'])!, client)?.headers['x-limpet-remapped-from'] !== undefined });
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    });
    try {
      await waitFor(async () => (await views(proxy)).reduce((sum, v) => sum + v.liveClients, 0) === active.length, 15_000, 'only the active clients to be live');
      reloadWith(proxy, `${base}${backendsYaml(backends)}`);
      await waitFor(async () => (await view(proxy, 'app-5')).state === 'up', 10_000, 'app-5 up');
      await waitFor(async () => (await views(proxy)).reduce((sum, v) => sum + v.liveClients, 0) === active.length, 15_000, 'the idle ones idle still');

      let movedToNew = 0;
      for (const client of idle) {
        const res = await request(started.port, { localAddress: client });
        expect(res.status).toBe(200);
        const now = res.headers['x-backend'] as string;
        expect(now).toBe(home(client));
        const notice = lastFrom(backends.find((b) => b.id === now)!, client)?.headers['x-limpet-remapped-from'];
        expect(notice).toBe(now === pinned.get(client) ? undefined : pinned.get(client));
        if (now === 'app-5') movedToNew++;
      }
      expect(movedToNew).toBeGreaterThan(0);
      // New clients take their home at once, app-5 included.
      for (let i = 200; i < 260; i++) expect((await request(started.port, { localAddress: address(i) })).headers['x-backend']).toBe(home(address(i)));
    } finally {
      running = false;
      await Promise.all(loops);
    }
    expect(activeSeen.length).toBeGreaterThan(active.length * 5);
    expect(activeSeen.every((seen) => seen.status === 200 && seen.backend === pinned.get(seen.client) && !seen.remapped)).toBe(true);
    const exposition = await scrape(proxy);
    const rebalanced = idle.filter((client) => home(client) !== pinned.get(client)).length;
    let counted = 0;
    for (const from of first4) for (const to of backends) counted += count(exposition, 'limpet_session_remaps_total', { from: from.id, to: to.id, reason: 'rebalance' });
    expect(counted).toBe(rebalanced);
  });

  it('by cookie: with no fleet change nobody moves; after a scale-up idle clients whose nonce is at home there move', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3', 'app-4'].map((id) => startBackend(id))));
    const base = `affinity: { by: cookie, cookie: { secret: s3cret }, rebalance: { idleAfter: 1s } }\n${HEALTH}\n`;
    const started = await startProxy(`${base}${backendsYaml(backends.slice(0, 3))}`);
    const proxy = cleanup.add(started.limpet);
    const clients: { cookie: string; backend: string }[] = [];
    for (let i = 0; i < 90; i++) {
      const res = await request(started.port);
      clients.push({ cookie: cookiePair(res.headers)!, backend: res.headers['x-backend'] as string });
    }
    // Exactly by weight, and each nonce's home is where round-robin put it.
    const home3 = homes(['app-1', 'app-2', 'app-3']);
    expect(clients.every((client) => home3(client.cookie.slice('limpet='.length, 'limpet='.length + 16)) === client.backend)).toBe(true);
    const idleNow = async () => (await views(proxy)).every((v) => v.liveClients === 0);
    await waitFor(idleNow, 15_000, 'every client idle');
    for (const client of clients) {
      const res = await request(started.port, { headers: { cookie: client.cookie } });
      expect(res.headers['x-backend']).toBe(client.backend);
      expect(lastFrom(backends.find((b) => b.id === client.backend)!, '127.0.0.1')?.headers['x-limpet-remapped-from']).toBeUndefined();
      client.cookie = cookiePair(res.headers) ?? client.cookie;
    }
    reloadWith(proxy, `${base}${backendsYaml(backends)}`);
    await waitFor(async () => (await view(proxy, 'app-4')).state === 'up', 10_000, 'app-4 up');
    await waitFor(idleNow, 15_000, 'every client idle again');
    const home4 = homes(backends.map((b) => b.id));
    let moved = 0;
    for (const client of clients) {
      const home = home4(client.cookie.slice('limpet='.length, 'limpet='.length + 16));
      const res = await request(started.port, { headers: { cookie: client.cookie } });
      expect(res.headers['x-backend']).toBe(home);
      if (home !== client.backend) {
        moved++;
        expect(backends.find((b) => b.id === home)!.seen.at(-1)?.headers['x-limpet-remapped-from']).toBe(client.backend);
        // The new cookie names the new backend.
        expect((await request(started.port, { headers: { cookie: cookiePair(res.headers)! } })).headers['x-backend']).toBe(home);
      }
    }
    expect(moved).toBeGreaterThan(5);
  });
});

describe('drain with a deadline', () => {
  it('through the admin API: idle clients move first, the rest and the WebSockets (1001) at the deadline, then drained', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startUpgradingBackend(id))));
    const started = await startProxy(`affinity: { by: ip, rebalance: { idleAfter: 1s } }\n${HEALTH}\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const clients = Array.from({ length: 60 }, (_, i) => address(i));
    const onApp1: string[] = [];
    for (const client of clients) if ((await request(started.port, { localAddress: client })).headers['x-backend'] === 'app-1') onApp1.push(client);
    expect(onApp1.length).toBeGreaterThan(4);
    const [keeper, ...idle] = onApp1 as [string, ...string[]];
    const tunnel = await openTunnel(started.port, keeper);
    expect(backends[0]!.upgraded).toHaveLength(1);

    // Bad calls change nothing.
    for (const [path, reason] of [
      ['/backends/app-1/drain?deadline=soon', /deadline: expected a duration/],
      ['/backends/app-1/drain?deadline=500ms', /at least 1s/],
      ['/backends/app-1/drain?deadline=1m&force=1', /unknown parameter "force"/],
      ['/backends/app-1/undrain?deadline=1m', /undrain takes no deadline/],
    ] as const) {
      const res = await admin(proxy, path, 'POST');
      expect(res.status).toBe(400);
      expect(JSON.parse(res.body).error).toMatch(reason);
    }
    expect(proxy.backend('app-1')!.draining).toBe(false);

    const drained = await admin(proxy, '/backends/app-1/drain?deadline=4s', 'POST');
    expect(drained.status).toBe(200);
    const deadline = Date.parse(JSON.parse(drained.body).drainDeadline as string);
    expect(JSON.parse(drained.body)).toMatchObject({ state: 'draining', drained: false });

    // The keeper stays busy (its tunnel, and requests); the others go idle and then return: they move.
    const keeperLoop = (async () => {
      const seen: string[] = [];
      while (Date.now() < deadline - 300) {
        seen.push((await request(started.port, { localAddress: keeper })).headers['x-backend'] as string);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      return seen;
    })();
    await waitFor(async () => (await view(proxy, 'app-1')).liveClients === 1, 10_000, 'only the keeper live on app-1');
    for (const client of idle) {
      const res = await request(started.port, { localAddress: client });
      expect(res.headers['x-backend']).not.toBe('app-1');
      expect(lastFrom(backends.find((b) => b.id === res.headers['x-backend'])!, client)?.headers['x-limpet-remapped-from']).toBe('app-1');
    }
    expect((await keeperLoop).every((id) => id === 'app-1')).toBe(true);
    expect(tunnel.socket.destroyed).toBe(false);

    // The deadline: the tunnel gets close 1001, the keeper moves on its next request.
    await tunnel.closed;
    expect(Date.now()).toBeGreaterThanOrEqual(deadline - 50);
    expect(tunnel.afterHead()).toEqual(CLOSE_1001);
    const after = await request(started.port, { localAddress: keeper });
    expect(after.headers['x-backend']).not.toBe('app-1');
    expect(lastFrom(backends.find((b) => b.id === after.headers['x-backend'])!, keeper)?.headers['x-limpet-remapped-from']).toBe('app-1');
    expect(sample(await scrape(proxy), 'limpet_session_remaps_total', { from: 'app-1', to: after.headers['x-backend'] as string, reason: 'drain' })).toBeGreaterThan(0);

    // Nothing live left on it: drained, in the API and the metric.
    await waitFor(async () => (await view(proxy, 'app-1')).drained, 10_000, 'app-1 drained');
    expect(sample(await scrape(proxy), 'limpet_backend_drained', { backend: 'app-1' })).toBe(1);
    expect(sample(await scrape(proxy), 'limpet_backend_drained', { backend: 'app-2' })).toBe(0);
    // Undrain: back in service, no deadline.
    const undrained = JSON.parse((await admin(proxy, '/backends/app-1/undrain', 'POST')).body) as BackendView;
    expect(undrained).toMatchObject({ state: 'up', drainDeadline: null, drained: false });
    expect((await admin(proxy, '/backends/nope')).status).toBe(404);
  });

  it('undrain before the deadline cancels it: the clients and tunnels stay', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startUpgradingBackend(id))));
    const started = await startProxy(`affinity: { by: ip }\n${HEALTH}\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const on = new Map<string, string>();
    for (let i = 0; i < 40; i++) on.set(address(i), (await request(started.port, { localAddress: address(i) })).headers['x-backend'] as string);
    const from = (id: string) => [...on].find(([, backend]) => backend === id)![0];
    const kept = await openTunnel(started.port, from('app-1'));
    const cut = await openTunnel(started.port, from('app-2'));
    expect((await admin(proxy, '/backends/app-1/drain?deadline=1s', 'POST')).status).toBe(200);
    expect((await admin(proxy, '/backends/app-1/undrain', 'POST')).status).toBe(200);
    // app-2's deadline, given after app-1's, passing shows app-1's would have passed too.
    expect((await admin(proxy, '/backends/app-2/drain?deadline=1s', 'POST')).status).toBe(200);
    await cut.closed;
    await new Promise((resolve) => setImmediate(resolve));
    expect(kept.socket.destroyed).toBe(false);
    expect((await request(started.port, { localAddress: from('app-1') })).headers['x-backend']).toBe('app-1');
    expect((await request(started.port, { localAddress: from('app-2') })).headers['x-backend']).not.toBe('app-2');
  });

  it('in YAML: the deadline counts from when the drain began, and a reload that keeps it does not restart it', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2'].map((id) => startBackend(id))));
    const yaml = (drain: string) =>
      `affinity: { by: ip }\n${HEALTH}\nbackends:\n  - { id: app-1, url: "${backends[0]!.url}" }\n  - { id: app-2, url: "${backends[1]!.url}", drain: ${drain} }\n`;
    const started = await startProxy(yaml('{ deadline: 1h }'));
    const proxy = cleanup.add(started.limpet);
    const app2 = proxy.backend('app-2')!;
    const began = app2.drainStarted!;
    expect(app2.drainDeadline).toBe(began + 3_600_000);
    reloadWith(proxy, yaml('{ deadline: 1h }'));
    expect([app2.drainStarted, app2.drainDeadline]).toEqual([began, began + 3_600_000]);
    reloadWith(proxy, yaml('{ deadline: 2h }'));
    expect([app2.drainStarted, app2.drainDeadline]).toEqual([began, began + 7_200_000]);
    reloadWith(proxy, yaml('true'));
    expect([app2.draining, app2.drainDeadline]).toEqual([true, null]);
    reloadWith(proxy, yaml('{ deadline: 1s }'));
    // A second after the drain began, not after this reload.
    expect(app2.drainDeadline).toBe(began + 1_000);
    await waitFor(() => app2.drainDeadlinePassed, 5_000, 'the deadline to pass');
    expect((await view(proxy, 'app-2')).state).toBe('draining');
    reloadWith(proxy, yaml('false'));
    expect([app2.draining, app2.drainDeadline, app2.drainDeadlinePassed]).toEqual([false, null, false]);
  });
});

describe('slow start', () => {
  it('an added backend ramps its effective weight from about 0 to its weight, shown in the API and the metric', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id))));
    const base = `affinity: { by: ip }\nbalance: { slowStart: 3s }\n${HEALTH}\n`;
    const started = await startProxy(`${base}${backendsYaml(backends.slice(0, 2))}`);
    const proxy = cleanup.add(started.limpet);
    // In service since start: no ramp.
    expect((await view(proxy, 'app-1')).effectiveWeight).toBe(1);
    reloadWith(proxy, `${base}${backendsYaml(backends)}`);
    const ramping = await waitFor(async () => {
      const weight = (await view(proxy, 'app-3')).effectiveWeight;
      return weight > 0 && weight < 0.9 ? weight : null;
    }, 10_000, 'app-3 ramping');
    const metric = sample(await scrape(proxy), 'limpet_backend_effective_weight', { backend: 'app-3' })!;
    expect(metric).toBeGreaterThanOrEqual(ramping);
    expect(metric).toBeLessThan(1);
    await waitFor(async () => (await view(proxy, 'app-3')).effectiveWeight === 1, 10_000, 'app-3 at full weight');
    expect(sample(await scrape(proxy), 'limpet_backend_effective_weight', { backend: 'app-3' })).toBe(1);
  });
});

describe('elastic config', () => {
  function issuesOf(text: string): ConfigIssue[] {
    try {
      parseConfig(text, 'f.yaml', {});
    } catch (error) {
      if (error instanceof ConfigError) return error.issues;
      throw error;
    }
    throw new Error('expected a ConfigError');
  }
  const MINIMAL = 'backends: [{ id: a, url: "http://127.0.0.1:3001" }]\n';

  it('reads rebalance, balance and drain deadlines', () => {
    const config = parseConfig(
      `affinity: { rebalance: { idleAfter: 30m } }\nbalance: { slowStart: 30s, maxLoadFactor: 1.25 }\nbackends:\n  - { id: a, url: "http://127.0.0.1:3001", drain: { deadline: 10m } }\n  - { id: b, url: "http://127.0.0.1:3002", drain: true }\n`,
      'f.yaml',
      {},
    );
    expect(config.affinity.rebalance).toEqual({ idleAfter: 1_800_000, maxMovesPerSecond: 50 });
    expect(config.balance).toEqual({ slowStart: 30_000, maxLoadFactor: 1.25 });
    expect(config.backends.map((b) => [b.drain, b.drainDeadline])).toEqual([
      [true, 600_000],
      [true, null],
    ]);
  });

  it('warns when pins would be forgotten before their clients count as idle (sessionTtl < idleAfter, ip/header)', async () => {
    const { parseConfigWithWarnings } = await import('../src/config/load.js');
    const warnings = (text: string) => parseConfigWithWarnings(text, 'f.yaml', {}).warnings;
    expect(warnings(`affinity:\n  by: ip\n  sessionTtl: 10m\n  rebalance: { idleAfter: 30m }\n${MINIMAL}`)).toEqual([
      expect.objectContaining({ line: 3, path: 'affinity.sessionTtl', message: expect.stringMatching(/^is shorter than affinity\.rebalance\.idleAfter/) }),
    ]);
    expect(warnings(`affinity:\n  by: ip\n  sessionTtl: 30m\n  rebalance: { idleAfter: 30m }\n${MINIMAL}`)).toEqual([]);
    // Cookie mode keeps no pins to forget.
    expect(warnings(`affinity:\n  by: cookie\n  sessionTtl: 10m\n  rebalance: { idleAfter: 30m }\n${MINIMAL}`)).toEqual([]);
  });

  it('refuses impossible values with file:line, key and what was expected', () => {
    const cases: [string, number, string, RegExp][] = [
      [`affinity:\n  rebalance: { idleAfter: 500ms }\n${MINIMAL}`, 2, 'affinity.rebalance.idleAfter', /must be at least 1s/],
      [`affinity:\n  rebalance: { maxMovesPerSecond: 10 }\n${MINIMAL}`, 2, 'affinity.rebalance.idleAfter', /expected a duration/],
      [`affinity:\n  rebalance: { idleAfter: 1m, maxMovesPerSecond: 0 }\n${MINIMAL}`, 2, 'affinity.rebalance.maxMovesPerSecond', /above 0/],
      [`balance:\n  maxLoadFactor: 1\n${MINIMAL}`, 2, 'balance.maxLoadFactor', /above 1/],
      [`balance:\n  maxLoadFactor: 0.5\n${MINIMAL}`, 2, 'balance.maxLoadFactor', /above 1/],
      [`balance:\n  slowStart: fast\n${MINIMAL}`, 2, 'balance.slowStart', /expected a duration/],
      ['backends:\n  - { id: a, url: "http://127.0.0.1:3001", drain: { deadline: 500ms } }\n', 2, 'backends[0].drain', /deadline: must be at least 1s/],
      ['backends:\n  - { id: a, url: "http://127.0.0.1:3001", drain: {} }\n', 2, 'backends[0].drain', /deadline/],
      ['backends:\n  - { id: a, url: "http://127.0.0.1:3001", drain: soon }\n', 2, 'backends[0].drain', /true, false or \{ deadline: <duration> \}/],
      ['backends:\n  - { id: a, url: "http://127.0.0.1:3001", drain: { deadline: 1m, now: true } }\n', 2, 'backends[0].drain.now', /unknown key "now"/],
    ];
    for (const [text, line, path, message] of cases) {
      const issues = issuesOf(text);
      expect(issues, text).toHaveLength(1);
      expect(issues[0], text).toMatchObject({ file: 'f.yaml', line, path });
      expect(issues[0]!.message, text).toMatch(message);
    }
  });
});
