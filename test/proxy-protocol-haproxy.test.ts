import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startHaproxyRelay, type RelaySettings } from '../bench/haproxy-relay.js';
import { backendsYaml, startBackends, type TestBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startCli } from './support/cli.js';
import { commandFrom } from './support/debian-packages.js';
import { refusalCount } from './support/exposition.js';
import { freePort } from './support/ports.js';
import { startProxy } from './support/proxy.js';

const cleanup = useCleanup();

/** HAProxy's source address towards limpet: the balancer limpet lists. */
const BALANCER = '127.0.0.200';
const CLIENTS = 24;
/** The clients, each from its own loopback address, as HAProxy will claim them. */
const client = (i: number) => `127.0.40.${i + 1}`;

async function relay(target: number, send: RelaySettings['send'], checkPath?: string): Promise<number> {
  const port = await freePort();
  cleanup.add(await startHaproxyRelay(commandFrom('haproxy'), { port, target, send, source: BALANCER, checkPath }));
  return port;
}

/** Each client sends `times` requests through HAProxy, each on a new connection; what every backend was told. */
async function throughRelay(port: number, times: number, send: (port: number, from: string) => Promise<number> = plainGet): Promise<void> {
  for (let i = 0; i < CLIENTS; i++) for (let r = 0; r < times; r++) expect(await send(port, client(i))).toBe(200);
}

const plainGet = async (port: number, from: string) => (await request(port, { localAddress: from })).status;

/** What reached `backend` from the clients (the CLI's start-up probe left out). */
const relayed = (backend: TestBackend) => backend.seen.filter((seen) => seen.headers['x-limpet-probe'] === undefined);

/** Every client seen with its own address in X-Forwarded-For, each on exactly one backend, the clients spread. */
function expectClaimedAndPinned(backends: readonly TestBackend[], times: number): void {
  const served = new Map<string, Set<string>>();
  for (const backend of backends) {
    for (const seen of relayed(backend)) {
      const forwardedFor = seen.headers['x-forwarded-for'] as string;
      served.set(forwardedFor, (served.get(forwardedFor) ?? new Set()).add(backend.id));
    }
  }
  expect([...served.keys()].sort()).toEqual(Array.from({ length: CLIENTS }, (_, i) => client(i)).sort());
  for (const [address, ids] of served) expect([...ids], address).toHaveLength(1);
  expect(new Set([...served.values()].flatMap((ids) => [...ids])).size).toBeGreaterThan(1);
  expect(backends.reduce((sum, backend) => sum + relayed(backend).length, 0)).toBe(CLIENTS * times);
}

describe('behind HAProxy in mode tcp', () => {
  it.each(['send-proxy', 'send-proxy-v2'] as const)('%s: the claimed client reaches the backend and drives by: ip', async (send) => {
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`proxyProtocol: { from: ["${BALANCER}"] }\naffinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const port = await relay(started.port, send);
    await throughRelay(port, 3);
    expectClaimedAndPinned(backends, 3);
    const metrics = await started.limpet.metrics.exposition();
    for (const reason of ['missing', 'malformed', 'truncated', 'unlisted']) expect(refusalCount(metrics, reason), reason).toBe(0);
  });

  it("send-proxy-v2 with HAProxy's own health checks, which open with a v2 LOCAL header", async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`proxyProtocol: { from: ["${BALANCER}"] }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    await relay(started.port, 'send-proxy-v2', '/haproxy-check');
    // A check is HAProxy's own connection: the balancer is the client.
    const check = await waitFor(() => backends[0]!.seen.find((seen) => seen.url === '/haproxy-check'), 10_000, "HAProxy's check through limpet");
    expect(check.headers['x-forwarded-for']).toBe(BALANCER);
    expect(refusalCount(await started.limpet.metrics.exposition(), 'missing')).toBe(0);
  });

  it('send-proxy-v2 to a TLS listener: the header precedes the ClientHello', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'limpet-pp-tls-'));
    const [cert, key] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
    execFileSync(commandFrom('openssl'), ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
    const backends = cleanup.add(await startBackends(3));
    const started = await startProxy(`tls: { cert: "${cert}", key: "${key}" }\nproxyProtocol: { from: ["${BALANCER}"] }\naffinity: { by: ip }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const port = await relay(started.port, 'send-proxy-v2');
    await throughRelay(port, 2, httpsGet);
    expectClaimedAndPinned(backends, 2);
    for (const backend of backends) for (const seen of backend.seen) expect(seen.headers['x-forwarded-proto']).toBe('https');
  });

  it('send-proxy-v2 to workers: 2, and a listed peer without a header is closed and counted across workers', async () => {
    const backends = cleanup.add(await startBackends(3));
    const cli = cleanup.add(await startCli(() => `workers: 2\nlog: { level: info, access: true }\nproxyProtocol: { from: ["${BALANCER}"] }\naffinity: { by: ip }\n${backendsYaml(backends)}\n`));
    const port = await relay(cli.port, 'send-proxy-v2');
    await throughRelay(port, 3);
    expectClaimedAndPinned(backends, 3);
    // Both workers served the relayed clients, and logged the claimed addresses.
    const served = cli.logs.filter((line) => line.msg === 'request' && String(line.client).startsWith('127.0.40.'));
    expect(new Set(served.map((line) => line.pid)).size).toBe(2);
    for (let i = 0; i < 4; i++) expect(await closedWithoutAnswer(cli.port, BALANCER, 'GET / HTTP/1.1\r\nHost: app.test\r\n\r\n')).toBe(true);
    await waitFor(async () => refusalCount(await (await fetch(`http://127.0.0.1:${cli.adminPort}/metrics`)).text(), 'missing') === 4, 10_000, 'four refusals in /metrics');
    expect(backends.reduce((sum, backend) => sum + relayed(backend).length, 0)).toBe(CLIENTS * 3);
  });
});

function httpsGet(port: number, from: string): Promise<number> {
  return new Promise((resolve, reject) => {
    httpsRequest({ host: '127.0.0.1', port, path: '/', localAddress: from, rejectUnauthorized: false, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    })
      .on('error', reject)
      .end();
  });
}

/** Whether a connection from `from` that sends `bytes` is closed with nothing sent back. */
function closedWithoutAnswer(port: number, from: string, bytes: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress: from });
    let answered = false;
    socket.on('data', () => (answered = true));
    socket.on('error', () => {});
    socket.on('close', () => resolve(!answered));
    socket.write(bytes);
  });
}
