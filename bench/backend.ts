// Benchmark backends: N tiny HTTP servers in one process. They are deliberately cheap so that the
// proxy in front of them is what gets measured.
//
//   node dist/bench/backend.js [count] [--raw] [--ports=P1,P2,...] [--first-id=N]
//
// `--ports` listens on those ports instead of ephemeral ones (a backend restarted where it was);
// `--first-id` names the servers b<N>, b<N+1>, … (one backend per process, each with its own id).
//
// Routes, the same in both modes:
//   GET /100k  200, 102,400-byte body (the large-response scenarios of bench:compare)
//   GET /id    200, body `b<n>`: which of the N servers answered (stickiness checks)
//   anything   200, body `ok\n`
//
// Default mode is `node:http` (what bench/run.ts measures against). `--raw` answers from a plain
// TCP server with prebuilt responses: a fraction of node:http's CPU per request, so the backends
// do not take the load generator's core away from it when a native proxy pushes 100k req/s
// through them (bench/compare.ts). It speaks just enough HTTP/1.1 for a proxy: keep-alive,
// Content-Length request bodies, `Connection: close` and HTTP/1.0; chunked request bodies get 501.
//
// Listens on 127.0.0.1 ephemeral ports and prints one line `{"ports":[p1,p2,...]}` on stdout once
// all are listening. Exits when stdin closes (the harness holds the other end) or on SIGTERM/SIGINT.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';

const SMALL_BODY = Buffer.from('ok\n');
const LARGE_BODY = Buffer.alloc(100 * 1024, 'x');

/** Keep-alive timeout longer than any proxy's idle pool timeout (see startHttpBackend). */
const KEEP_ALIVE_MS = 65_000;

function bodyFor(url: string | undefined, id: string): Buffer {
  if (url === '/100k') return LARGE_BODY;
  if (url === '/id') return Buffer.from(id);
  return SMALL_BODY;
}

function startHttpBackend(id: string, port: number): Promise<net.Server> {
  const server = http.createServer((req, res) => {
    req.resume();
    const body = bodyFor(req.url, id);
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': String(body.length) });
    res.end(body);
  });
  // Longer than any proxy's idle pool timeout, so pooled upstream connections are never closed
  // under a proxy between rounds (that race would show up as 502s that are not the proxy's fault).
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1000;
  return listen(server, port);
}

/** Complete responses, built once: the raw server only copies them to the socket. */
function rawResponses(id: string): { keepAlive: Map<string, Buffer>; close: Map<string, Buffer> } {
  const build = (body: Buffer, close: boolean) => Buffer.concat([
    Buffer.from(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\n${close ? 'connection: close\r\n' : ''}\r\n`, 'latin1'),
    body,
  ]);
  const routes = ['/', '/100k', '/id'];
  return {
    keepAlive: new Map(routes.map((route) => [route, build(bodyFor(route, id), false)])),
    close: new Map(routes.map((route) => [route, build(bodyFor(route, id), true)])),
  };
}

const NOT_IMPLEMENTED = Buffer.from('HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n', 'latin1');
const HEAD_END = Buffer.from('\r\n\r\n');

function startRawBackend(id: string, port: number): Promise<net.Server> {
  const responses = rawResponses(id);
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    socket.setTimeout(KEEP_ALIVE_MS, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    let pending: Buffer | undefined;
    /** Request-body bytes still to be skipped before the next request head. */
    let bodyLeft = 0;
    socket.on('data', (chunk: Buffer) => {
      let data = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
      pending = undefined;
      while (data.length > 0) {
        if (bodyLeft > 0) {
          const skipped = Math.min(bodyLeft, data.length);
          bodyLeft -= skipped;
          data = data.subarray(skipped);
          continue;
        }
        const end = data.indexOf(HEAD_END);
        if (end === -1) {
          pending = data;
          return;
        }
        const head = data.toString('latin1', 0, end);
        data = data.subarray(end + HEAD_END.length);
        if (/^transfer-encoding:/im.test(head)) {
          socket.end(NOT_IMPLEMENTED);
          return;
        }
        const length = /^content-length:\s*(\d+)/im.exec(head);
        if (length !== null) bodyLeft = Number(length[1]);
        const lineEnd = head.indexOf('\r\n');
        const firstLine = lineEnd === -1 ? head : head.slice(0, lineEnd);
        const close = /^connection:\s*close/im.test(head) || (firstLine.endsWith('HTTP/1.0') && !/^connection:\s*keep-alive/im.test(head));
        const path = firstLine.split(' ', 2)[1] ?? '/';
        const table = close ? responses.close : responses.keepAlive;
        const response = table.get(path) ?? table.get('/')!;
        if (close) {
          socket.end(response);
          return;
        }
        socket.write(response);
      }
    });
  });
  return listen(server, port);
}

function listen(server: net.Server, port: number): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

const args = process.argv.slice(2);
const raw = args.includes('--raw');
const option = (name: string) => args.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3);
const fixedPorts = option('ports')?.split(',').map(Number);
const countArg = args.find((arg) => !arg.startsWith('--'));
const count = fixedPorts?.length ?? Number(countArg ?? 3);
const firstId = Number(option('first-id') ?? 1);
if (!Number.isInteger(count) || count < 1 || !Number.isInteger(firstId) || firstId < 1 || fixedPorts?.some((port) => !Number.isInteger(port) || port < 1 || port > 65535)) {
  process.stderr.write(`backend: count, --first-id and --ports must be positive integers, got ${JSON.stringify(args)}\n`);
  process.exit(2);
}

const start = raw ? startRawBackend : startHttpBackend;
const servers = await Promise.all(Array.from({ length: count }, (_, i) => start(`b${firstId + i}`, fixedPorts?.[i] ?? 0)));
const ports = servers.map((server) => (server.address() as AddressInfo).port);
process.stdout.write(`${JSON.stringify({ ports })}\n`);

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
