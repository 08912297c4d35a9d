import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseConfig } from './config/load.js';
import { ListenError } from './errors.js';
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

/**
 * `limpet demo`: three backends, a cookie-affinity proxy on `port` (admin on `port + 1010`, so 9090)
 * and an ip-affinity one on `port + 1`. All or nothing: when one of those ports is taken, whatever
 * started is closed and a ListenError names the port and how `--port` moves it.
 */
export async function runDemo(port: number): Promise<void> {
  const logger = createLogger('warn');
  const servers: Server[] = [];
  const proxies: Limpet[] = [];
  const start = async (name: 'cookie' | 'ip', yaml: string): Promise<Limpet> => {
    try {
      const proxy = await Limpet.start(parseConfig(yaml, '<demo>'), { logger });
      proxies.push(proxy);
      return proxy;
    } catch (error) {
      throw error instanceof ListenError ? new ListenError(error.host, error.port, demoPortName(name, error.setting), error.cause) : error;
    }
  };
  let byCookie: Limpet;
  let byIp: Limpet;
  let backends: { id: string; port: number }[];
  try {
    servers.push(...(await Promise.all(['app-1', 'app-2', 'app-3'].map(startDemoBackend))));
    backends = servers.map((server, i) => ({ id: `app-${i + 1}`, port: (server.address() as AddressInfo).port }));
    byCookie = await start('cookie', demoConfig(port, port === 0 ? 0 : port + 1010, 'cookie', backends));
    byIp = await start('ip', demoConfig(port === 0 ? 0 : port + 1, 0, 'ip', backends));
  } catch (error) {
    await Promise.all([...proxies.map((proxy) => proxy.close()), ...servers.map(closeServer)]);
    throw error;
  }
  const cookiePort = byCookie.address.port;
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
    void Promise.all([byCookie.close(), byIp.close(), ...servers.map(closeServer)]).then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

function closeServer(server: Server): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  return closed;
}

/** A demo port as its user knows it: only `--port` was given. */
function demoPortName(proxy: 'cookie' | 'ip', setting: string): string {
  if (setting === 'admin.listen') return 'the demo status page: --port + 1010';
  return proxy === 'cookie' ? 'the demo proxy: --port' : 'the demo ip-affinity proxy: --port + 1';
}
