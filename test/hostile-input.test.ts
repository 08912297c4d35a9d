import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect } from 'node:net';
import { backendsYaml, startBackends, type TestBackend } from './support/backends.js';
import { request } from './support/client.js';
import { startProxy } from './support/proxy.js';
import type { Limpet } from '../src/limpet.js';

let backends: TestBackend[] = [];
let proxy: Limpet;
let port: number;

beforeAll(async () => {
  backends = await startBackends(1);
  const started = await startProxy(`affinity: { by: ip }\n${backendsYaml(backends)}`);
  proxy = started.limpet;
  port = started.port;
});

afterAll(async () => {
  await proxy.close();
  await Promise.all(backends.map((b) => b.close()));
});

/** Sends raw bytes (without half-closing, which would abort the request) and returns whatever comes back until the proxy closes (or 3 s pass). */
function raw(bytes: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    socket.on('data', (c) => (reply += c.toString('latin1')));
    socket.on('close', () => resolve(reply));
    socket.on('error', () => resolve(reply));
    socket.setTimeout(3000, () => socket.destroy());
    socket.write(bytes);
  });
}

describe('hostile requests get a 4xx or a closed socket, never a forwarded request or a crash', () => {
  const cases: [string, string, RegExp][] = [
    ['both Content-Length and Transfer-Encoding', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['two different Content-Length values', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab', /^HTTP\/1\.1 400 /],
    ['an invalid chunk size', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n', /^(HTTP\/1\.1 400 |$)/],
    ['a control character in a header value', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['obsolete line folding', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['a header block over the size limit', `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, /^HTTP\/1\.1 431 /],
    ['garbage instead of a request line', 'HELLO THERE\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['a NUL byte in a header value', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['a bare CR inside a header value', 'GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rGET /smuggled HTTP/1.1\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['a bare LF ending a header line', 'GET / HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n', /^(HTTP\/1\.1 400 |HTTP\/1\.1 200 )/],
    ['two Host fields', 'GET /smuggled HTTP/1.1\r\nHost: good.example\r\nHost: evil.example\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['an absolute-form target naming another host than Host', 'GET http://evil.example/smuggled HTTP/1.1\r\nHost: good.example\r\n\r\n', /^HTTP\/1\.1 400 /],
    ['a Transfer-Encoding other than chunked', 'POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc', /^HTTP\/1\.1 400 /],
    ['a Content-Length with a sign', 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello', /^HTTP\/1\.1 400 /],
  ];
  for (const [name, bytes, expected] of cases) {
    it(name, async () => {
      const before = backends[0]!.seen.length;
      expect(await raw(bytes)).toMatch(expected);
      expect(backends[0]!.seen.slice(before).filter((r) => r.url.endsWith('/smuggled') || r.method === 'POST')).toEqual([]);
      // and the proxy still serves
      expect((await request(port)).status).toBe(200);
    });
  }
});

describe('absolute-form targets', () => {
  it('forwards one naming the same host as Host (default port or not) as a plain path', async () => {
    const before = backends[0]!.seen.length;
    expect(await raw('GET http://Good.Example:80/page?q=1 HTTP/1.1\r\nHost: good.example\r\nConnection: close\r\n\r\n')).toMatch(/^HTTP\/1\.1 200 /);
    const seen = backends[0]!.seen.slice(before);
    expect(seen.map((r) => [r.url, r.headers.host])).toEqual([['/page?q=1', 'good.example']]);
  });
});
