import { describe, expect, it } from 'vitest';
import { backendsYaml, startBackend, type BackendHandler } from './support/backends.js';
import { useChromium } from './support/chromium.js';
import { useCleanup } from './support/cleanup.js';
import { startProxy } from './support/proxy.js';
import { selfSignedCertificate } from './support/tls.js';

/** A real browser (test/support/chromium.ts) over HTTP/2 to the proxy's TLS listener. */

const PAGE = `<!doctype html><title>h2 page</title><script>
window.loadAssets = () => Promise.all(Array.from({ length: 20 }, (_, i) => fetch('/asset/' + i).then((r) => r.json())));
</script>`;

/** How long an asset takes to answer: long enough that the browser has sent all 20 before the first Set-Cookie is back. */
const ASSET_DELAY_MS = 300;

/** The page, and assets that say which backend served them and whether a cookie came with the request. */
const app: BackendHandler = (req, res, id) => {
  if (req.url === '/page') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'x-backend': id });
    res.end(PAGE);
    return;
  }
  setTimeout(() => {
    res.writeHead(200, { 'content-type': 'application/json', 'x-backend': id, 'cache-control': 'no-store' });
    res.end(JSON.stringify({ backend: id, cookie: req.headers.cookie ?? null }));
  }, ASSET_DELAY_MS);
};

describe('a browser over HTTP/2', () => {
  // The proxy's certificate is self-signed.
  const browser = useChromium({ ignoreHTTPSErrors: true });
  const cleanup = useCleanup();

  it("loads a page through the proxy over h2, and the page's 20 parallel cookie-less fetches all land on one backend with one cookie", async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, app))));
    const { cert, key } = selfSignedCertificate();
    const started = await startProxy(`tls: { cert: "${cert}", key: "${key}" }\nhealthCheck: { interval: 1h }\naffinity: { by: cookie, cookie: { secret: s } }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const context = browser.context();
    const page = cleanup.add(await context.newPage());
    const response = await page.goto(`https://127.0.0.1:${started.port}/page`);
    expect(response?.status()).toBe(200);
    const pageBackend = (await response!.allHeaders())['x-backend'];
    const pageCookie = (await context.cookies()).find((cookie) => cookie.name === 'limpet');
    expect(pageCookie?.value).toContain(`.${pageBackend}.`);

    // The visitor's cookie is gone (its browser session ended) while the page's connection stays:
    // the page's fetches go out at once, none of them with a cookie. Round-robin alone would spread
    // them over all three backends.
    await context.clearCookies();
    const assets = (await page.evaluate('window.loadAssets()')) as { backend: string; cookie: string | null }[];
    expect(assets).toHaveLength(20);
    expect(assets.filter((asset) => asset.cookie !== null)).toEqual([]);
    expect(new Set(assets.map((asset) => asset.backend))).toEqual(new Set([pageBackend]));
    const cookies = (await context.cookies()).filter((cookie) => cookie.name === 'limpet');
    expect(cookies.map((cookie) => cookie.value)).toEqual([pageCookie!.value]);

    // All of it went over HTTP/2, on one connection.
    const protocols = (await page.evaluate(
      "[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')].map((entry) => entry.nextHopProtocol)",
    )) as string[];
    expect(protocols.length).toBeGreaterThanOrEqual(21);
    expect(new Set(protocols)).toEqual(new Set(['h2']));
    expect(started.limpet.metrics.http2.requests).toBeGreaterThanOrEqual(21);
    expect(started.limpet.metrics.http2.connections).toBe(1);
    await page.close();
  });
});
