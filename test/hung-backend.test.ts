import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { startBackend, type BackendHandler } from './support/backends.js';
import { request, waitFor, type TestResponse } from './support/client.js';
import { startProxy } from './support/proxy.js';
import { startRawBackend } from './support/raw-backend.js';
import type { Limpet } from '../src/limpet.js';

const FREEZABLE_BACKEND = new URL('./support/freezable-backend.mjs', import.meta.url).pathname;

let proxy: Limpet | null = null;
const children: ChildProcess[] = [];
const cleanups: (() => Promise<void>)[] = [];

afterEach(async () => {
  await proxy?.close();
  proxy = null;
  // SIGKILL ends a stopped process too.
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const cleanup of cleanups.splice(0)) await cleanup();
});

/** A backend in its own process (support/freezable-backend.mjs), with the requests it holds. */
async function startFreezable(id: string): Promise<{ id: string; url: string; child: ChildProcess; held: string[] }> {
  const child = spawn(process.execPath, [FREEZABLE_BACKEND, id], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  const held: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    child.once('exit', (code, signal) => reject(new Error(`backend ${id} exited (${code ?? signal}) before listening`)));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('listening ')) resolve(Number(line.slice(10)));
      else if (line.startsWith('held ')) held.push(line.slice(5));
    });
  });
  return { id, url: `http://127.0.0.1:${port}`, child, held };
}

/** Answers like support/freezable-backend.mjs: its id, and the remap notice it was sent. */
const answerWithRemapNotice: BackendHandler = (req, res, id) => {
  const from = req.headers['x-limpet-remapped-from'];
  res.writeHead(200, { 'x-backend': id, ...(typeof from === 'string' ? { 'x-remapped-from': from } : {}) }).end(`${id}\n`);
};

/**
 * A backend that holds `/hold` requests unanswered, resets the connection of `/reset` requests
 * (a failure passive detection counts) and answers anything else with its id on a connection it
 * then closes, so every request after the first ones comes on a fresh connection.
 */
async function startResettingBackend(id: string): Promise<{ id: string; url: string; held: () => number }> {
  let held = 0;
  const backend = await startRawBackend((socket, head) => {
    const path = head.split(' ', 2)[1];
    if (path === '/hold') held++;
    else if (path === '/reset') socket.resetAndDestroy();
    else socket.end(`HTTP/1.1 200 OK\r\nx-backend: ${id}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`);
  });
  cleanups.push(backend.close);
  return { id, url: backend.url, held: () => held };
}

/** limpet in front of `victim` and `survivor`, with `settings` (YAML lines). */
async function proxyInFront(victim: { id: string; url: string }, survivor: { id: string; url: string }, settings: string[]): Promise<{ limpet: Limpet; port: number }> {
  const started = await startProxy(
    [...settings, 'affinity: { by: ip }', 'backends:', `  - { id: ${victim.id}, url: "${victim.url}" }`, `  - { id: ${survivor.id}, url: "${survivor.url}" }`].join('\n'),
  );
  proxy = started.limpet;
  return started;
}

/** The first `count` client addresses the proxy pins to `backendId`. */
async function clientsPinnedTo(port: number, backendId: string, count: number): Promise<string[]> {
  const pinned: string[] = [];
  for (let i = 0; pinned.length < count; i++) {
    const res = await request(port, { localAddress: sourceAddress(i) });
    expect(res.status).toBe(200);
    if (res.headers['x-backend'] === backendId) pinned.push(sourceAddress(i));
  }
  return pinned;
}

function sourceAddress(i: number): string {
  return `127.0.${Math.floor(i / 250) + 1}.${(i % 250) + 2}`;
}

describe('a backend that stops answering (SIGSTOP) under load', () => {
  it('sends its unanswered bodiless GETs to the client\'s next backend once checks mark it down, with the remap notice, while a POST waits for its 504', async () => {
    const victim = await startFreezable('app-1');
    const survivor = await startFreezable('app-2');
    const { limpet, port } = await proxyInFront(victim, survivor, [
      'healthCheck: { interval: 100ms, timeout: 100ms, fall: 2 }',
      // Moving a request is no failure of the backend: were it counted, these would eject it.
      'passive: { maxFails: 3, window: 1m }',
      'timeouts: { response: 10s }',
    ]);

    const pinned = await clientsPinnedTo(port, victim.id, 14);
    const heldClients = pinned.slice(0, 10);
    const postClient = pinned[10]!;
    const loadClients = pinned.slice(11);

    // In flight at the freeze: GETs and a POST the backend has read and not answered.
    const gets = heldClients.map((localAddress) => request(port, { path: `/hold/${victim.id}`, localAddress }));
    const post = request(port, { method: 'POST', path: `/hold/${victim.id}`, body: 'payload', localAddress: postClient });
    await waitFor(() => victim.held.length === heldClients.length + 1, 10_000, 'the backend to hold every request');
    victim.child.kill('SIGSTOP');

    // Load from the frozen backend's clients, before and after checks mark it down.
    const load: TestResponse[] = [];
    let markedDown = false;
    await Promise.all(
      loadClients.map(async (localAddress) => {
        for (let after = 0; after < 5; ) {
          load.push(await request(port, { localAddress }));
          if (markedDown) after++;
          else markedDown = limpet.backend(victim.id)!.status === 'down';
        }
      }),
    );

    const answered = await Promise.all(gets);
    expect(answered.map((res) => res.status)).toEqual(heldClients.map(() => 200));
    expect(answered.map((res) => res.headers['x-backend'])).toEqual(heldClients.map(() => survivor.id));
    expect(answered.map((res) => res.headers['x-remapped-from'])).toEqual(heldClients.map(() => victim.id));
    expect(load.filter((res) => res.status !== 200).map((res) => res.status)).toEqual([]);
    expect(survivor.held).toEqual([]);
    // Down through its checks, not ejected for the requests moved off it.
    expect(limpet.backend(victim.id)!.ejected).toBe(false);

    // A request with a body may have had effects: it is never sent twice, and waits for its own timeout.
    expect((await post).status).toBe(504);
  });

  it('sends its unanswered bodiless GETs to the client\'s next backend once passive detection ejects it', async () => {
    const victim = await startResettingBackend('app-1');
    const survivor = await startBackend('app-2', answerWithRemapNotice);
    cleanups.push(() => survivor.close());
    const { limpet, port } = await proxyInFront(victim, survivor, ['healthCheck: { interval: 1h }', 'passive: { maxFails: 3, window: 1m }', 'timeouts: { response: 10s }']);
    const pinned = await clientsPinnedTo(port, victim.id, 8);

    const gets = pinned.slice(0, 5).map((localAddress) => request(port, { path: '/hold', localAddress }));
    await waitFor(() => victim.held() === 5, 10_000, 'the backend to hold every GET');
    // Requests with a body are never sent twice: each reset is a 502 and a failure counted.
    for (const localAddress of pinned.slice(5)) {
      expect(limpet.backend(victim.id)!.ejected).toBe(false);
      expect((await request(port, { method: 'POST', path: '/reset', body: 'payload', localAddress })).status).toBe(502);
    }
    expect(limpet.backend(victim.id)!.ejected).toBe(true);

    const answered = await Promise.all(gets);
    expect(answered.map((res) => res.status)).toEqual([200, 200, 200, 200, 200]);
    expect(answered.map((res) => res.headers['x-backend'])).toEqual(answered.map(() => survivor.id));
    expect(answered.map((res) => res.headers['x-remapped-from'])).toEqual(answered.map(() => victim.id));
    expect(survivor.seen.filter((seen) => seen.url === '/hold')).toHaveLength(5);
  });
});
