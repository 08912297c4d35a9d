import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseConfig } from './config/load.js';
import { createLogger } from './observe/log.js';
import { Limpet } from './limpet.js';

/** A demo backend: answers every request with its own id, so stickiness is visible from curl. */
function startDemoBackend(id: string): Promise<Server> {
  const server = createServer((req, res) => {
    const remapped = req.headers['x-limpet-remapped-from'];
    const body = `${id}  ${req.method} ${req.url}  x-forwarded-for=${req.headers['x-forwarded-for'] ?? '-'}${remapped ? `  remapped-from=${remapped}` : ''}\n`;
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function demoConfig(port: number, adminPort: number, by: 'cookie' | 'ip', backends: { id: string; port: number }[]): string {
  return [
    `listen: 127.0.0.1:${port}`,
    `admin: { listen: "127.0.0.1:${adminPort}" }`,
    `affinity: { by: ${by}, cookie: { secret: limpet-demo-secret } }`,
    `healthCheck: { path: /health, interval: 1s }`,
    'backends:',
    ...backends.map((b) => `  - { id: ${b.id}, url: "http://127.0.0.1:${b.port}" }`),
  ].join('\n');
}

/** `limpet demo`: three backends, a cookie-affinity proxy on `port` (admin on `port + 1010`, so 9090) and an ip-affinity one on `port + 1`. */
export async function runDemo(port: number): Promise<void> {
  const logger = createLogger('warn');
  const servers = await Promise.all(['app-1', 'app-2', 'app-3'].map(startDemoBackend));
  const backends = servers.map((server, i) => ({ id: `app-${i + 1}`, port: (server.address() as AddressInfo).port }));
  const byCookie = await Limpet.start(parseConfig(demoConfig(port, port === 0 ? 0 : port + 1010, 'cookie', backends), '<demo>'), { logger });
  const cookiePort = byCookie.address.port;
  const ipPort = port === 0 ? 0 : port + 1;
  const byIp = await Limpet.start(parseConfig(demoConfig(ipPort, 0, 'ip', backends), '<demo>'), { logger });
  const url = `http://127.0.0.1:${cookiePort}/`;
  const ipUrl = `http://127.0.0.1:${byIp.address.port}/`;
  process.stdout.write(
    [
      'limpet demo',
      `  backends: ${backends.map((b) => `${b.id} → 127.0.0.1:${b.port}`).join(', ')}`,
      `  cookie affinity: ${url}`,
      `  ip affinity:     ${ipUrl}`,
      '',
      'Sticky by cookie — the first response sets a signed cookie; every request that sends it back lands on the same backend:',
      `  curl -s -c /tmp/limpet-demo.jar -b /tmp/limpet-demo.jar ${url}   # run it a few times`,
      'Without a cookie every request is a new client, spread evenly over the backends:',
      `  for i in 1 2 3 4 5 6; do curl -s ${url}; done`,
      'Sticky by IP — each source address keeps its backend, run it twice (any 127.x.y.z is local on Linux):',
      `  for i in 2 3 4 5 6 7 8 9; do echo -n "127.0.0.$i → "; curl -s --interface 127.0.0.$i ${ipUrl}; done`,
      'Status page and metrics of the cookie proxy:',
      `  http://127.0.0.1:${byCookie.adminAddress.port}/   and   curl -s http://127.0.0.1:${byCookie.adminAddress.port}/metrics | grep ^limpet_`,
      '',
      'Ctrl-C stops it all.',
      '',
    ].join('\n'),
  );
  const stop = () => {
    void Promise.all([byCookie.close(), byIp.close(), ...servers.map((s) => new Promise((r) => s.close(r)))]).then(() => process.exit(0));
    for (const s of servers) s.closeAllConnections();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}
