import { describe, expect, it } from 'vitest';
import type { ServerResponse } from 'node:http';
import { answerWithId, backendsYaml, startBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { startCli } from './support/cli.js';
import { request, waitFor } from './support/client.js';
import { RawClient } from '../bench/raw-http.js';

const cleanup = useCleanup();

describe("limpet's own limits", () => {
  it('running out of descriptors answers 503 and blames no backend: nothing ejected, served again once descriptors free', async () => {
    const held: ServerResponse[] = [];
    const backend = cleanup.add(
      await startBackend('app-1', (req, res, id) => {
        if (req.url === '/hold') held.push(res);
        else answerWithId(req, res, id);
      }),
    );
    cleanup.add(() => held.forEach((res) => res.destroy()));
    // A descriptor limit a few dozen held requests exhaust: each holds a client and a backend socket.
    const cli = cleanup.add(
      await startCli(
        () => `affinity: { by: ip }\nretries: 0\npassive: { maxFails: 2, window: 60s, cooldown: 60s }\nhealthCheck: { interval: 1h }\n${backendsYaml([backend])}`,
        undefined,
        (file) => ({ command: ['sh', '-c', 'ulimit -n 256 && exec "$@"', 'sh'], config: file }),
      ),
    );
    // Connections accepted while descriptors last, each asked something quick first, so the
    // client side holds its descriptors before the backend side needs more.
    const clients: RawClient[] = [];
    for (let i = 0; i < 150; i++) {
      const client = await RawClient.open(cli.port);
      cleanup.add(() => client.destroy());
      await client.write('GET /ok HTTP/1.1\r\nHost: x\r\n\r\n');
      expect((await client.next()).status).toBe(200);
      clients.push(client);
    }
    // Now each needs a backend connection of its own at once: the later ones find no descriptor.
    await Promise.all(clients.map((client) => client.write('GET /hold HTTP/1.1\r\nHost: x\r\n\r\n')));
    const refused: RawClient[] = [];
    await waitFor(
      () => {
        refused.splice(0, refused.length, ...clients.filter((c) => /^HTTP\/1\.1 503 /.test(c.unread.toString('latin1'))));
        return held.length + refused.length === clients.length || undefined;
      },
      10_000,
      'every request held at the backend or refused',
    );
    expect(refused.length, 'requests refused for want of a descriptor').toBeGreaterThan(0);
    await waitFor(() => cli.logs.some((l) => String(l.msg).startsWith('limpet is out of a resource of its own')) || undefined, 10_000, 'the cause logged');
    for (const client of refused) expect((await client.next()).header('retry-after')).toBe('5');
    // Descriptors come back: the backend was never blamed, so it serves at once.
    for (const res of held.splice(0)) res.end('released\n');
    await waitFor(async () => (await request(cli.port, { path: '/after' }).catch(() => null))?.status === 200 || undefined, 10_000, 'a request served again');
    expect(cli.logs.filter((l) => l.msg === 'backend ejected'), 'ejections').toEqual([]);
    const states = JSON.parse((await request(cli.adminPort, { path: '/backends' })).body) as { id: string; state: string }[];
    expect(states.map((b) => [b.id, b.state])).toEqual([['app-1', 'up']]);
  });
});
