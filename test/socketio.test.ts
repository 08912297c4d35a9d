import { describe, expect, it, vi } from 'vitest';
import { createServer as createTcpServer, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startProxy } from './support/proxy.js';
import {
  clientAddress,
  connectClient,
  countByBackend,
  runSession,
  sessionsByBackend,
  startSocketIoBackends,
  websocketGauge,
  type SessionOutcome,
  type SocketIoBackend,
  type TestClient,
} from './support/socketio.js';
import type { Limpet } from '../src/limpet.js';

// Real socket.io servers (child processes, default settings: long-polling first, then upgrade),
// limpet in process in front of them, real socket.io-client clients.

const cleanup = useCleanup();
/** This test's socket.io servers, proxy and clients, for the helpers below. */
let backends: SocketIoBackend[] = [];
let proxy: Limpet;
let clients: TestClient[] = [];

type Mode = 'cookie' | 'ip';
const CLIENTS = 30;
// Killed backends are refused at once; the generous timeout keeps a busy machine's slow answers from passing for failures.
const FAST_HEALTH = 'healthCheck: { path: /health, interval: 100ms, timeout: 1s, rise: 1, fall: 2 }';

async function setup(mode: Mode): Promise<{ port: number; adminPort: number }> {
  backends = cleanup.add(await startSocketIoBackends(3));
  const affinity = mode === 'cookie' ? 'affinity: { by: cookie, cookie: { secret: socket-io-test-secret } }' : 'affinity: { by: ip }';
  const yaml = [affinity, FAST_HEALTH, 'backends:', ...backends.map((b) => `  - { id: ${b.id}, url: "${b.url}" }`)].join('\n');
  const started = await startProxy(yaml);
  proxy = cleanup.add(started.limpet);
  clients = [];
  cleanup.add(() => clients.forEach((client) => client.close()));
  return { port: started.port, adminPort: started.limpet.adminAddress.port };
}

/** Connects `count` clients the way each mode needs them, and drives each through a full session. */
async function connectAll(
  port: number,
  mode: Mode,
  count: number,
  { withCredentials = mode === 'cookie', reconnection = true, timeoutMs = 8_000 }: { withCredentials?: boolean; reconnection?: boolean; timeoutMs?: number } = {},
): Promise<SessionOutcome[]> {
  const started = Array.from({ length: count }, (_, i) => {
    const client = connectClient(port, i, { withCredentials, reconnection, ...(mode === 'ip' ? { localAddress: clientAddress(i) } : {}) });
    clients.push(client);
    return runSession(client, timeoutMs);
  });
  return Promise.all(started);
}

/**
 * What breaks stickiness, per client: a session whose requests reached more than one backend (or
 * a backend that did not create it), a session without both polling and WebSocket traffic, or echo
 * replies from more than one backend.
 */
async function stickinessProblems(of: readonly TestClient[]): Promise<string[]> {
  const seen = await sessionsByBackend(backends);
  const problems: string[] = [];
  for (const client of of) {
    const sid = client.sessions.at(-1);
    const where = sid === undefined ? undefined : seen.get(sid);
    if (where === undefined || where.length === 0) {
      problems.push(`client ${client.index}: session ${sid} seen nowhere`);
      continue;
    }
    if (where.length !== 1 || !where[0]!.handshake || where[0]!.unknown > 0) {
      problems.push(`client ${client.index}: session ${sid} seen on ${where.map((w) => `${w.backend}(handshake=${w.handshake}, unknown=${w.unknown})`).join(', ')}`);
      continue;
    }
    // At least the namespace CONNECT (POST) and the poll that brought its answer went over polling.
    if (where[0]!.polling < 2 || where[0]!.websocket !== 1) problems.push(`client ${client.index}: polling=${where[0]!.polling} websocket=${where[0]!.websocket}`);
    const ids = new Set(client.replies.map((r) => r.id));
    if (ids.size !== 1 || !ids.has(where[0]!.backend)) problems.push(`client ${client.index}: replies from ${[...ids].join(', ')}, session on ${where[0]!.backend}`);
  }
  return problems;
}

describe('socket.io behind limpet', () => {
  for (const mode of ['cookie', 'ip'] as const) {
    it(`${mode} mode: every client's polling requests and WebSocket reach one backend, with no connect errors`, async () => {
      const { port } = await setup(mode);
      const outcomes = await connectAll(port, mode, CLIENTS);
      expect(outcomes.filter((o) => !o.ok).map((o) => `client ${o.client.index}: ${o.failure}`)).toEqual([]);
      expect(clients.flatMap((c) => c.connectErrors)).toEqual([]);
      expect(await stickinessProblems(clients)).toEqual([]);
      for (const client of clients) {
        expect(client.replies.at(-1)!.transport).toBe('websocket');
      }
      // The clients spread over all three backends.
      expect([...countByBackend(clients).keys()].sort()).toEqual(['app-1', 'app-2', 'app-3']);
    });
  }

  it('fails without stickiness: cookie mode with clients that drop the cookie gets "Session ID unknown"', async () => {
    // The same test through a non-sticky path: each request without the cookie is placed afresh.
    const { port } = await setup('cookie');
    // A session that works takes well under a second here; one whose upgrade probe was lost stays on
    // polling silently, so give up on it after 2 s.
    const outcomes = await connectAll(port, 'cookie', CLIENTS, { withCredentials: false, reconnection: false, timeoutMs: 2_000 });
    const failed = outcomes.filter((o) => !o.ok);
    const problems = await stickinessProblems(clients);
    const seen = await sessionsByBackend(backends);
    const unknown = [...seen.values()].flat().reduce((sum, entry) => sum + entry.unknown, 0);
    const reasons = new Map<string, number>();
    for (const o of failed) reasons.set(o.failure!, (reasons.get(o.failure!) ?? 0) + 1);
    console.log(`non-sticky path: ${failed.length}/${CLIENTS} sessions failed (${[...reasons].map(([r, n]) => `${n}× ${r}`).join(', ')}), ${problems.length} broke stickiness, ${unknown} requests got "Session ID unknown"`);
    expect(failed.length).toBeGreaterThan(CLIENTS / 3);
    expect(problems.length).toBeGreaterThan(CLIENTS / 3);
    expect(unknown).toBeGreaterThan(0);
    expect(clients.flatMap((c) => c.connectErrors).length + clients.flatMap((c) => c.disconnects).length).toBeGreaterThan(0);
  });

  for (const mode of ['cookie', 'ip'] as const) {
    it(`${mode} mode: when a backend dies the proxy closes its clients' tunnels, they reconnect elsewhere, the others are untouched`, async () => {
      const { port } = await setup(mode);
      const outcomes = await connectAll(port, mode, CLIENTS);
      expect(outcomes.filter((o) => !o.ok).map((o) => o.failure)).toEqual([]);
      const home = new Map(clients.map((c) => [c, c.replies.at(-1)!.id]));
      const victim = backends.find((b) => [...home.values()].includes(b.id))!;
      const moved = clients.filter((c) => home.get(c) === victim.id);
      const others = clients.filter((c) => home.get(c) !== victim.id);
      const socketIds = new Map(others.map((c) => [c, c.socket.id]));
      expect(moved.length).toBeGreaterThan(0);

      await victim.kill();
      await waitFor(
        () =>
          Promise.all(
            moved.map(async (c) => {
              if (c.connects < 2 || !c.socket.connected) throw new Error(`client ${c.index}: ${c.connects} connects, connected: ${c.socket.connected}`);
              const reply = await c.echo(1_000);
              if (reply.id === victim.id) throw new Error(`client ${c.index} still answered by ${victim.id}`);
              return reply;
            }),
          ),
        10_000,
        `${moved.length} clients of ${victim.id} to reconnect elsewhere`,
      );
      for (const client of moved) {
        // Why each reconnected: its tunnel closed once, not a ping timeout — either cut as the dead
        // backend's end closed (no close frame: 1006) or closed by the proxy with 1001 when passive
        // detection took the backend out first, whichever happened sooner.
        expect(client.disconnects).toHaveLength(1);
        expect(client.disconnects[0]!.reason).toBe('transport close');
        expect([1001, 1006]).toContain(client.disconnects[0]!.code);
        expect(client.connects).toBe(2);
        await waitFor(() => client.transport() === 'websocket', 5_000, 'the reconnected client to upgrade');
        expect((await client.echo()).transport).toBe('websocket');
      }
      // The new sessions are sticky too (polling and WebSocket on the one new backend).
      const survivors = backends.filter((b) => b !== victim);
      const seen = await sessionsByBackend(survivors);
      for (const client of moved) {
        const where = seen.get(client.sessions.at(-1)!) ?? [];
        expect(where.map((w) => `${w.backend}:${w.handshake}:${w.unknown}`)).toEqual([`${client.replies.at(-1)!.id}:true:0`]);
        // Reconnected as a new session does: long-polling first, then one upgrade to a WebSocket.
        expect(where[0]!.polling).toBeGreaterThanOrEqual(2);
        expect(where[0]!.websocket).toBe(1);
        // An ip client is still known by its address, so the app is told where it came from. (A Node
        // client's cookie jar lives per connection, so in cookie mode it reconnects as a new client,
        // told only when the dead backend was its new nonce's home.)
        if (mode === 'ip') expect(where[0]!.remappedFrom).toBe(victim.id);
        else expect([null, victim.id]).toContain(where[0]!.remappedFrom);
      }
      // Everyone else: same socket, no disconnect, same backend, still on the WebSocket.
      for (const client of others) {
        expect(client.disconnects).toEqual([]);
        expect(client.connects).toBe(1);
        expect(client.socket.id).toBe(socketIds.get(client));
        const reply = await client.echo();
        expect(reply.id).toBe(home.get(client));
        expect(reply.transport).toBe('websocket');
      }
      expect(clients.flatMap((c) => c.connectErrors)).toEqual([]);
    });
  }

  it('counts open WebSockets per backend, keeps them open on drain and reload, closes them with 1001 on shutdown', async () => {
    const { port, adminPort } = await setup('cookie');
    const outcomes = await connectAll(port, 'cookie', 15);
    expect(outcomes.filter((o) => !o.ok).map((o) => o.failure)).toEqual([]);
    const expected = () => Object.fromEntries(backends.map((b) => [b.id, countByBackend(clients).get(b.id) ?? 0]));
    const gauge = async () => Object.fromEntries(await websocketGauge(adminPort));
    expect(await gauge()).toEqual(expected());

    // Clients that leave take their tunnels with them.
    for (const client of clients.splice(0, 5)) client.close();
    await waitFor(async () => JSON.stringify(await gauge()) === JSON.stringify(expected()), 5_000, 'the gauge to drop');
    expect(Object.values(await gauge()).reduce((a, b) => a + b, 0)).toBe(10);

    const home = new Map(clients.map((c) => [c, c.replies.at(-1)!.id]));
    /** Every client answers over its same WebSocket, from its same backend, and nobody disconnected. */
    const untouched = async () => {
      for (const client of clients) {
        const reply = await client.echo();
        expect(reply.id).toBe(home.get(client));
        expect(reply.transport).toBe('websocket');
        expect(client.disconnects).toEqual([]);
        expect(client.connects).toBe(1);
      }
      expect(await gauge()).toEqual(expected());
    };

    // Drain: the backend keeps its existing clients, WebSockets included.
    const drained = [...home.values()][0]!;
    proxy.setDraining(drained, true);
    await untouched();
    proxy.setDraining(drained, false);

    // Reload with the very same config, and with an equal copy of it: nothing closes.
    proxy.reload(proxy.currentConfig);
    await untouched();
    proxy.reload(structuredClone(proxy.currentConfig));
    await untouched();

    // Shutdown: every client gets WebSocket close 1001 (going away), and the tunnels end because the
    // clients and backends answer the close, not at the cut-off for peers that do not: with timers
    // held, a cut-off timer never fires, so close() can only finish on the peers' answers.
    for (const client of clients) client.socket.io.reconnection(false);
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      let closed = false;
      void proxy.close().then(() => (closed = true));
      await waitFor(() => closed, 10_000, 'close() to finish while no timer can fire');
    } finally {
      // Let what the held timers were to do happen (a failed test's close then ends too).
      vi.runOnlyPendingTimers();
      vi.useRealTimers();
    }
    await waitFor(() => clients.every((c) => c.disconnects.length === 1), 5_000, 'every client to see the close');
    expect(clients.map((c) => c.disconnects[0])).toEqual(clients.map(() => ({ reason: 'transport close', code: 1001 })));
  });

  it('answers an upgrade the backend accepts but never answers with 504 once timeouts.response has passed since connecting, not connect + response', async () => {
    const held: Socket[] = [];
    const upgradesSeen: string[] = [];
    const silent = createTcpServer((socket) => {
      held.push(socket.on('error', () => {}));
      socket.on('data', (chunk: Buffer) => {
        const line = chunk.toString('latin1').split('\r\n')[0]!;
        if (line.startsWith('GET /socket.io/')) upgradesSeen.push(line);
        // Health checks pass, so none is left waiting on a held timer.
        if (line.startsWith('GET /health')) socket.write('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
      });
    });
    cleanup.add(() => {
      for (const socket of held) socket.destroy();
      silent.close();
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const silentPort = (silent.address() as { port: number }).port;
    const started = await startProxy(`affinity: { by: ip }\nhealthCheck: { interval: 1h }\ntimeouts: { connect: 3s, response: 300ms }\nbackends:\n  - { id: silent, url: "http://127.0.0.1:${silentPort}" }`);
    cleanup.add(started.limpet);
    // With timers held, the proxy's clocks move only when the test moves them: the 504 must come
    // when they have moved by timeouts.response from the moment the backend took the connection.
    vi.useFakeTimers({ toFake: ['setTimeout'] });
    try {
      /** What the client got: a status, 'upgraded' or the error; null while waiting. */
      let answer: number | string | null = null;
      const req = httpRequest({
        host: '127.0.0.1',
        port: started.port,
        path: '/socket.io/?EIO=4&transport=websocket',
        headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
        agent: false,
      });
      req.on('response', (res) => (answer = res.statusCode ?? 'no status'));
      req.on('upgrade', () => (answer = 'upgraded'));
      req.on('error', (error) => (answer = error.message));
      req.end();
      cleanup.add(() => req.destroy());
      await waitFor(() => upgradesSeen.length === 1, 10_000, 'the upgrade request to reach the backend');
      vi.advanceTimersByTime(299);
      // A request through the proxy and back: an answer written by now would have arrived with it.
      expect((await request(started.limpet.adminAddress.port, { path: '/healthz' })).status).toBe(200);
      expect(answer).toBeNull();
      vi.advanceTimersByTime(1);
      await waitFor(() => answer !== null, 10_000, 'the proxy to answer the upgrade');
      expect(answer).toBe(504);
    } finally {
      // Let what the held timers were to do happen (a failed test's close then ends too).
      vi.runOnlyPendingTimers();
      vi.useRealTimers();
    }
    // The backend got the upgrade request once: a timeout after sending is not retried.
    expect(upgradesSeen).toEqual(['GET /socket.io/?EIO=4&transport=websocket HTTP/1.1']);
  });
});
