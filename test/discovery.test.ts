import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import type { Limpet } from '../src/limpet.js';
import { answerWithId, startBackend, type BackendHandler, type TestBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { runCliToExit, startCli } from './support/cli.js';
import { useChromium } from './support/chromium.js';
import { startDns, type DnsmasqServer } from './support/dns.js';
import { parseExposition, sample } from './support/exposition.js';
import { startProxy, type LogCapture } from './support/proxy.js';

/**
 * Backends from DNS, against a real DNS server (dnsmasq) on loopback and real backends on several
 * loopback addresses sharing a port, the way a headless service's pods do.
 */

const cleanup = useCleanup();

const APP = 'app.limpet.test';
const FAST = 'affinity: { by: ip }\nhealthCheck: { interval: 100ms, timeout: 1s, rise: 1, fall: 3 }\n';

interface BackendView {
  id: string;
  url: string;
  weight: number;
  source: string | null;
  state: string;
  drainDeadline: string | null;
  effectiveWeight: number;
}

/** Answers with its id (its address) and the remap notice it was given. */
const answerWithNotice: BackendHandler = (req, res, id) => {
  res.setHeader('x-remapped-from', String(req.headers['x-limpet-remapped-from'] ?? ''));
  answerWithId(req, res, id);
};

/** Backends on `addresses`, all on one port (the first free one, or `port`), each named by its address. */
async function startBackendsAt(addresses: readonly string[], port = 0): Promise<TestBackend[]> {
  for (let attempt = 0; ; attempt++) {
    const started: TestBackend[] = [];
    try {
      for (const address of addresses) started.push(await startBackend(address, answerWithNotice, port || started[0]?.port || 0, address));
      return cleanup.add(started);
    } catch (error) {
      await Promise.all(started.map((backend) => backend.close()));
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || port !== 0 || attempt > 5) throw error;
    }
  }
}

function discovery(dns: DnsmasqServer, drainDeadline = '1s'): string {
  return `discovery: { interval: 200ms, servers: ["${dns.address}"], drainDeadline: ${drainDeadline} }\n`;
}

async function views(adminPort: number): Promise<BackendView[]> {
  return JSON.parse((await request(adminPort, { path: '/backends' })).body) as BackendView[];
}

async function discoveryErrors(adminPort: number, name: string): Promise<number> {
  return sample(parseExposition((await request(adminPort, { path: '/metrics' })).body), 'limpet_discovery_errors_total', { name });
}

const client = (i: number) => `127.0.40.${i + 2}`;

/** One request from each client in `range`; its backend and the remap notice it carried. */
async function serve(port: number, range: Iterable<number>): Promise<Map<number, { backend: string; remappedFrom: string }>> {
  const served = new Map<number, { backend: string; remappedFrom: string }>();
  for (const i of range) {
    const res = await request(port, { localAddress: client(i) });
    expect(res.status, `client ${i}`).toBe(200);
    served.set(i, { backend: res.headers['x-backend'] as string, remappedFrom: res.headers['x-remapped-from'] as string });
  }
  return served;
}

/** A WebSocket tunnel through the proxy from `localAddress`: what came back after the 101 head, and whether it has closed. */
async function openTunnel(port: number, localAddress: string): Promise<{ afterHead: () => Buffer; closed: () => boolean }> {
  const socket = connect({ port, host: '127.0.0.1', localAddress });
  cleanup.add(() => socket.destroy());
  const chunks: Buffer[] = [];
  let closed = false;
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  socket.write('GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  const all = () => Buffer.concat(chunks);
  await waitFor(() => all().includes('\r\n\r\n'), 10_000, 'the 101 head');
  return { afterHead: () => all().subarray(all().indexOf('\r\n\r\n') + 4), closed: () => closed };
}

/** Backends answer upgrades with 101 and then keep still, as an idle WebSocket does. */
function acceptUpgrades(backends: readonly TestBackend[]): void {
  for (const backend of backends) {
    backend.server.on('upgrade', (_req, socket: Socket) => {
      // An upgraded socket is no longer the server's: it must be ended for the server to close.
      cleanup.add(() => socket.destroy());
      socket.on('error', () => {});
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n');
    });
  }
}

const CLOSE_1001 = Buffer.from([0x88, 0x02, 0x03, 0xe9]);

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

async function startDiscovering(yaml: string): Promise<{ limpet: Limpet; port: number; admin: number; logs: LogCapture }> {
  const started = await startProxy(yaml, 'info');
  cleanup.add(started.limpet);
  return { ...started, admin: started.limpet.adminAddress.port };
}

describe('discovery: dns entries', () => {
  it('makes every A address a backend; an added address is checked before it takes clients, a removed one drains, then goes, and only its clients move', async () => {
    const [first, second] = await startBackendsAt(['127.0.0.2', '127.0.0.3']);
    acceptUpgrades([first!, second!]);
    const port = first!.port;
    const checkedAt = new Map<string, number>();
    const servedAt = new Map<string, number>();
    const dns = cleanup.add(await startDns({ hosts: { [APP]: ['127.0.0.2', '127.0.0.3'] } }));
    const proxy = await startDiscovering(`${FAST}${discovery(dns, '3s')}backends:\n  - { dns: "${APP}:${port}" }\n`);

    expect((await views(proxy.admin)).map(({ id, url, source, weight }) => ({ id, url, source, weight }))).toEqual([
      { id: `${APP}/127.0.0.2`, url: `http://127.0.0.2:${port}`, source: `dns:${APP}:${port}`, weight: 1 },
      { id: `${APP}/127.0.0.3`, url: `http://127.0.0.3:${port}`, source: `dns:${APP}:${port}`, weight: 1 },
    ]);
    const before = await serve(proxy.port, range(0, 30));
    expect(new Set([...before.values()].map((s) => s.backend))).toEqual(new Set(['127.0.0.2', '127.0.0.3']));

    // An address appears: it is checked first, then takes new clients; nobody pinned moves.
    const [third] = await startBackendsAt(['127.0.0.4'], port);
    third!.server.prependListener('request', (req: { url?: string }) => {
      const at = performance.now();
      if (req.url === '/health') checkedAt.set('127.0.0.4', checkedAt.get('127.0.0.4') ?? at);
      else servedAt.set('127.0.0.4', servedAt.get('127.0.0.4') ?? at);
    });
    await dns.set({ hosts: { [APP]: ['127.0.0.2', '127.0.0.3', '127.0.0.4'] } });
    await waitFor(async () => (await views(proxy.admin)).find((v) => v.id === `${APP}/127.0.0.4`)?.state === 'up', 10_000, 'the new address up');
    const newcomers = await serve(proxy.port, range(30, 90));
    expect([...newcomers.values()].filter((s) => s.backend === '127.0.0.4').length).toBeGreaterThan(0);
    expect(checkedAt.get('127.0.0.4')).toBeLessThan(servedAt.get('127.0.0.4')!);
    const afterAdd = await serve(proxy.port, range(0, 30));
    for (const [i, { backend }] of before) expect(afterAdd.get(i)!.backend, `client ${i}`).toBe(backend);

    // An address leaves: it drains (its clients and WebSockets stay, new clients go elsewhere), then goes
    // at the deadline (its WebSockets close 1001); only its clients move, with the notice.
    const tunnel = await openTunnel(proxy.port, client([...before].find(([, s]) => s.backend === '127.0.0.2')![0]));
    await dns.set({ hosts: { [APP]: ['127.0.0.3', '127.0.0.4'] } });
    const gone = `${APP}/127.0.0.2`;
    await waitFor(() => proxy.logs.lines.some((l) => l.msg === 'backend draining' && l.backend === gone), 10_000, 'the gone address draining');
    // Until the deadline (what is answered before it was placed before it) nobody moves.
    const leaving = (await views(proxy.admin)).find((v) => v.id === gone);
    const deadlineAt = leaving === undefined ? 0 : Date.parse(leaving.drainDeadline!);
    if (leaving !== undefined) expect(leaving.state).toBe('draining');
    if (Date.now() < deadlineAt) expect(tunnel.closed()).toBe(false);
    const pinned = new Map([...before, ...newcomers]);
    // Every answer each pinned client gets from here on.
    const since = new Map([...pinned.keys()].map((i) => [i, [] as { backend: string; remappedFrom: string }[]]));
    for (const [i, { backend }] of pinned) {
      const now = (await serve(proxy.port, [i])).get(i)!;
      since.get(i)!.push(now);
      if (Date.now() < deadlineAt) expect(now.backend, `client ${i} while its backend drains`).toBe(backend);
    }
    const late = await serve(proxy.port, range(90, 130));
    expect([...late.values()].map((s) => s.backend)).not.toContain('127.0.0.2');
    await waitFor(async () => !(await views(proxy.admin)).some((v) => v.id === `${APP}/127.0.0.2`), 10_000, 'the gone address removed');
    await waitFor(tunnel.closed, 10_000, 'its WebSocket closed');
    expect(tunnel.afterHead()).toEqual(CLOSE_1001);
    for (const [i, now] of await serve(proxy.port, range(0, 90))) since.get(i)!.push(now);
    for (const [i, { backend }] of pinned) {
      const answers = since.get(i)!;
      if (backend !== '127.0.0.2') {
        expect(answers, `client ${i}`).toEqual(answers.map(() => ({ backend, remappedFrom: '' })));
        continue;
      }
      // Moved once, at or after the deadline: its first answer elsewhere carries the notice, and it stays there.
      const moved = answers.findIndex((answer) => answer.backend !== '127.0.0.2');
      expect(moved, `client ${i} of the removed address: ${JSON.stringify(answers)}`).toBeGreaterThanOrEqual(0);
      expect(answers[moved]!.remappedFrom, `client ${i}`).toBe(`${APP}/127.0.0.2`);
      expect(answers.slice(moved).map((answer) => answer.backend)).toEqual(answers.slice(moved).map(() => answers[moved]!.backend));
    }
    expect([...pinned.values()].some((s) => s.backend === '127.0.0.2')).toBe(true);
    // Its series leave /metrics: addresses that come and go do not pile up.
    const exposition = parseExposition((await request(proxy.admin, { path: '/metrics' })).body);
    expect(exposition.samples.filter((s) => s.labels.backend === `${APP}/127.0.0.2`).map((s) => s.name)).toEqual([]);
    expect(exposition.samples.some((s) => s.name === 'limpet_requests_total' && s.labels.backend === `${APP}/127.0.0.3`)).toBe(true);
    expect(proxy.logs.lines.filter((l) => l.msg === 'discovered backends changed').map(({ added, left, returned }) => ({ added, left, returned }))).toEqual([
      { added: [`${APP}/127.0.0.2`, `${APP}/127.0.0.3`], left: [], returned: [] },
      { added: [`${APP}/127.0.0.4`], left: [], returned: [] },
      { added: [], left: [`${APP}/127.0.0.2`], returned: [] },
    ]);
  });

  it('makes an AAAA address a backend at [address]:port, beside the A ones, and an address back before its deadline stays', async () => {
    const backends = await startBackendsAt(['::1', '127.0.0.5']);
    const port = backends[0]!.port;
    const dns = cleanup.add(await startDns({ hosts: { [APP]: ['::1', '127.0.0.5'] } }));
    const proxy = await startDiscovering(`${FAST}${discovery(dns, '1m')}backends:\n  - { dns: "${APP}:${port}", weight: 3 }\n`);
    expect((await views(proxy.admin)).map(({ id, url, weight }) => ({ id, url, weight }))).toEqual([
      { id: `${APP}/127.0.0.5`, url: `http://127.0.0.5:${port}`, weight: 3 },
      { id: `${APP}/::1`, url: `http://[::1]:${port}`, weight: 3 },
    ]);
    await waitFor(async () => (await views(proxy.admin)).every((v) => v.state === 'up'), 10_000, 'both up');
    const served = await serve(proxy.port, range(0, 40));
    expect(new Set([...served.values()].map((s) => s.backend))).toEqual(new Set(['::1', '127.0.0.5']));

    // The IPv6 address leaves and comes back within its deadline: it drains, then serves new clients again.
    await dns.set({ hosts: { [APP]: ['127.0.0.5'] } });
    await waitFor(() => proxy.logs.lines.some((l) => l.msg === 'backend draining' && l.backend === `${APP}/::1`), 10_000, '::1 draining');
    await dns.set({ hosts: { [APP]: ['::1', '127.0.0.5'] } });
    await waitFor(async () => (await views(proxy.admin)).find((v) => v.id === `${APP}/::1`)?.state === 'up', 10_000, '::1 up again');
    const again = await serve(proxy.port, range(0, 40));
    for (const [i, { backend }] of served) expect(again.get(i)!.backend, `client ${i}`).toBe(backend);
    expect(proxy.logs.lines.filter((l) => l.msg === 'discovered backends changed').map(({ added, left, returned }) => ({ added, left, returned }))).toEqual([
      { added: [`${APP}/127.0.0.5`, `${APP}/::1`], left: [], returned: [] },
      { added: [], left: [`${APP}/::1`], returned: [] },
      { added: [], left: [], returned: [`${APP}/::1`] },
    ]);
  });
});

describe('discovery: srv entries', () => {
  it('makes every address of the lowest-priority targets a backend at its port and weight, and follows the records', async () => {
    const [t1] = await startBackendsAt(['127.0.0.6']);
    const [t2] = await startBackendsAt(['127.0.0.7']);
    const [backup] = await startBackendsAt(['127.0.0.8']);
    const [t4] = await startBackendsAt(['127.0.0.9']);
    const SVC = '_http._tcp.svc.limpet.test';
    const hosts = { 't1.limpet.test': ['127.0.0.6'], 't2.limpet.test': ['127.0.0.7'], 'backup.limpet.test': ['127.0.0.8'], 't4.limpet.test': ['127.0.0.9'] };
    /** The records: `targets` at priority 10 (name, port, weight), and always a backup at priority 20. */
    const records = (...targets: [string, number, number][]) => ({
      hosts,
      srv: [
        ...targets.map(([target, port, weight]) => ({ name: SVC, target: `${target}.limpet.test`, port, priority: 10, weight })),
        { name: SVC, target: 'backup.limpet.test', port: backup!.port, priority: 20, weight: 50 },
      ],
    });
    const dns = cleanup.add(await startDns(records(['t1', t1!.port, 10], ['t2', t2!.port, 30])));
    const proxy = await startDiscovering(`${FAST}balance: { slowStart: 10s }\n${discovery(dns)}backends:\n  - { srv: "${SVC}" }\n`);
    expect((await views(proxy.admin)).map(({ id, url, weight, source }) => ({ id, url, weight, source }))).toEqual([
      { id: `${SVC}/127.0.0.6:${t1!.port}`, url: `http://127.0.0.6:${t1!.port}`, weight: 10, source: `srv:${SVC}` },
      { id: `${SVC}/127.0.0.7:${t2!.port}`, url: `http://127.0.0.7:${t2!.port}`, weight: 30, source: `srv:${SVC}` },
    ]);
    const served = await serve(proxy.port, range(0, 40));
    expect(new Set([...served.values()].map((s) => s.backend))).toEqual(new Set(['127.0.0.6', '127.0.0.7']));

    // t2 leaves the records and t4 joins with another weight: t2 drains and goes, t4 is added.
    await dns.set(records(['t1', t1!.port, 10], ['t4', t4!.port, 20]));
    // Slow start applies to a discovered backend as to any added one.
    const t4View = await waitFor(async () => (await views(proxy.admin)).find((v) => v.id === `${SVC}/127.0.0.9:${t4!.port}` && v.state === 'up'), 10_000, 't4 up');
    expect(t4View.effectiveWeight).toBeLessThan(20);
    await waitFor(async () => (await views(proxy.admin)).length === 2, 10_000, 't2 removed after its deadline');
    const t2Id = `${SVC}/127.0.0.7:${t2!.port}`;
    expect(proxy.logs.lines.filter((l) => l.backend === t2Id && (l.msg === 'backend draining' || l.msg === 'backend removed')).map((l) => l.msg)).toEqual([
      'backend draining',
      'backend removed',
    ]);
    expect((await views(proxy.admin)).map(({ id, weight }) => ({ id, weight }))).toEqual([
      { id: `${SVC}/127.0.0.6:${t1!.port}`, weight: 10 },
      { id: `${SVC}/127.0.0.9:${t4!.port}`, weight: 20 },
    ]);
    const after = await serve(proxy.port, range(0, 40));
    for (const [i, { backend }] of served) {
      if (backend === '127.0.0.7') expect(after.get(i)!.remappedFrom, `client ${i}`).toBe(`${SVC}/127.0.0.7:${t2!.port}`);
      else expect(after.get(i)!.backend, `client ${i}`).toBe(backend);
    }
    expect(backup!.seen).toEqual([]);

    // A new SRV weight for a target that stays: its backend is reweighted, nobody moves.
    await dns.set(records(['t1', t1!.port, 40], ['t4', t4!.port, 20]));
    await waitFor(async () => (await views(proxy.admin)).find((v) => v.id === `${SVC}/127.0.0.6:${t1!.port}`)?.weight === 40, 10_000, 't1 reweighted');
    expect(proxy.logs.lines.filter((l) => l.msg === 'discovered backends changed').at(-1)).toMatchObject({ added: [], left: [], returned: [], reweighted: true });
    const reweighted = await serve(proxy.port, range(0, 40));
    for (const [i, { backend }] of after) expect(reweighted.get(i)!.backend, `client ${i}`).toBe(backend);
  });
});

describe('discovery: lookups that fail', () => {
  it('keeps the last known set while the DNS server does not answer or is gone, counting each failure and logging each outage once', async () => {
    const backends = await startBackendsAt(['127.0.0.10', '127.0.0.11']);
    const port = backends[0]!.port;
    const dns = cleanup.add(await startDns({ hosts: { [APP]: ['127.0.0.10', '127.0.0.11'] } }));
    const proxy = await startDiscovering(`${FAST}${discovery(dns)}backends:\n  - { dns: "${APP}:${port}" }\n`);
    const ids = [`${APP}/127.0.0.10`, `${APP}/127.0.0.11`];
    const outages = () => proxy.logs.lines.filter((l) => l.msg === 'discovery lookup failed; the last known backends of this name stay');
    const recoveries = () => proxy.logs.lines.filter((l) => l.msg === 'discovery lookup answers again');
    expect(await discoveryErrors(proxy.admin, APP)).toBe(0);

    // Frozen: queries time out.
    dns.freeze();
    await waitFor(async () => (await discoveryErrors(proxy.admin, APP)) >= 2, 15_000, 'two failed lookups counted');
    expect((await views(proxy.admin)).map((v) => [v.id, v.state])).toEqual(ids.map((id) => [id, 'up']));
    expect(new Set([...(await serve(proxy.port, range(0, 20))).values()].map((s) => s.backend))).toEqual(new Set(['127.0.0.10', '127.0.0.11']));
    expect(outages()).toHaveLength(1);
    expect(outages()[0]).toMatchObject({ level: 'warn', name: APP, backends: 2 });
    dns.thaw();
    await waitFor(() => recoveries().length === 1, 10_000, 'the recovery logged');

    // Gone: queries are refused.
    await dns.kill();
    const counted = await discoveryErrors(proxy.admin, APP);
    await waitFor(async () => (await discoveryErrors(proxy.admin, APP)) >= counted + 3, 10_000, 'three more failed lookups counted');
    expect(outages()).toHaveLength(2);
    expect((await views(proxy.admin)).map((v) => [v.id, v.state])).toEqual(ids.map((id) => [id, 'up']));
    expect((await request(proxy.port, { localAddress: client(0) })).status).toBe(200);
    await dns.set({ hosts: { [APP]: ['127.0.0.10', '127.0.0.11'] } });
    await waitFor(() => recoveries().length === 2, 10_000, 'the second recovery logged');
    expect(outages()).toHaveLength(2);
  });

  it('serves the listed backends while a name resolves to nothing, adds its addresses when it gets some, and keeps them when they all vanish', async () => {
    const [listed] = cleanup.add([await startBackend('listed')]);
    const [later] = await startBackendsAt(['127.0.0.12']);
    const NONE = 'none.limpet.test';
    const dns = cleanup.add(await startDns({ hosts: {} }));
    const proxy = await startDiscovering(`${FAST}${discovery(dns)}backends:\n  - { id: listed, url: "${listed!.url}" }\n  - { dns: "${NONE}:${later!.port}" }\n`);
    expect((await views(proxy.admin)).map((v) => v.id)).toEqual(['listed']);
    expect((await request(proxy.port)).headers['x-backend']).toBe('listed');
    await waitFor(async () => (await discoveryErrors(proxy.admin, NONE)) >= 2, 10_000, 'the empty lookups counted');
    const outages = () => proxy.logs.lines.filter((l) => l.msg === 'discovery lookup failed; the last known backends of this name stay');
    expect(outages()).toHaveLength(1);
    expect(outages()[0]).toMatchObject({ name: NONE, backends: 0 });

    await dns.set({ hosts: { [NONE]: ['127.0.0.12'] } });
    await waitFor(async () => (await views(proxy.admin)).find((v) => v.id === `${NONE}/127.0.0.12`)?.state === 'up', 10_000, 'the address added and up');

    // Every address vanishes: an empty answer is no reason to empty the fleet.
    const counted = await discoveryErrors(proxy.admin, NONE);
    await dns.set({ hosts: {} });
    await waitFor(async () => (await discoveryErrors(proxy.admin, NONE)) >= counted + 2, 10_000, 'the empty lookups counted');
    expect((await views(proxy.admin)).map((v) => [v.id, v.state])).toEqual([
      ['listed', 'up'],
      [`${NONE}/127.0.0.12`, 'up'],
    ]);
    expect(outages()).toHaveLength(2);
  });
});

describe('discovery: status page', () => {
  const browser = useChromium({ viewport: { width: 1200, height: 360 } });

  it('shows in a browser which entry each discovered backend came from, and none for a listed one', async () => {
    const [listed] = cleanup.add([await startBackend('listed')]);
    const backends = await startBackendsAt(['127.0.0.15', '127.0.0.16']);
    const dns = cleanup.add(await startDns({ hosts: { [APP]: ['127.0.0.15', '127.0.0.16'] } }));
    const proxy = await startDiscovering(`${FAST}${discovery(dns)}backends:\n  - { id: listed, url: "${listed!.url}" }\n  - { dns: "${APP}:${backends[0]!.port}" }\n`);
    const page = cleanup.add(await browser.context().newPage());
    await page.goto(`http://127.0.0.1:${proxy.admin}/`);
    // Runs in the page; a string, so no transpiler helper leaks in.
    const readSources = `Array.from(document.querySelectorAll('#rows tr[data-backend]')).map((tr) => [tr.dataset.backend, tr.querySelector('[data-field="source"]')?.textContent ?? null])`;
    const rows = await waitFor(async () => {
      const found = (await page.evaluate(readSources)) as [string, string | null][];
      return found.length === 3 ? found : null;
    }, 15_000, 'three rows on the status page');
    const source = `from dns:${APP}:${backends[0]!.port}`;
    expect(rows).toEqual([
      ['listed', null],
      [`${APP}/127.0.0.15`, source],
      [`${APP}/127.0.0.16`, source],
    ]);
    mkdirSync('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/discovery-status-page.png', fullPage: true });
  });
});

describe('discovery: workers and hot reload', () => {
  it('gives every worker the primary\'s discovered set, and follows the file adding, reweighting and removing a dns entry', async () => {
    const [listed] = cleanup.add([await startBackend('listed')]);
    const backends = await startBackendsAt(['127.0.0.13', '127.0.0.14']);
    const port = backends[0]!.port;
    const dns = cleanup.add(await startDns({ hosts: { [APP]: ['127.0.0.13'] } }));
    const head = `workers: 2\nlog: { level: info, access: true }\n${FAST}${discovery(dns)}`;
    const cli = cleanup.add(await startCli(() => `${head}backends:\n  - { id: listed, url: "${listed!.url}" }\n`));
    const workersServing = (backend: string) => new Set(cli.logs.filter((l) => l.msg === 'request' && l.backend === backend).map((l) => l.pid)).size;

    // Added by the file: resolved by the primary alone, used by both workers.
    cli.writeConfig(`${head}backends:\n  - { id: listed, url: "${listed!.url}" }\n  - { dns: "${APP}:${port}", weight: 2 }\n`);
    await waitFor(async () => (await views(cli.adminPort)).find((v) => v.id === `${APP}/127.0.0.13`)?.state === 'up', 10_000, 'the dns entry added');
    await waitFor(async () => {
      await request(cli.port, { localAddress: client(Math.floor(Math.random() * 200)) });
      return workersServing(`${APP}/127.0.0.13`) === 2;
    }, 15_000, 'both workers to send clients to the discovered backend');

    // DNS adds an address: both workers use it.
    await dns.set({ hosts: { [APP]: ['127.0.0.13', '127.0.0.14'] } });
    await waitFor(async () => (await views(cli.adminPort)).find((v) => v.id === `${APP}/127.0.0.14`)?.state === 'up', 10_000, 'the new address up');
    await waitFor(async () => {
      await request(cli.port, { localAddress: client(Math.floor(Math.random() * 200)) });
      return workersServing(`${APP}/127.0.0.14`) === 2;
    }, 15_000, 'both workers to send clients to the new address');

    // Reweighted, then removed, by the file.
    cli.writeConfig(`${head}backends:\n  - { id: listed, url: "${listed!.url}" }\n  - { dns: "${APP}:${port}", weight: 5 }\n`);
    await waitFor(async () => (await views(cli.adminPort)).filter((v) => v.source !== null).every((v) => v.weight === 5), 10_000, 'weight 5');
    cli.writeConfig(`${head}backends:\n  - { id: listed, url: "${listed!.url}" }\n`);
    await waitFor(async () => (await views(cli.adminPort)).length === 1, 10_000, 'the dns entry removed');
    const pids = new Set<unknown>();
    await waitFor(async () => {
      const res = await request(cli.port, { localAddress: client(Math.floor(Math.random() * 200)) });
      expect(res.headers['x-backend']).toBe('listed');
      pids.add(cli.logs.filter((l) => l.msg === 'request').at(-1)?.pid);
      return pids.size === 2;
    }, 15_000, 'both workers to serve from the listed backend alone');
  });
});

describe('discovery: config', () => {
  const file = (body: string) => `backends:\n${body}`;
  const errors = (text: string): string[] => {
    try {
      parseConfig(text, 'f.yaml', {});
    } catch (error) {
      return (error as Error).message.split('\n');
    }
    throw new Error('the config was accepted');
  };

  it('reads dns and srv entries beside listed ones, and the discovery section with its defaults', () => {
    const config = parseConfig(
      file('  - { id: a, url: "http://10.0.0.1:80" }\n  - { dns: "App.Internal.:3000", weight: 2, healthPath: /up }\n  - { srv: _HTTP._tcp.app.internal }\n'),
      'f.yaml',
      {},
    );
    expect(config.backends).toEqual([
      { id: 'a', url: 'http://10.0.0.1', weight: 1, drain: false, drainDeadline: null, healthPath: null },
      { dns: { name: 'app.internal', port: 3000 }, weight: 2, healthPath: '/up' },
      { srv: '_http._tcp.app.internal', healthPath: null },
    ]);
    expect(config.discovery).toEqual({ interval: 5_000, servers: [], drainDeadline: 30_000 });
    expect(parseConfig(`discovery: { interval: 1s, servers: ["10.0.0.2", "10.0.0.3:5353", "fd00::2", "[fd00::3]:53"], drainDeadline: 0 }\n${file('  - { dns: "a:1" }\n')}`, 'f.yaml', {}).discovery).toEqual({
      interval: 1_000,
      servers: ['10.0.0.2:53', '10.0.0.3:5353', '[fd00::2]:53', '[fd00::3]:53'],
      drainDeadline: 0,
    });
  });

  it('limpet --check counts listed backends and names to resolve apart', async () => {
    const config = join(mkdtempSync(join(tmpdir(), 'limpet-check-')), 'limpet.yaml');
    writeFileSync(config, file('  - { id: a, url: "http://10.0.0.1:80" }\n  - { dns: "app.internal:3000" }\n  - { srv: _http._tcp.app.internal }\n'));
    const run = await runCliToExit(['--check', '--config', config]);
    expect(run).toEqual({ code: 0, stdout: `limpet: ${config}: ok (1 backend and 2 DNS names, affinity by cookie)\n`, stderr: '' });
  });

  it('says what is wrong with an entry, by the shape it was meant to have', () => {
    expect(
      errors(
        file(
          [
            '  - { dns: "app.internal" }',
            '  - { dns: "10.0.0.1:80" }',
            '  - { dns: "a..b:80", wieght: 2 }',
            '  - { srv: _http._tcp.x, weight: 3 }',
            '  - { id: a }',
            '  - {}',
            '  - { dns: "App.internal:81" }',
            '  - { srv: _http._tcp.X. }',
            '',
          ].join('\n'),
        ) + 'discovery: { interval: 50ms, servers: [dns.google, "10.0.0.1:0"], drainDeadline: 5 }\n',
      ),
    ).toEqual([
      'f.yaml:2:12: backends[0].dns: expected a "name:port" like "app.internal:3000" with a port from 1 to 65535, got "app.internal"',
      'f.yaml:3:12: backends[1].dns: expected a "name:port" like "app.internal:3000", got the address "10.0.0.1" (an address needs no lookup: write it as { id, url })',
      'f.yaml:4:12: backends[2].dns: expected a "name:port" like "app.internal:3000", got "a..b"',
      'f.yaml:4:23: backends[2].wieght: unknown key "wieght" (did you mean "weight"?)',
      'f.yaml:5:26: backends[3].weight: unknown key "weight"',
      'f.yaml:6:5: backends[4].url: missing required key "url": expected an http:// or https:// origin like "http://10.0.0.11:3000"',
      'f.yaml:7:5: backends[5]: expected a backend: { id, url }, { dns: "name:port" } or { srv: "_service._tcp.name" }, got a map',
      'f.yaml:8:12: backends[6].dns: duplicate dns name "app.internal" (also used by backends[0])',
      'f.yaml:9:12: backends[7].srv: duplicate srv name "_http._tcp.x" (also used by backends[3])',
      'f.yaml:10:24: discovery.interval: must be at least 100ms, got "50ms"',
      'f.yaml:10:40: discovery.servers[0]: expected a DNS server address like "10.0.0.2", "10.0.0.2:53" or "[fd00::2]:53", got "dns.google" (a server is given by address, not by name)',
      'f.yaml:10:52: discovery.servers[1]: port must be from 1 to 65535, got "10.0.0.1:0"',
    ]);
  });
});
