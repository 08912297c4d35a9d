import { describe, expect, it } from 'vitest';
import { backendsYaml, startBackends } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startCli, type CliProxy } from './support/cli.js';

const cleanup = useCleanup();

const CLIENTS = 60;
const address = (i: number) => `127.0.12.${i + 2}`;

/** Each client sends `times` requests, each on a new connection, so the workers take turns serving it. */
async function servedBy(port: number, times: number, clients = CLIENTS): Promise<string[][]> {
  const result: string[][] = [];
  for (let i = 0; i < clients; i++) {
    const seen: string[] = [];
    for (let r = 0; r < times; r++) {
      const res = await request(port, { localAddress: address(i) });
      expect(res.status).toBe(200);
      seen.push(res.headers['x-backend'] as string);
    }
    result.push(seen);
  }
  return result;
}

function workerPids(cli: CliProxy): Set<unknown> {
  return new Set(cli.logs.filter((l) => l.msg === 'request').map((l) => l.pid));
}

/** The primary answers first; a test about two workers starts once both have served a request. */
async function bothWorkersServing(cli: CliProxy): Promise<void> {
  await waitFor(async () => {
    await request(cli.port, { localAddress: '127.0.13.1' });
    return workerPids(cli).size === 2;
  }, 15_000, 'both workers to serve');
}

describe('workers: 2', () => {
  it('answer the same clients with the same pins, also after a backend dies, and drain reaches every worker', async () => {
    const backends = cleanup.add(await startBackends(3));
    const cli = cleanup.add(await startCli(() => `workers: 2\nlog: { level: info, access: true }\naffinity: { by: ip }\nhealthCheck: { interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }\n${backendsYaml(backends)}\n`));
    await bothWorkersServing(cli);
    const before = await servedBy(cli.port, 4);
    for (const seen of before) expect(new Set(seen).size).toBe(1);
    expect(workerPids(cli).size).toBe(2);

    const victim = backends[0]!;
    await victim.close();
    const after = await servedBy(cli.port, 4);
    for (let i = 0; i < CLIENTS; i++) {
      expect(new Set(after[i]).size, `client ${i} served by ${after[i]!.join(',')}`).toBe(1);
      if (before[i]![0] === victim.id) expect(after[i]![0]).not.toBe(victim.id);
      else expect(after[i]![0]).toBe(before[i]![0]);
    }

    const auth = await request(cli.adminPort, { path: `/backends/${backends[1]!.id}/drain`, method: 'POST' });
    expect(auth.status).toBe(200);
    const fresh = await waitFor(() => servedBy(cli.port, 2, 20), 10_000, 'the first 20 clients to be served twice after the drain');
    // new clients (never seen) avoid the drained backend on both workers
    const newcomers: string[] = [];
    for (let i = 100; i < 140; i++) newcomers.push((await request(cli.port, { localAddress: address(i) })).headers['x-backend'] as string);
    expect(newcomers).not.toContain(backends[1]!.id);
    // its pinned clients stay
    for (let i = 0; i < 20; i++) if (before[i]![0] === backends[1]!.id) expect(fresh[i]![0]).toBe(backends[1]!.id);
  });

  it('a drain deadline set on the admin port reaches every worker: its clients move on both at the deadline, then it is drained', async () => {
    const backends = cleanup.add(await startBackends(3));
    const cli = cleanup.add(
      await startCli(
        () =>
          `workers: 2\nlog: { level: info, access: true }\naffinity: { by: ip, rebalance: { idleAfter: 30s } }\nhealthCheck: { interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }\n${backendsYaml(backends)}\n`,
      ),
    );
    await bothWorkersServing(cli);
    const before = await servedBy(cli.port, 2, 30);
    const onFirst = before.map((seen, i) => (seen[0] === backends[0]!.id ? i : -1)).filter((i) => i >= 0);
    expect(onFirst.length).toBeGreaterThan(2);
    const drain = await request(cli.adminPort, { path: `/backends/${backends[0]!.id}/drain?deadline=3s`, method: 'POST' });
    expect(drain.status).toBe(200);
    expect(JSON.parse(drain.body)).toMatchObject({ state: 'draining', drained: false });
    // Until the deadline its clients stay, on both workers (they are not idle for 30s, so rebalance leaves them be).
    const early = await servedBy(cli.port, 2, 30);
    for (const i of onFirst) expect(early[i]).toEqual([backends[0]!.id, backends[0]!.id]);
    // After it, both workers send them elsewhere, each to the same backend.
    const moved = await waitFor(async () => {
      const now = await servedBy(cli.port, 2, 30);
      return onFirst.every((i) => !now[i]!.includes(backends[0]!.id)) ? now : null;
    }, 15_000, 'the drained backend\'s clients to move on both workers');
    for (const i of onFirst) expect(new Set(moved[i]).size).toBe(1);
    await waitFor(async () => JSON.parse((await request(cli.adminPort, { path: `/backends/${backends[0]!.id}` })).body).drained === true, 15_000, 'drained');
  });

  it('replaces a crashed worker, which then knows every pin', async () => {
    const backends = cleanup.add(await startBackends(3));
    const cli = cleanup.add(await startCli(() => `workers: 2\nlog: { level: info, access: true }\naffinity: { by: ip }\nhealthCheck: { interval: 200ms, timeout: 200ms, rise: 1, fall: 2 }\n${backendsYaml(backends)}\n`));
    await bothWorkersServing(cli);
    const before = await servedBy(cli.port, 2);
    const pids = [...workerPids(cli)] as number[];
    process.kill(pids[0]!, 'SIGKILL');
    await waitFor(() => cli.logs.some((l) => l.msg === 'worker exited; starting a replacement'), 10_000, 'replacement');
    await waitFor(async () => {
      expect((await request(cli.port)).status).toBe(200);
      const served = [...workerPids(cli)];
      if (served.length < 3) throw new Error(`only worker pids ${served.join(', ')} have served`);
      return true;
    }, 15_000, 'the new worker to serve');
    const after = await servedBy(cli.port, 4);
    for (let i = 0; i < CLIENTS; i++) expect(after[i]).toEqual(Array(4).fill(before[i]![0]));
  });
});

describe('workers: 2 in cookie mode without a configured secret', () => {
  it('share one generated secret, so a cookie set by one worker is honoured by the other', async () => {
    const backends = cleanup.add(await startBackends(3));
    const cli = cleanup.add(await startCli(() => `workers: 2\nlog: { level: info, access: true }\naffinity: { by: cookie }\n${backendsYaml(backends)}\n`));
    const { cookiePair } = await import('./support/client.js');
    // Both workers must be serving, or the cookies below would never cross from one to the other.
    await bothWorkersServing(cli);
    const servedBefore = cli.logs.filter((l) => l.msg === 'request').length;
    for (let i = 0; i < 10; i++) {
      const first = await request(cli.port);
      const cookie = cookiePair(first.headers)!;
      for (let r = 0; r < 4; r++) {
        // each request on a new connection: the workers take turns
        const again = await request(cli.port, { headers: { cookie } });
        expect(again.headers['x-backend']).toBe(first.headers['x-backend']);
        expect(again.headers['set-cookie']).toBeUndefined();
      }
    }
    // the checked requests themselves were spread over both workers
    const checked = cli.logs.filter((l) => l.msg === 'request').slice(servedBefore);
    expect(new Set(checked.map((l) => l.pid)).size).toBe(2);
  });
});

describe('workers: 2 with workerBalance: kernel', () => {
  it('serves with the same pins whichever worker accepts the connection', async () => {
    const backends = cleanup.add(await startBackends(3));
    const cli = cleanup.add(await startCli(() => `workers: 2\nworkerBalance: kernel\nlog: { level: info, access: true }\naffinity: { by: ip }\n${backendsYaml(backends)}\n`));
    await waitFor(async () => (await request(cli.port)).status === 200, 15_000, 'a worker to serve');
    const seen = await servedBy(cli.port, 3, 20);
    for (const backendsSeen of seen) expect(new Set(backendsSeen).size).toBe(1);
    expect(new Set(seen.map((s) => s[0])).size).toBeGreaterThan(1);
  });
});
