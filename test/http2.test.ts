import { describe, expect, it } from 'vitest';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { constants, type ClientHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { answerWithId, backendsYaml, startBackend, startBackends, type BackendHandler } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { waitFor } from './support/client.js';
import { parseExposition, sample } from './support/exposition.js';
import { curl, h2Connect, h2Request, rawHttp2Request } from './support/h2-client.js';
import { parseConfig } from '../src/config/load.js';
import { ResetBudget } from '../src/runtime/h2-listener.js';
import { startProxy } from './support/proxy.js';
import { selfSignedCertificate } from './support/tls.js';

const cleanup = useCleanup();
const certificate = selfSignedCertificate();
const TLS = `tls: { cert: "${certificate.cert}", key: "${certificate.key}" }`;
const QUIET_HEALTH = 'healthCheck: { interval: 1h }';

async function proxyOver(yaml: string, level: 'warn' | 'info' = 'warn') {
  const started = await startProxy(`${TLS}\n${QUIET_HEALTH}\n${yaml}`, level);
  cleanup.add(started.limpet);
  return started;
}

async function session(port: number): Promise<ClientHttp2Session> {
  return cleanup.add(await h2Connect(port));
}

async function metric(started: Awaited<ReturnType<typeof proxyOver>>, name: string, labels: Record<string, string> = {}): Promise<number> {
  return sample(parseExposition(await started.limpet.metrics.exposition()), name, labels);
}

/** The `name=value` of the affinity cookie in a response's Set-Cookie fields. */
function affinityCookie(headers: Record<string, unknown>): string | undefined {
  const lines = (headers['set-cookie'] as string[] | undefined) ?? [];
  return lines.find((line) => line.startsWith('limpet='))?.split(';', 1)[0];
}

/** A backend that answers with what it saw: method, url, raw header fields, the body's length and framing. */
const echoHead: BackendHandler = (req, res, id) => {
  let length = 0;
  req.on('data', (chunk: Buffer) => (length += chunk.length));
  req.on('end', () => {
    const body = JSON.stringify({ method: req.method, url: req.url, rawHeaders: req.rawHeaders, length, chunked: req.headers['transfer-encoding'] === 'chunked' });
    // Connection and a chunked body: an HTTP/1.1 answer whose framing must not reach an HTTP/2 client.
    res.writeHead(200, { 'content-type': 'application/json', 'x-backend': id, connection: 'keep-alive' });
    res.end(body);
  });
};

describe('HTTP/2 on the TLS listener', () => {
  it('curl --http2 gets h2; the backend gets HTTP/1.1 with Host from :authority, one Cookie field, no pseudo-header fields', async () => {
    const [backend] = cleanup.add(await Promise.all([startBackend('app-1', echoHead)]));
    const started = await proxyOver(`affinity: { by: ip }\n${backendsYaml([backend!])}`);
    const url = `https://127.0.0.1:${started.port}/shop?item=1`;
    const res = await curl(url, ['--http2', '-H', 'cookie: a=1', '-H', 'cookie: b=2', '-H', 'x-app: kept']);
    expect(res.httpVersion).toBe('2');
    expect(res.status).toBe(200);
    // The backend's Connection and chunked framing stay behind; names arrive lower-case.
    const names = res.headers.map(([name]) => name);
    expect(names).not.toContain('connection');
    expect(names).not.toContain('transfer-encoding');
    expect(res.headers).toContainEqual(['x-backend', 'app-1']);
    const seen = JSON.parse(res.body) as { url: string; rawHeaders: string[] };
    expect(seen.url).toBe('/shop?item=1');
    const fields = new Map<string, string[]>();
    for (let i = 0; i < seen.rawHeaders.length; i += 2) fields.set(seen.rawHeaders[i]!.toLowerCase(), [...(fields.get(seen.rawHeaders[i]!.toLowerCase()) ?? []), seen.rawHeaders[i + 1]!]);
    expect([...fields.keys()].filter((name) => name.startsWith(':'))).toEqual([]);
    expect(fields.get('host')).toEqual([`127.0.0.1:${started.port}`]);
    expect(fields.get('cookie')).toEqual(['a=1; b=2']);
    expect(fields.get('x-app')).toEqual(['kept']);
    expect(fields.get('x-forwarded-proto')).toEqual(['https']);
    expect(fields.get('x-forwarded-host')).toEqual([`127.0.0.1:${started.port}`]);
    expect(fields.get('via')).toEqual(['2 limpet']);

    // The same listener still speaks HTTP/1.1 to a client that asks for it.
    const http1 = await curl(url, ['--http1.1']);
    expect([http1.httpVersion, http1.status]).toEqual(['1.1', 200]);
    expect(JSON.parse(http1.body).rawHeaders).toContain('1.1 limpet');
  });

  it('tls.http2: false offers only HTTP/1.1', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`tls: { cert: "${certificate.cert}", key: "${certificate.key}", http2: false }\n${QUIET_HEALTH}\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const res = await curl(`https://127.0.0.1:${started.port}/`, ['--http2']);
    expect([res.httpVersion, res.status]).toEqual(['1.1', 200]);
  });

  it("pins one connection's concurrent cookie-less requests to one new backend with one cookie; another connection is another client", async () => {
    const backends = cleanup.add(await startBackends(3, answerWithId));
    const started = await proxyOver(`affinity: { by: cookie, cookie: { secret: s } }\n${backendsYaml(backends)}`);
    const first = await session(started.port);
    // Sent at once, before any answer (and so any Set-Cookie) is back: round-robin alone would spread them over all three.
    const responses = await Promise.all(Array.from({ length: 30 }, (_, i) => h2Request(first, { ':path': `/asset/${i}` })));
    expect(new Set(responses.map((r) => r.status))).toEqual(new Set([200]));
    const servedBy = new Set(responses.map((r) => r.headers['x-backend']));
    const cookies = new Set(responses.map((r) => affinityCookie(r.headers)));
    expect(servedBy.size).toBe(1);
    expect(cookies.size).toBe(1);
    expect([...cookies][0]).toMatch(/^limpet=/);
    const pinned = [...servedBy][0];

    // Once the browser has the cookie it sends it; requests with it stay and get no new cookie.
    const withCookie = await h2Request(first, { ':path': '/next', cookie: [...cookies][0]! });
    expect(withCookie.headers['x-backend']).toBe(pinned);
    expect(affinityCookie(withCookie.headers)).toBeUndefined();

    // A new connection's cookie-less requests are a new client: a new nonce (round-robin moves it on).
    const second = await session(started.port);
    const other = await Promise.all(Array.from({ length: 5 }, () => h2Request(second, {})));
    expect(new Set(other.map((r) => affinityCookie(r.headers))).size).toBe(1);
    expect(affinityCookie(other[0]!.headers)).not.toBe([...cookies][0]);
    expect(other[0]!.headers['x-backend']).not.toBe(pinned);
  });

  it('joins cookies split over several fields before affinity reads them, and the backend gets them as one field', async () => {
    const backends = cleanup.add(await Promise.all(['app-1', 'app-2', 'app-3'].map((id) => startBackend(id, echoHead))));
    const started = await proxyOver(`affinity: { by: cookie, cookie: { secret: s } }\n${backendsYaml(backends)}`);
    const pin = await h2Request(await session(started.port), {});
    const cookie = affinityCookie(pin.headers)!;
    // Fresh connections, so nothing but the split cookie can keep the client where it is.
    for (let i = 0; i < 4; i++) {
      const res = await h2Request(await session(started.port), { cookie: ['theme=dark', cookie, 'lang=en'] });
      expect(res.headers['x-backend']).toBe(pin.headers['x-backend']);
      expect(affinityCookie(res.headers)).toBeUndefined();
      const raw = (JSON.parse(res.body) as { rawHeaders: string[] }).rawHeaders;
      expect(raw.filter((_, j) => j % 2 === 0 && raw[j]!.toLowerCase() === 'cookie')).toHaveLength(1);
      expect(raw[raw.findIndex((name) => name.toLowerCase() === 'cookie') + 1]).toBe(`theme=dark; ${cookie}; lang=en`);
    }
  });

  it('applies the HTTP/1.1 limits to each stream: header list size and count (431), URL length (414), body size (413)', async () => {
    const [backend] = cleanup.add(await Promise.all([startBackend('app-1', echoHead)]));
    const started = await proxyOver(`limits: { maxHeaderSize: 4KB, maxHeaderCount: 20, maxUrlLength: 100, maxBodySize: 1KB }\n${backendsYaml([backend!])}`);
    const client = await session(started.port);
    expect((await h2Request(client, { 'x-big': 'a'.repeat(5000) })).status).toBe(431);
    const fields = Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`x-field-${i}`, '1']));
    expect((await h2Request(client, fields)).status).toBe(431);
    // Exactly the limit: the pseudo-header fields do not count as header fields.
    const twenty = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`x-field-${i}`, '1']));
    expect((await h2Request(client, twenty)).status).toBe(200);
    expect((await h2Request(client, { ':path': `/${'a'.repeat(120)}` })).status).toBe(414);
    expect((await h2Request(client, { ':method': 'POST', 'content-length': '2000' }, 'x'.repeat(2000))).status).toBe(413);
    // No Content-Length: the body is counted as it streams.
    expect((await h2Request(client, { ':method': 'POST' }, 'x'.repeat(2000))).status).toBe(413);
    // The connection is fine after all that.
    expect((await h2Request(client, {})).status).toBe(200);
    expect(backend!.seen.length).toBe(2);
  });

  it('forwards a body without Content-Length chunked, one with it as is', async () => {
    const [backend] = cleanup.add(await Promise.all([startBackend('app-1', echoHead)]));
    const started = await proxyOver(backendsYaml([backend!]));
    const client = await session(started.port);
    const unsized = JSON.parse((await h2Request(client, { ':method': 'POST' }, 'y'.repeat(100_000))).body);
    expect(unsized).toMatchObject({ method: 'POST', length: 100_000, chunked: true });
    const sized = JSON.parse((await h2Request(client, { ':method': 'PUT', 'content-length': '5' }, 'hello')).body);
    expect(sized).toMatchObject({ method: 'PUT', length: 5, chunked: false });
  });

  it('refuses a Host that names another authority than :authority (400), and CONNECT (501)', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await proxyOver(backendsYaml(backends));
    const client = await session(started.port);
    const authority = `127.0.0.1:${started.port}`;
    expect((await h2Request(client, { ':authority': authority, host: 'other.example' })).status).toBe(400);
    expect((await h2Request(client, { ':authority': authority, host: authority.toUpperCase() })).status).toBe(200);
    expect((await h2Request(client, { ':method': 'CONNECT', ':authority': 'internal.example:22', ':path': undefined })).status).toBe(501);
    expect(backends[0]!.seen).toHaveLength(1);
  });

  it('refuses connection-specific fields before any backend sees them (RFC 9113 §8.2.2), and takes te: trailers', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await proxyOver(backendsYaml(backends));
    const malformed: [string, string][] = [['connection', 'keep-alive'], ['keep-alive', '5'], ['proxy-connection', 'x'], ['transfer-encoding', 'chunked'], ['upgrade', 'websocket'], ['te', 'gzip']];
    for (const field of malformed) expect(await rawHttp2Request(started.port, [field]), field.join(': ')).toEqual([`reset ${constants.NGHTTP2_PROTOCOL_ERROR}`]);
    expect(backends[0]!.seen).toHaveLength(0);
    expect(await rawHttp2Request(started.port, [['te', 'trailers']])).toEqual(['status 200', 'end']);
    expect(backends[0]!.seen).toHaveLength(1);
    expect(backends[0]!.seen[0]!.headers.te).toBeUndefined();
  });

  it('relays 103 Early Hints as an interim response, and answers 502 for a response head HTTP/2 cannot carry', async () => {
    const backend = await startBackend('app-1', (req: IncomingMessage, res: ServerResponse) => {
      if (req.url === '/hints') {
        res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' });
        res.end('ok');
        return;
      }
      // A repeated field HTTP/2 (Node) takes once only; a coding that needs chunked framing.
      if (req.url === '/twice') res.setHeader('content-type', ['text/plain', 'text/html']);
      else res.setHeader('transfer-encoding', 'gzip, chunked');
      res.end('x');
    });
    cleanup.add(backend);
    const started = await proxyOver(backendsYaml([backend]));
    const client = await session(started.port);
    const hinted = await h2Request(client, { ':path': '/hints' });
    expect(hinted.status).toBe(200);
    expect(hinted.interim.map((head) => [head[':status'], head.link])).toEqual([[103, '</style.css>; rel=preload; as=style']]);
    expect((await h2Request(client, { ':path': '/twice' })).status).toBe(502);
    expect((await h2Request(client, { ':path': '/coded' })).status).toBe(502);
  });

  it('lets the backend decide on Expect: 100-continue', async () => {
    const backend = createServer((req, res) => {
      let length = 0;
      req.on('data', (chunk: Buffer) => (length += chunk.length));
      req.on('end', () => res.end(String(length)));
    });
    backend.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
      if (req.url === '/refuse') return void res.writeHead(417).end();
      res.writeContinue();
      backend.emit('request', req, res);
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    cleanup.add(() => new Promise((resolve) => backend.close(resolve)));
    cleanup.add(() => backend.closeAllConnections());
    const started = await proxyOver(`backends: [{ id: app-1, url: "http://127.0.0.1:${(backend.address() as AddressInfo).port}" }]`);
    const client = await session(started.port);
    // The body is sent only once the proxy relays the backend's 100.
    const upload = (path: string) =>
      new Promise<{ continued: boolean; status: number; body: string }>((resolve, reject) => {
        const stream = client.request({ ':method': 'POST', ':path': path, expect: '100-continue', 'content-length': '4' }, { endStream: false });
        let continued = false;
        let status = 0;
        let body = '';
        stream.on('continue', () => {
          continued = true;
          stream.end('data');
        });
        stream.on('response', (head) => (status = Number(head[':status'])));
        stream.on('data', (chunk: Buffer) => (body += chunk.toString()));
        stream.on('close', () => resolve({ continued, status, body }));
        stream.on('error', reject);
      });
    expect(await upload('/upload')).toEqual({ continued: true, status: 200, body: '4' });
    expect(await upload('/refuse')).toEqual({ continued: false, status: 417, body: '' });
  });

  it('offers the stream limit in its SETTINGS and closes a connection idle for timeouts.clientIdle with GOAWAY', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await proxyOver(`limits: { maxConcurrentStreams: 7 }\ntimeouts: { clientIdle: 1s }\n${backendsYaml(backends)}`);
    const client = await session(started.port);
    await waitFor(() => client.remoteSettings.maxConcurrentStreams === 7, 5_000, 'the server SETTINGS');
    const goaway = new Promise<number>((resolve) => client.once('goaway', resolve));
    expect((await h2Request(client, {})).status).toBe(200);
    expect(await goaway).toBe(constants.NGHTTP2_NO_ERROR);
    await waitFor(() => client.closed || client.destroyed, 5_000, 'the idle connection to close');
    await waitFor(async () => (await metric(started, 'limpet_http2_connections')) === 0, 5_000, 'the proxy to count it closed');
  });

  it('closes each connection that resets streams as fast as it opens them (rapid reset) with ENHANCE_YOUR_CALM, and serves others meanwhile', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await proxyOver(`limits: { maxConcurrentStreams: 20 }\n${backendsYaml(backends)}`);
    const bystander = await session(started.port);
    let bystanderDone = false;
    /** Per flooding connection: the streams it opened and the GOAWAY code it got (-1: closed without one). */
    const floods: { opened: number; code: number }[] = [];
    // The attacker opens and cancels streams in bursts (a ping between bursts, so it reads what the
    // proxy says) and reconnects whenever it is thrown out, until the bystander is done.
    const attack = (async () => {
      while (!bystanderDone) {
        const flooder = await h2Connect(started.port);
        const flood = { opened: 0, code: -1 };
        floods.push(flood);
        flooder.once('goaway', (code: number) => (flood.code = code));
        while (!flooder.closed && !flooder.destroyed && flood.opened < 5_000) {
          for (let i = 0; i < 20; i++) {
            const stream = flooder.request({ ':path': `/flood/${flood.opened++}` });
            stream.on('error', () => {});
            stream.close(constants.NGHTTP2_CANCEL);
          }
          await new Promise<void>((resolve) => {
            if (!flooder.ping(() => resolve())) resolve();
          });
        }
        flooder.destroy();
      }
    })();
    // Another client's requests, one after another while the flood runs: every one is answered.
    const served: number[] = [];
    try {
      await waitFor(() => floods.length > 0 && floods[0]!.opened > 0, 10_000, 'the flood to start');
      while (served.length < 20) served.push((await h2Request(bystander, { ':path': '/bystander' })).status);
    } finally {
      bystanderDone = true;
      await attack;
    }
    expect(served).toEqual(Array(20).fill(200));
    // Every flooding connection was thrown out with ENHANCE_YOUR_CALM once it had spent its budget of
    // resets (twice the 20 concurrent streams) and what it had in flight: not after thousands.
    const thrownOut = floods.filter((flood) => flood.code !== -1 || flood.opened > 0);
    expect(thrownOut.map((flood) => flood.code)).toEqual(Array(thrownOut.length).fill(constants.NGHTTP2_ENHANCE_YOUR_CALM));
    for (const flood of thrownOut) expect(flood.opened).toBeLessThan(200);
    expect(await metric(started, 'limpet_http2_reset_floods_total')).toBe(thrownOut.length);
    expect(await metric(started, 'limpet_http2_streams_reset_total')).toBeGreaterThanOrEqual(40 * thrownOut.length);
    expect(started.logs.lines.some((line) => line.msg === 'HTTP/2 connection closed: too many streams reset (rapid reset)')).toBe(true);
    // The bystander's connection is untouched and the proxy takes new ones.
    expect((await h2Request(bystander, {})).status).toBe(200);
    expect((await h2Request(await session(started.port), {})).status).toBe(200);
  });

  it('on shutdown sends GOAWAY and lets an open stream finish', async () => {
    let release: () => void = () => {};
    const released = new Promise<void>((resolve) => (release = resolve));
    const backend = cleanup.add(
      await startBackend('app-1', (req, res, id) => {
        if (req.url !== '/slow') return answerWithId(req, res, id);
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('first half, ');
        void released.then(() => res.end('second half'));
      }),
    );
    const started = await proxyOver(backendsYaml([backend]));
    const client = await session(started.port);
    const goaway = new Promise<number>((resolve) => client.once('goaway', resolve));
    const slow = h2Request(client, { ':path': '/slow' });
    await waitFor(() => backend.seen.length === 1, 5_000, 'the slow request at the backend');
    const stopped = started.limpet.close();
    expect(await goaway).toBe(constants.NGHTTP2_NO_ERROR);
    // No new stream on a connection that was told to go away.
    await expect(h2Request(client, {})).rejects.toThrow();
    release();
    const res = await slow;
    expect([res.status, res.body]).toEqual([200, 'first half, second half']);
    await stopped;
  });

  it('keeps WebSockets working over HTTP/1.1 on the same listener', async () => {
    const backend = createServer((_req, res) => res.end());
    backend.on('upgrade', (_req, socket) => {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
      socket.on('data', (chunk: Buffer) => socket.write(chunk));
      // The server keeps half-open sockets; this one closes when the proxy closes its side.
      socket.on('end', () => socket.destroy());
    });
    await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
    cleanup.add(() => new Promise((resolve) => backend.close(resolve)));
    cleanup.add(() => backend.closeAllConnections());
    const started = await proxyOver(`affinity: { by: cookie, cookie: { secret: s } }\nbackends: [{ id: ws, url: "http://127.0.0.1:${(backend.address() as AddressInfo).port}" }]`);
    // What a browser does for wss:// beside an h2 connection: a connection of its own, offering http/1.1.
    const socket = tlsConnect({ host: '127.0.0.1', port: started.port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    cleanup.add(() => socket.destroy());
    let received = '';
    socket.on('data', (chunk: Buffer) => (received += chunk.toString('latin1')));
    await new Promise<void>((resolve) => socket.once('secureConnect', resolve));
    expect(socket.alpnProtocol).toBe('http/1.1');
    socket.write('GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    await waitFor(() => received.includes('\r\n\r\n'), 5_000, 'the 101');
    expect(received).toMatch(/^HTTP\/1\.1 101 /);
    expect(received).toMatch(/\r\nSet-Cookie: limpet=/);
    const head = received.length;
    socket.write('echo me');
    await waitFor(() => received.slice(head) === 'echo me', 5_000, 'the echo through the tunnel');
  });

  it('relays a large body intact through HTTP/2 flow control, and a HEAD answer without one', async () => {
    const large = Buffer.alloc(3 * 1024 * 1024, 'abcdefghijklmnopqrstuvwxyz');
    const backend = cleanup.add(
      await startBackend('app-1', (req, res) => {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': large.length });
        res.end(req.method === 'HEAD' ? undefined : large);
      }),
    );
    const started = await proxyOver(backendsYaml([backend]));
    const client = await session(started.port);
    const [a, b] = await Promise.all([h2Request(client, { ':path': '/a' }), h2Request(client, { ':path': '/b' })]);
    for (const res of [a, b]) expect(res.body === large.toString('utf8')).toBe(true);
    const head = await h2Request(client, { ':method': 'HEAD' });
    expect([head.status, head.headers['content-length'], head.body]).toEqual([200, String(large.length), '']);
  });

  it('gives a stream whose body does not arrive within timeouts.clientRequest 408, and aborts its upstream request', async () => {
    let aborted = 0;
    const backend = cleanup.add(
      await startBackend('app-1', (req, res, id) => {
        if (req.url !== '/upload') return answerWithId(req, res, id);
        req.on('data', () => {});
        req.on('error', () => {});
        res.on('close', () => {
          if (!res.writableFinished) aborted++;
        });
      }),
    );
    const started = await proxyOver(`timeouts: { clientRequest: 1s }\n${backendsYaml([backend])}`);
    const client = await session(started.port);
    const answer = await new Promise<number>((resolve, reject) => {
      const stream = client.request({ ':method': 'POST', ':path': '/upload' }, { endStream: false });
      stream.write('the first part, and then nothing');
      stream.on('response', (head) => {
        stream.resume();
        resolve(Number(head[':status']));
      });
      stream.on('error', reject);
    });
    expect(answer).toBe(408);
    await waitFor(() => aborted === 1, 5_000, 'the upstream request to be aborted');
    // Only that stream: the connection serves the next request.
    expect((await h2Request(client, {})).status).toBe(200);
  });

  it('cuts off a stream whose client takes no bytes for timeouts.clientSend, and aborts its upstream request; the connection lives on', async () => {
    let aborted = false;
    const backend = cleanup.add(
      await startBackend('app-1', (req, res, id) => {
        if (req.url !== '/endless') return answerWithId(req, res, id);
        res.writeHead(200, { 'content-type': 'application/octet-stream' });
        const chunk = Buffer.alloc(64 * 1024, 'x');
        const pump = () => {
          while (res.write(chunk));
        };
        res.on('drain', pump);
        res.on('close', () => (aborted = !res.writableFinished));
        pump();
      }),
    );
    const started = await proxyOver(`timeouts: { clientSend: 1s }\n${backendsYaml([backend])}`);
    const client = await session(started.port);
    const stream = client.request({ ':path': '/endless' });
    const reset = new Promise<number>((resolve) => stream.on('close', () => resolve(stream.rstCode)));
    stream.on('error', () => {});
    // The response head comes, then the client reads nothing: its stream window stays shut.
    await new Promise((resolve) => stream.once('response', resolve));
    stream.pause();
    expect(await reset).toBe(constants.NGHTTP2_CANCEL);
    await waitFor(() => aborted, 5_000, 'the upstream request to be aborted');
    expect((await h2Request(client, {})).status).toBe(200);
  });

  it('offers a reloaded stream limit to connections opened after the reload; open ones keep theirs', async () => {
    const backends = cleanup.add(await startBackends(1));
    const yaml = (streams: number) => `${TLS}\n${QUIET_HEALTH}\nlimits: { maxConcurrentStreams: ${streams} }\n${backendsYaml(backends)}`;
    const started = await proxyOver(`limits: { maxConcurrentStreams: 7 }\n${backendsYaml(backends)}`);
    const before = await session(started.port);
    await waitFor(() => before.remoteSettings.maxConcurrentStreams === 7, 5_000, 'the first SETTINGS');
    expect(started.limpet.reload(parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n${yaml(9)}`, 'test.yaml', {}))).toEqual([]);
    const after = await session(started.port);
    await waitFor(() => after.remoteSettings.maxConcurrentStreams === 9, 5_000, 'the new SETTINGS');
    expect(before.remoteSettings.maxConcurrentStreams).toBe(7);
    expect((await h2Request(before, {})).status).toBe(200);
    expect((await h2Request(after, {})).status).toBe(200);
  });

  it('logs HTTP/2 requests in the access log and counts them', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await proxyOver(`log: { access: true }\n${backendsYaml(backends)}`, 'info');
    const client = await session(started.port);
    await Promise.all([h2Request(client, { ':path': '/a' }), h2Request(client, { ':path': '/b' })]);
    const logged = started.logs.lines.filter((line) => line.msg === 'request');
    expect(logged.map((line) => [line.path, line.status, line.http, line.client]).sort()).toEqual([
      ['/a', 200, '2.0', '127.0.0.1'],
      ['/b', 200, '2.0', '127.0.0.1'],
    ]);
    expect(await metric(started, 'limpet_http2_requests_total')).toBe(2);
    expect(await metric(started, 'limpet_requests_total', { backend: 'app-1', code: '200' })).toBe(2);
    expect(await metric(started, 'limpet_http2_connections')).toBe(1);
  });
});

describe('the reset budget of an HTTP/2 connection', () => {
  it('allows a burst of its capacity, then refills at its capacity per 10 s', () => {
    const budget = new ResetBudget(4, 0);
    expect([1, 2, 3, 4, 5].map(() => budget.take(0))).toEqual([true, true, true, true, false]);
    // A quarter of the window refills a quarter of the capacity: one reset.
    expect([budget.take(2_500), budget.take(2_500)]).toEqual([true, false]);
    // Never more than the capacity, however long the connection was quiet.
    const rested = [1, 2, 3, 4, 5].map(() => budget.take(3_600_000));
    expect(rested).toEqual([true, true, true, true, false]);
  });
});
