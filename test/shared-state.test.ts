import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig } from '../src/config/load.js';
import type { Limpet } from '../src/limpet.js';
import { decodeEvent, drainMessage, pinsMessage, forgottenMessage } from '../src/state/shared-protocol.js';
import { answerWithId, backendsYaml, startBackend, type BackendHandler } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startCli } from './support/cli.js';
import { commandFrom } from './support/debian-packages.js';
import { parseExposition, sample } from './support/exposition.js';
import { startProxy, type LogCapture } from './support/proxy.js';
import { startRedis, startSentinel } from './support/redis.js';

/**
 * Replicas as one: two real proxies sharing pins and runtime drains through a real redis-server
 * (Debian's), over plain TCP with a password, over TLS, and through Sentinel with a failover.
 */

const cleanup = useCleanup();

const HEALTH = 'healthCheck: { interval: 100ms, timeout: 300ms, rise: 1, fall: 1 }';
const address = (i: number) => `127.0.${Math.floor(i / 250) + 20}.${(i % 250) + 2}`;

/** Backends whose health can be failed (503) per id. */
function switchable() {
  const sick = new Set<string>();
  const handler: BackendHandler = (req, res, id) => {
    if (req.url === '/health') return void res.writeHead(sick.has(id) ? 503 : 200).end();
    answerWithId(req, res, id);
  };
  return { sick, handler };
}

async function backendOf(proxy: { port: number }, client: string): Promise<string> {
  const res = await request(proxy.port, { localAddress: client });
  expect(res.status).toBe(200);
  return res.headers['x-backend'] as string;
}

async function metric(limpet: Limpet, name: string): Promise<number> {
  const res = await request(limpet.adminAddress.port, { path: '/metrics' });
  return sample(parseExposition(res.body), name, {});
}

const said = (logs: LogCapture, msg: string) => logs.lines.filter((line) => line.msg === msg).length;

describe('two replicas sharing Redis', () => {
  it('send every address client to the same backend after a failover, a recovery with stay, a drain made on the other, and a restart', async () => {
    const redis = cleanup.add(await startRedis({ password: 'pa ss:word' }));
    const health = switchable();
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, health.handler))));
    const yaml = `affinity: { by: ip, onRecovery: stay }\n${HEALTH}\nsharedState: { redis: "${redis.url}", keyPrefix: "t1:" }\n${backendsYaml(backends)}`;
    const a = await startProxy(yaml, 'info');
    cleanup.add(a.limpet);
    let b = await startProxy(yaml, 'info');
    cleanup.add(() => b.limpet.close());
    const clients = Array.from({ length: 90 }, (_, i) => address(i));

    // Steady state: through either replica, one backend per client.
    const pinned = new Map<string, string>();
    for (const client of clients) pinned.set(client, await backendOf(a, client));
    for (const client of clients) expect(await backendOf(b, client)).toBe(pinned.get(client));

    // app-1 fails; its clients go through A only, which moves them.
    health.sick.add('app-1');
    await waitFor(() => !a.limpet.backend('app-1')!.available && !b.limpet.backend('app-1')!.available, 10_000, 'app-1 down on both');
    const moved = new Map<string, string>();
    for (const client of clients.filter((c) => pinned.get(c) === 'app-1')) moved.set(client, await backendOf(a, client));
    expect(moved.size).toBeGreaterThan(5);
    for (const [client, now] of moved) expect(now).not.toBe('app-1');

    // It heals; with stay, none goes back — also through B, which never saw those requests.
    health.sick.delete('app-1');
    await waitFor(() => a.limpet.backend('app-1')!.available && b.limpet.backend('app-1')!.available, 10_000, 'app-1 up on both');
    await waitFor(async () => {
      for (const [client, now] of moved) if ((await backendOf(b, client)) !== now) return false;
      return true;
    }, 5_000, 'B to know where A moved them');
    for (const [client, now] of moved) expect(await backendOf(a, client)).toBe(now);

    // A drain made on A's admin port reaches B within a second: B sends no new client there.
    const drained = await request(a.limpet.adminAddress.port, { path: '/backends/app-2/drain?deadline=1h', method: 'POST' });
    expect(drained.status).toBe(200);
    await waitFor(() => b.limpet.backend('app-2')!.draining, 1_500, 'B to see the drain');
    expect(b.limpet.backend('app-2')!.drainDeadline).toBe(a.limpet.backend('app-2')!.drainDeadline);
    for (let i = 200; i < 240; i++) expect(await backendOf(b, address(i))).not.toBe('app-2');

    // B restarts: its pins and the drain come back from Redis.
    await b.limpet.close();
    b = await startProxy(yaml, 'info');
    expect(b.limpet.backend('app-2')!.draining).toBe(true);
    for (const [client, now] of moved) expect(await backendOf(b, client)).toBe(now);
    for (const client of clients.filter((c) => !moved.has(c))) expect(await backendOf(b, client)).toBe(pinned.get(client));
    expect(said(b.logs, 'shared state loaded')).toBe(1);
    expect(await metric(b.limpet, 'limpet_shared_state_up')).toBe(1);

    // Undrain on B reaches A, and survives both restarting.
    expect((await request(b.limpet.adminAddress.port, { path: '/backends/app-2/undrain', method: 'POST' })).status).toBe(200);
    await waitFor(() => !a.limpet.backend('app-2')!.draining, 1_500, 'A to see the undrain');
  });

  it('keeps serving through a Redis outage, says so once, and resyncs when Redis is back (even empty)', async () => {
    const redis = cleanup.add(await startRedis());
    const health = switchable();
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, health.handler))));
    const yaml = `affinity: { by: ip }\n${HEALTH}\nsharedState: { redis: "${redis.url}" }\n${backendsYaml(backends)}`;
    const a = await startProxy(yaml, 'info');
    const b = await startProxy(yaml, 'info');
    cleanup.add([b.limpet, a.limpet]);
    const clients = Array.from({ length: 60 }, (_, i) => address(i));
    const pinned = new Map<string, string>();
    for (const client of clients) pinned.set(client, await backendOf(a, client));

    await redis.stop();
    await waitFor(async () => (await metric(a.limpet, 'limpet_shared_state_up')) === 0 && (await metric(b.limpet, 'limpet_shared_state_up')) === 0, 10_000, 'both to see Redis gone');
    // Requests go on, from memory and hashing; a failover during the outage still moves clients alike.
    health.sick.add('app-3');
    await waitFor(() => !a.limpet.backend('app-3')!.available && !b.limpet.backend('app-3')!.available, 10_000, 'app-3 down');
    let errors = 0;
    const during = new Map<string, string>();
    for (const client of clients) {
      const res = await request(a.port, { localAddress: client });
      if (res.status !== 200) errors++;
      during.set(client, res.headers['x-backend'] as string);
      if ((await backendOf(b, client)) !== during.get(client)) errors++;
    }
    expect(errors).toBe(0);
    expect(said(a.logs, 'shared state unreachable; serving from local pins and hashing until it is back')).toBe(1);
    expect(await metric(a.limpet, 'limpet_shared_state_outages_total')).toBe(1);

    // Redis returns empty (no persistence): both write what they know and read it back.
    await redis.start();
    await waitFor(async () => (await metric(a.limpet, 'limpet_shared_state_up')) === 1 && (await metric(b.limpet, 'limpet_shared_state_up')) === 1, 10_000, 'both to see Redis back');
    expect(said(a.logs, 'shared state reachable again; synced')).toBe(1);
    await waitFor(async () => Number(await redis.command('DBSIZE')) >= clients.length, 5_000, 'the pins written back');
    // A third replica started now learns every pin, the ones moved during the outage included.
    const c = await startProxy(yaml, 'info');
    cleanup.add(c.limpet);
    health.sick.delete('app-3');
    await waitFor(() => c.limpet.backend('app-3')!.available, 10_000, 'app-3 up on the third');
    for (const client of clients) expect(await backendOf(c, client)).toBe(during.get(client));
  });

  it('makes no Redis round trip for requests of clients a replica knows', async () => {
    const redis = cleanup.add(await startRedis());
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2'].map((id) => startBackend(id))));
    const a = await startProxy(`affinity: { by: ip }\nsharedState: { redis: "${redis.url}" }\n${backendsYaml(backends)}`);
    cleanup.add(a.limpet);
    const clients = Array.from({ length: 50 }, (_, i) => address(i));
    for (const client of clients) await backendOf(a, client);
    await waitFor(async () => Number(await redis.command('DBSIZE')) === clients.length, 5_000, 'the pins written');
    const commands = async () => Number(/total_commands_processed:(\d+)/.exec(String(await redis.command('INFO', 'stats')))?.[1]);
    const before = await commands();
    const started = Date.now();
    for (let round = 0; round < 4; round++) for (const client of clients) await backendOf(a, client);
    const seconds = (Date.now() - started) / 1000;
    // 200 requests: what Redis saw is the once-a-second heartbeat (and our own INFO), nothing per request.
    const seen = (await commands()) - before - 1;
    expect(seen).toBeLessThanOrEqual(Math.ceil(seconds) + 2);
  });

  it('gives shared pins the sessionTtl in force, also after a reload changes it', async () => {
    const redis = cleanup.add(await startRedis());
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2'].map((id) => startBackend(id))));
    const yaml = (ttl: string) => `affinity: { by: ip, sessionTtl: ${ttl} }\nsharedState: { redis: "${redis.url}" }\n${backendsYaml(backends)}`;
    const a = await startProxy(yaml('30m'));
    cleanup.add(a.limpet);
    const ttlOf = async (client: string) => Number(await redis.command('PTTL', `limpet:pin:${client}`));
    await backendOf(a, address(0));
    await waitFor(async () => (await ttlOf(address(0))) > 0, 5_000, 'the first pin written');
    expect(await ttlOf(address(0))).toBeLessThanOrEqual(30 * 60_000);

    a.limpet.reload(parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n${yaml('2h')}`, 'test.yaml', {}));
    await backendOf(a, address(1));
    await waitFor(async () => (await ttlOf(address(1))) > 0, 5_000, 'the pin written after the reload');
    expect(await ttlOf(address(1))).toBeGreaterThan(60 * 60_000);
  });
});

describe('Redis connections', () => {
  it('speaks TLS (rediss://) with a private CA and a password', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'limpet-redis-tls-'));
    const openssl = commandFrom('openssl');
    const file = (name: string) => join(dir, name);
    execFileSync(openssl, ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '1', '-subj', '/CN=limpet test CA'], { stdio: 'ignore' });
    execFileSync(openssl, ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', file('redis.key'), '-out', file('redis.csr'), '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' });
    const ext = file('ext.cnf');
    writeFileSync(ext, 'subjectAltName=IP:127.0.0.1\n');
    execFileSync(openssl, ['x509', '-req', '-in', file('redis.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file('redis.pem'), '-days', '1', '-extfile', ext], { stdio: 'ignore' });
    const redis = cleanup.add(await startRedis({ password: 's3cret', tls: { cert: file('redis.pem'), key: file('redis.key'), ca: file('ca.pem') } }));
    expect(redis.url.startsWith('rediss://')).toBe(true);
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2'].map((id) => startBackend(id))));
    const yaml = `affinity: { by: ip }\nsharedState: { redis: "${redis.url}", tlsCa: "${file('ca.pem')}" }\n${backendsYaml(backends)}`;
    const a = await startProxy(yaml, 'info');
    const b = await startProxy(yaml, 'info');
    cleanup.add([b.limpet, a.limpet]);
    expect(await metric(a.limpet, 'limpet_shared_state_up')).toBe(1);
    const drained = await request(a.limpet.adminAddress.port, { path: '/backends/app-1/drain', method: 'POST' });
    expect(drained.status).toBe(200);
    await waitFor(() => b.limpet.backend('app-1')!.draining, 2_000, 'B to see the drain over TLS');
  });

  it('finds the master through Sentinel and follows a failover to the promoted replica', async () => {
    const master = cleanup.add(await startRedis());
    const replica = cleanup.add(await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port)] }));
    const sentinel = cleanup.add(await startSentinel(master.port));
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id))));
    const yaml = `affinity: { by: ip }\nsharedState: { redis: "redis://sentinel-master", sentinel: { name: mymaster, nodes: ["127.0.0.1:${sentinel.port}"] } }\n${backendsYaml(backends)}`;
    const a = await startProxy(yaml, 'info');
    const b = await startProxy(yaml, 'info');
    cleanup.add([b.limpet, a.limpet]);
    expect(await metric(a.limpet, 'limpet_shared_state_up')).toBe(1);
    expect((await request(a.limpet.adminAddress.port, { path: '/backends/app-1/drain', method: 'POST' })).status).toBe(200);
    await waitFor(() => b.limpet.backend('app-1')!.draining, 2_000, 'B to see the first drain');
    await waitFor(async () => String(await replica.command('HGETALL', 'limpet:drains')).includes('app-1'), 5_000, 'the drain replicated');

    await master.stop();
    await waitFor(async () => String(await replica.command('ROLE')).startsWith('master'), 20_000, 'the replica promoted');
    // Through the new master: a drain made on B reaches A.
    await waitFor(async () => (await request(b.limpet.adminAddress.port, { path: '/backends/app-2/drain', method: 'POST' })).status === 200 && a.limpet.backend('app-2')!.draining, 20_000, 'a drain through the new master');
    expect(await metric(a.limpet, 'limpet_shared_state_up')).toBe(1);
  });

  it('with workers, the primary holds the connection and both workers route a client another replica moved', async () => {
    const redis = cleanup.add(await startRedis());
    const health = switchable();
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, health.handler))));
    const body = `affinity: { by: ip, onRecovery: stay }\n${HEALTH}\nsharedState: { redis: "${redis.url}" }\n${backendsYaml(backends)}`;
    const single = await startProxy(body);
    cleanup.add(single.limpet);
    const clients = Array.from({ length: 40 }, (_, i) => address(i));
    const pinned = new Map<string, string>();
    for (const client of clients) pinned.set(client, await backendOf(single, client));
    // Move app-1's clients through the single proxy, then bring app-1 back.
    health.sick.add('app-1');
    await waitFor(() => !single.limpet.backend('app-1')!.available, 10_000, 'app-1 down');
    const moved = new Map<string, string>();
    for (const client of clients.filter((c) => pinned.get(c) === 'app-1')) moved.set(client, await backendOf(single, client));
    health.sick.delete('app-1');
    await waitFor(() => single.limpet.backend('app-1')!.available, 10_000, 'app-1 up');
    // A two-worker proxy started now routes them where they were moved, on each worker (new connections).
    const cli = cleanup.add(await startCli(() => `workers: 2\n${body}\n`));
    await waitFor(async () => {
      for (const [client, now] of moved) {
        for (let r = 0; r < 4; r++) if ((await backendOf(cli, client)) !== now) return false;
      }
      return true;
    }, 15_000, 'every worker to route moved clients where they were moved');
  });
});

describe('sharedState config', () => {
  it('refuses a bad URL, a missing CA file and an incomplete sentinel with file:line', async () => {
    const { ConfigError, parseConfig } = await import('../src/config/load.js');
    const issuesOf = (text: string) => {
      try {
        parseConfig(text, join(tmpdir(), 'f.yaml'), {});
      } catch (error) {
        if (error instanceof ConfigError) return error.issues.map(({ line, path, message }) => ({ line, path, message }));
        throw error;
      }
      throw new Error('expected a ConfigError');
    };
    const MINIMAL = 'backends: [{ id: a, url: "http://127.0.0.1:3001" }]\n';
    expect(issuesOf(`${MINIMAL}sharedState:\n  redis: http://127.0.0.1:6379\n`)).toEqual([
      { line: 3, path: 'sharedState.redis', message: expect.stringMatching(/^expected a Redis URL like/) },
    ]);
    expect(issuesOf(`${MINIMAL}sharedState:\n  redis: redis://127.0.0.1:6379/x\n`)[0]!.path).toBe('sharedState.redis');
    expect(issuesOf(`${MINIMAL}sharedState:\n  redis: rediss://r:6380\n  tlsCa: missing-ca.pem\n`)).toEqual([
      { line: 4, path: 'sharedState.tlsCa', message: expect.stringMatching(/^cannot read ".*missing-ca\.pem": no such file$/) },
    ]);
    expect(issuesOf(`${MINIMAL}sharedState:\n  redis: redis://m\n  sentinel: { name: m, nodes: [] }\n`)).toEqual([
      { line: 4, path: 'sharedState.sentinel.nodes', message: 'expected at least one sentinel' },
    ]);
    expect(issuesOf(`${MINIMAL}sharedState:\n  redis: redis://m\n  sentinel: { name: m, nodes: ["10.0.0.5"] }\n`)[0]!.path).toBe('sharedState.sentinel.nodes[0]');
  });
});

describe('shared-state messages', () => {
  it('ignores its own origin and anything malformed', () => {
    expect(decodeEvent(pinsMessage('me', [['10.0.0.1', 'app-1']]), 'me')).toBeNull();
    expect(decodeEvent(pinsMessage('them', [['10.0.0.1', 'app-1'], ['k with spaces', 'app-2']]), 'me')).toEqual({
      kind: 'pins',
      pins: [
        ['10.0.0.1', 'app-1'],
        ['k with spaces', 'app-2'],
      ],
    });
    expect(decodeEvent(drainMessage('them', { id: 'app-1', draining: true, deadlineAt: 1_900_000_000_000 }), 'me')).toEqual({
      kind: 'drain',
      drain: { id: 'app-1', draining: true, deadlineAt: 1_900_000_000_000 },
    });
    expect(decodeEvent(forgottenMessage('them', 'app-1'), 'me')).toEqual({ kind: 'forgotten', id: 'app-1' });
    for (const bad of ['', 'them', 'them x app-1', 'them d {', 'them d {"id":"app-1","draining":"yes"}', 'them d {"id":"../x","draining":true,"deadlineAt":null}', 'them f ../etc', 'them d {"id":"app-1","draining":true,"deadlineAt":-5}']) {
      expect(decodeEvent(bad, 'me'), bad).toBeNull();
    }
    // A pin line naming no valid backend id is dropped, the rest kept.
    expect(decodeEvent('them p\n../x 10.0.0.1\napp-2 10.0.0.2', 'me')).toEqual({ kind: 'pins', pins: [['10.0.0.2', 'app-2']] });
  });
});
