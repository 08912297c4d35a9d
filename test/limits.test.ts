import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import { backendsYaml, startBackend, type TestBackend } from './support/backends.js';
import { request, waitFor } from './support/client.js';
import { startProxy } from './support/proxy.js';
import { parseExposition, sample } from './support/exposition.js';
import { parseConfig, ConfigError } from '../src/config/load.js';
import { parseSize, formatSize } from '../src/config/size.js';
import type { Limpet } from '../src/limpet.js';

/** Answers with the byte count of the body it received, after reading all of it. */
let backend: TestBackend;
/** Bodies the backend finished reading, and requests whose body was cut off. */
let completeBodies = 0;
let abortedBodies = 0;

const LIMITS = `
limits: { maxHeaderSize: 2KB, maxHeaderCount: 20, maxUrlLength: 256B, maxBodySize: 1KB }
timeouts: { clientHeaders: 500ms, clientRequest: 1s, clientIdle: 600ms }`;

let proxy: Limpet;
let port: number;

beforeAll(async () => {
  backend = await startBackend('app-1', (req, res) => {
    let bytes = 0;
    req.on('data', (chunk: Buffer) => (bytes += chunk.length));
    req.on('aborted', () => abortedBodies++);
    req.on('end', () => {
      completeBodies++;
      res.end(String(bytes));
    });
  });
  ({ limpet: proxy, port } = await startProxy(`affinity: { by: ip }\n${LIMITS}\n${backendsYaml([backend])}`));
});

afterAll(async () => {
  await proxy.close();
  await backend.close();
});

/** Sends raw bytes (optionally more later) and collects what comes back until the proxy closes. */
function rawExchange(first: string): { socket: Socket; reply: Promise<string> } {
  const socket = connect(port, '127.0.0.1');
  socket.write(first);
  const reply = new Promise<string>((resolve) => {
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString('latin1')));
    socket.on('close', () => resolve(text));
    socket.on('error', () => resolve(text));
  });
  return { socket, reply };
}

function headers(count: number): Record<string, string> {
  return Object.fromEntries(Array.from({ length: count }, (_, i) => [`x-h${i}`, 'v']));
}

async function clientErrors(status: number): Promise<number> {
  const metrics = await request(proxy.adminAddress.port, { path: '/metrics' });
  const found = parseExposition(metrics.body).samples.find(
    (s) => s.name === 'limpet_requests_total' && s.labels.backend === 'none' && s.labels.code === String(status),
  );
  return found?.value ?? 0;
}

describe('header limits', () => {
  it('answers 431 to more header fields than limits.maxHeaderCount, and forwards a request at the limit', async () => {
    const before = backend.seen.length;
    // Node's client adds Host and Connection: 18 + 2 = 20 fields is at the limit.
    expect((await request(port, { headers: headers(18) })).status).toBe(200);
    const over = await request(port, { headers: headers(19) });
    expect(over.status).toBe(431);
    expect(over.body).toContain('Too many request header fields');
    expect(backend.seen.length).toBe(before + 1);
  });

  it('answers 431 to a head bigger than limits.maxHeaderSize', async () => {
    const { reply } = rawExchange(`GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(3000)}\r\n\r\n`);
    expect(await reply).toMatch(/^HTTP\/1\.1 431 /);
    expect((await request(port, { headers: { 'x-big': 'a'.repeat(1500) } })).status).toBe(200);
  });

  it('answers 414 to a request target longer than limits.maxUrlLength', async () => {
    expect((await request(port, { path: `/${'a'.repeat(255)}` })).status).toBe(200);
    const over = await request(port, { path: `/${'a'.repeat(256)}` });
    expect(over.status).toBe(414);
    expect(backend.seen.some((r) => r.url.length > 256)).toBe(false);
  });

  it('applies the same header limits to WebSocket upgrades', async () => {
    const fields = Object.entries(headers(30)).map(([k, v]) => `${k}: ${v}\r\n`).join('');
    const { reply } = rawExchange(`GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${fields}\r\n`);
    expect(await reply).toMatch(/^HTTP\/1\.1 431 /);
  });
});

describe('body limit', () => {
  it('answers 413 to a Content-Length over limits.maxBodySize without forwarding, and keeps the connection usable', async () => {
    const before = backend.seen.length;
    const { socket, reply } = rawExchange(`POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 2048\r\n\r\n${'b'.repeat(2048)}`);
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString('latin1')));
    await waitFor(() => /\r\n\r\nRequest body too large\n$/.test(text), 10_000, 'the 413 answer');
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    // The unread body was small enough to discard, so the same connection takes the next request.
    socket.write('GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
    expect(await reply).toMatch(/HTTP\/1\.1 200 [\s\S]*\r\n\r\n0$/);
    expect(backend.seen.slice(before).map((r) => r.url)).toEqual(['/after']);
  });

  it('forwards a body at the limit whole', async () => {
    const ok = await request(port, { method: 'POST', body: 'c'.repeat(1024) });
    expect(ok.status).toBe(200);
    expect(ok.body).toBe('1024');
  });

  it('answers 413 to a chunked body that grows past the limit, and aborts the forwarded request', async () => {
    const abortedBefore = abortedBodies;
    const result = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/chunked', agent: false }, (res) => {
        let body = '';
        res.on('data', (chunk) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      // Chunks of 300 bytes with no Content-Length: only counting can catch the fourth one.
      let sent = 0;
      const send = (): void => {
        if (sent++ < 8) req.write('d'.repeat(300), () => setImmediate(send));
        else req.end();
      };
      send();
    });
    expect(result.status).toBe(413);
    expect(result.body).toBe('Request body too large\n');
    await waitFor(() => abortedBodies > abortedBefore, 10_000, 'the backend to see its request aborted');
    expect((await request(port)).status).toBe(200);
  });

  it('refuses an over-limit body announced with Expect: 100-continue before the client sends it', async () => {
    const { reply } = rawExchange('POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 4096\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
    const text = await reply;
    expect(text).toMatch(/^HTTP\/1\.1 413 /);
    expect(text).not.toContain('100 Continue');
  });

  it('still says 100 Continue to a body within the limit', async () => {
    const { socket, reply } = rawExchange('POST /expect-ok HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
    let text = '';
    socket.on('data', (chunk) => (text += chunk.toString('latin1')));
    await waitFor(() => text.startsWith('HTTP/1.1 100 Continue'), 10_000, '100 Continue');
    socket.write('hello');
    expect(await reply).toMatch(/HTTP\/1\.1 200 [\s\S]*\r\n\r\n5$/);
  });
});

describe('client timeouts', () => {
  it('answers 408 and closes when headers do not arrive within timeouts.clientHeaders (slowloris)', async () => {
    const before = await clientErrors(408);
    const { socket, reply } = rawExchange('GET / HTTP/1.1\r\nHost: x\r\n');
    // Trickle header lines, as a slowloris client does, until the proxy gives up.
    const trickle = setInterval(() => socket.writable && socket.write('X-Slow: 1\r\n'), 100);
    const text = await reply;
    clearInterval(trickle);
    expect(text).toMatch(/^HTTP\/1\.1 408 /);
    expect(await clientErrors(408)).toBeGreaterThan(before);
  });

  it('cuts a request whose body does not arrive within timeouts.clientRequest, and aborts it upstream', async () => {
    const abortedBefore = abortedBodies;
    const { socket, reply } = rawExchange('POST /slow-body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc');
    const trickle = setInterval(() => socket.writable && socket.write('d'), 100);
    const text = await reply;
    clearInterval(trickle);
    expect(text).toMatch(/^(HTTP\/1\.1 408 |$)/);
    await waitFor(() => abortedBodies > abortedBefore, 10_000, 'the backend to see its request aborted');
  });

  it('closes a keep-alive connection idle for timeouts.clientIdle', async () => {
    const { reply } = rawExchange('GET /idle HTTP/1.1\r\nHost: x\r\n\r\n');
    // The proxy closes the idle connection itself; the answer came first.
    expect(await reply).toMatch(/^HTTP\/1\.1 200 /);
  });
});

describe('maximum connections', () => {
  it('closes connections beyond limits.maxConnections on arrival and counts them', async () => {
    const small = await startProxy(`affinity: { by: ip }\nlimits: { maxConnections: 2 }\n${backendsYaml([backend])}`);
    try {
      const open = [connect(small.port, '127.0.0.1'), connect(small.port, '127.0.0.1')];
      await Promise.all(open.map((s) => new Promise((resolve) => s.once('connect', resolve))));
      await waitFor(() => small.limpet.metrics.clientConnections === 2, 10_000, 'two open connections');
      const third = connect(small.port, '127.0.0.1');
      const closed = await new Promise<string>((resolve) => {
        let text = '';
        third.on('data', (chunk) => (text += chunk));
        third.on('close', () => resolve(text));
        third.on('error', () => resolve(text));
        third.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      });
      expect(closed).toBe('');
      const metrics = await request(small.limpet.adminAddress.port, { path: '/metrics' });
      const exposition = parseExposition(metrics.body);
      expect(sample(exposition, 'limpet_client_connections_dropped_total', {})).toBe(1);
      expect(sample(exposition, 'limpet_client_connections', {})).toBe(2);
      // A freed slot takes a new connection.
      open[0]!.destroy();
      await waitFor(() => small.limpet.metrics.clientConnections === 1, 10_000, 'the slot to free');
      expect((await request(small.port)).status).toBe(200);
      open[1]!.destroy();
    } finally {
      await small.limpet.close();
    }
  });
});

describe('limits reload live', () => {
  it('takes a new maxHeaderCount and maxBodySize on reload, and reports maxHeaderSize as needing a restart', async () => {
    const live = await startProxy(`affinity: { by: ip }\n${backendsYaml([backend])}`);
    try {
      expect((await request(live.port, { headers: headers(10) })).status).toBe(200);
      expect((await request(live.port, { method: 'POST', body: 'e'.repeat(100) })).status).toBe(200);
      const text = `listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\naffinity: { by: ip }\nlimits: { maxHeaderCount: 5, maxBodySize: 50B, maxHeaderSize: 8KB }\n${backendsYaml([backend])}`;
      const needsRestart = live.limpet.reload(parseConfig(text, 'test.yaml', {}));
      expect(needsRestart).toEqual(['limits.maxHeaderSize']);
      expect((await request(live.port, { headers: headers(10) })).status).toBe(431);
      expect((await request(live.port, { method: 'POST', body: 'e'.repeat(100) })).status).toBe(413);
    } finally {
      await live.limpet.close();
    }
  });
});

describe('size values in the config', () => {
  it('reads units as 1024-based and plain numbers as bytes', () => {
    expect(parseSize('16KB')).toBe(16_384);
    expect(parseSize('10MB')).toBe(10 * 1024 * 1024);
    expect(parseSize('1GB')).toBe(1024 ** 3);
    expect(parseSize('512B')).toBe(512);
    expect(parseSize(2048)).toBe(2048);
    expect(formatSize(16_384)).toBe('16KB');
    expect(formatSize(1000)).toBe('1000B');
  });

  it('reports a wrong size with the key, the line and what to write', () => {
    const text = 'limits:\n  maxBodySize: 10mb\n  maxHeaderSize: 512B\n  maxUrlLength: 0\nbackends: [{ id: a, url: "http://127.0.0.1:1" }]\n';
    let error: unknown;
    try {
      parseConfig(text, 'limits.yaml', {});
    } catch (problem) {
      error = problem;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message).toMatch(/limits\.yaml:2:\d+: limits\.maxBodySize: .*"10mb" \(write "10MB"\)/);
    expect(message).toMatch(/limits\.yaml:3:\d+: limits\.maxHeaderSize: must be at least 1KB/);
    // 0 turns off only the limits that say so (maxBodySize, maxConnections), never the URL length.
    expect(message).toMatch(/limits\.yaml:4:\d+: limits\.maxUrlLength: must be at least 64B/);
  });
});
