import { describe, expect, it } from 'vitest';
import { mkdir } from 'node:fs/promises';
import type { Page } from 'playwright-core';
import { answerWithId, backendsYaml, startBackend, type BackendHandler } from './support/backends.js';
import { useChromium } from './support/chromium.js';
import { useCleanup } from './support/cleanup.js';
import { request } from './support/client.js';
import { startProxy } from './support/proxy.js';
import { parseConfig } from '../src/config/load.js';

/** The admin status page in a real browser (test/support/chromium.ts). */

const FAST_HEALTH = 'healthCheck: { interval: 100ms, timeout: 150ms, rise: 1, fall: 2 }';
/** The page polls every 2 s; leave room for a slow machine. */
const PAGE_CAP_MS = 15_000;

interface Row {
  id: string;
  state: string;
  badgeClass: string;
  fields: Record<string, string>;
}

/** Runs in the page: every backend row as the user sees it. A string, so no transpiler helper leaks in. */
const READ_ROWS = `Array.from(document.querySelectorAll('#rows tr[data-backend]')).map((tr) => {
  const badge = tr.querySelector('span.state');
  const fields = {};
  for (const cell of tr.querySelectorAll('[data-field]')) fields[cell.dataset.field] = cell.textContent.trim();
  return { id: tr.dataset.backend, state: badge ? badge.textContent.trim() : '', badgeClass: badge ? badge.className : '', fields };
})`;

async function readRows(page: Page): Promise<Row[]> {
  return (await page.evaluate(READ_ROWS)) as Row[];
}

/** Polls the DOM until `check` holds; on timeout the error shows the last rows seen. */
async function waitForRows(page: Page, check: (rows: Row[]) => boolean, what: string, timeoutMs = PAGE_CAP_MS): Promise<Row[]> {
  const deadline = Date.now() + timeoutMs;
  let rows: Row[] = [];
  for (;;) {
    rows = await readRows(page);
    if (check(rows)) return rows;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; page shows ${JSON.stringify(rows)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const isUp = (row: Row | undefined) => row !== undefined && row.state === 'up' && row.badgeClass.split(/\s+/).includes('state-up');
const isDown = (row: Row | undefined) => row !== undefined && row.state === 'down' && row.badgeClass.split(/\s+/).includes('state-down');
const reqPerSec = (row: Row | undefined) => Number(row?.fields.rps ?? NaN);

/** Sends requests as one client (by source address) until stopped. */
function trafficFrom(port: number, addresses: string[]) {
  let running = true;
  const loops = addresses.map(async (localAddress) => {
    while (running) {
      await request(port, { localAddress }).catch(() => undefined);
      await new Promise((r) => setTimeout(r, 25));
    }
  });
  return async () => {
    running = false;
    await Promise.all(loops);
  };
}

describe('status page in a browser', () => {
  const browser = useChromium({ viewport: { width: 1200, height: 640 } });
  const cleanup = useCleanup();

  it('shows every backend up, request rates once traffic flows, and a backend whose health fails as down', async () => {
    const health = new Map<string, number>();
    const handler: BackendHandler = (req, res, id) => {
      if (req.url === '/health') {
        res.writeHead(health.get(id) ?? 200).end();
        return;
      }
      answerWithId(req, res, id);
    };
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, handler))));
    const started = await startProxy(`affinity: { by: ip }\n${FAST_HEALTH}\n${backendsYaml(backends)}`);
    const proxy = cleanup.add(started.limpet);
    const ids = backends.map((b) => b.id);

    const page = cleanup.add(await browser.context().newPage());
    const pageErrors: string[] = [];
    page.on('pageerror', (error) => pageErrors.push(String(error)));
    const response = await page.goto(`http://127.0.0.1:${proxy.adminAddress.port}/`);
    expect(response?.status()).toBe(200);
    expect(await page.title()).toBe('limpet status');

    // Every backend is listed, each with an "up" badge.
    const initial = await waitForRows(page, (rows) => ids.every((id) => isUp(rows.find((r) => r.id === id))), 'every backend shown up');
    expect(initial.map((r) => r.id).sort()).toEqual([...ids].sort());
    expect(await page.locator('#summary').textContent()).toBe('3 of 3 backends serving');

    // One client's traffic: its backend's Req/s rises above 0 and its pinned-client count to 1; the others stay idle.
    const first = await request(started.port, { localAddress: '127.0.8.2' });
    const busy = first.headers['x-backend'] as string;
    cleanup.add(trafficFrom(started.port, ['127.0.8.2']));
    const busyRows = await waitForRows(page, (rows) => reqPerSec(rows.find((r) => r.id === busy)) > 0, `Req/s > 0 for ${busy}`);
    expect(busyRows.find((r) => r.id === busy)!.fields.sessions).toBe('1');
    for (const row of busyRows.filter((r) => r.id !== busy)) expect(reqPerSec(row), row.id).toBe(0);

    // Spread more clients over every backend, then make one backend's health check fail.
    cleanup.add(trafficFrom(started.port, Array.from({ length: 24 }, (_, i) => `127.0.9.${i + 2}`)));
    await waitForRows(page, (rows) => ids.every((id) => reqPerSec(rows.find((r) => r.id === id)) > 0), 'Req/s > 0 for every backend');
    const victim = ids.find((id) => id !== busy)!;
    health.set(victim, 503);
    const failed = await waitForRows(
      page,
      (rows) => isDown(rows.find((r) => r.id === victim)) && ids.filter((id) => id !== victim).every((id) => isUp(rows.find((r) => r.id === id))),
      `${victim} shown down, the others up`,
    );
    expect(failed.filter((r) => r.id !== victim).every(isUp)).toBe(true);
    expect(await page.locator('#summary').textContent()).toBe('2 of 3 backends serving');

    // The survivors keep serving: both show a rate, and the clients moved off the victim are counted in.
    const serving = await waitForRows(
      page,
      (rows) => ids.filter((id) => id !== victim).every((id) => reqPerSec(rows.find((r) => r.id === id)) > 0) && reqPerSec(rows.find((r) => r.id === victim)) === 0,
      'survivors with traffic, victim idle',
    );
    const remapsIn = serving.filter((r) => r.id !== victim).reduce((sum, r) => sum + Number(r.fields['remaps-in']), 0);
    expect(remapsIn).toBeGreaterThan(0);

    // Once every chart line has a few points, keep one picture for people to look at.
    await page.waitForFunction(
      () => {
        const lines = [...document.querySelectorAll('#chart polyline')];
        return lines.length > 0 && lines.every((line) => (line.getAttribute('points') ?? '').trim().split(/\s+/).length >= 3);
      },
      undefined,
      { timeout: PAGE_CAP_MS },
    );
    await mkdir('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/status-page.png', fullPage: true });
    expect(pageErrors).toEqual([]);
    await page.close();
  });

  it('shows a draining backend\'s live clients and time to its deadline, and a ramping backend\'s effective weight', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3', 'app-4'].map((id) => startBackend(id))));
    const base = `affinity: { by: ip }\nbalance: { slowStart: 20s }\n${FAST_HEALTH}\n`;
    const started = await startProxy(`${base}${backendsYaml(backends.slice(0, 3))}`);
    const proxy = cleanup.add(started.limpet);
    const onFirst: string[] = [];
    for (let i = 0; i < 30; i++) {
      const from = `127.0.10.${i + 2}`;
      if ((await request(started.port, { localAddress: from })).headers['x-backend'] === 'app-1') onFirst.push(from);
    }
    expect(onFirst.length).toBeGreaterThan(0);
    expect((await request(proxy.adminAddress.port, { path: '/backends/app-1/drain?deadline=10m', method: 'POST' })).status).toBe(200);
    proxy.reload(parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n${base}${backendsYaml(backends)}`, 'test.yaml', {}));

    const page = cleanup.add(await browser.context().newPage());
    await page.goto(`http://127.0.0.1:${proxy.adminAddress.port}/`);
    const rows = await waitForRows(
      page,
      (shown) => shown.find((r) => r.id === 'app-1')?.fields.drain !== undefined && shown.find((r) => r.id === 'app-4')?.fields.ramp !== undefined,
      'drain progress on app-1 and a ramp on app-4',
    );
    const drain = rows.find((r) => r.id === 'app-1')!;
    expect(drain.state).toBe('draining');
    expect(drain.fields.drain).toMatch(new RegExp(`^${onFirst.length} live clients? left · deadline in (10|9) min$`));
    const ramp = Number(/^ramping: ([\d.]+) now$/.exec(rows.find((r) => r.id === 'app-4')!.fields.ramp!)?.[1]);
    expect(ramp).toBeGreaterThan(0);
    expect(ramp).toBeLessThan(1);
    await page.close();
  });
});
