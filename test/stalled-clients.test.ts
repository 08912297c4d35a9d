import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { canDropPackets, dropPacketsOf, heldSockets } from '../bench/vanishing-peers.js';
import { request, waitFor } from './support/client.js';
import { parseExposition } from './support/exposition.js';
import { CI_CANNOT_RUN } from './support/fail-on-skip-reporter.js';
import { startProxy } from './support/proxy.js';
import type { Limpet } from '../src/limpet.js';
import { ClientSendWatch } from '../src/proxy/client-send.js';

// Clients that stop taking what the proxy sends them, or vanish without a FIN: the proxy must not
// hold their sockets, backend connections or in-flight slots. Each test talks from its own loopback
// address, so the kernel's TCP table tells which of the proxy's sockets are that client's.

const CHUNK = Buffer.alloc(64 * 1024, 0x61);
let downloadsAborted = 0;
let tunnelsClosed = 0;

/** Writes `bytes` (Infinity: without end) as fast as `out` takes them, then calls `done`. */
function pump(out: Writable, bytes: number, done: () => void): void {
  let left = bytes;
  const more = () => {
    while (left > 0) {
      const chunk = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= chunk.length;
      if (!out.write(chunk)) return;
    }
    out.off('drain', more);
    done();
  };
  out.on('drain', more);
  more();
}

function requestedBytes(url: string | undefined): number {
  const bytes = new URL(url ?? '/', 'http://x').searchParams.get('bytes');
  return bytes === null ? Infinity : Number(bytes);
}

let backend: Server;
let backendUrl: string;
let proxy: Limpet;
let port: number;

beforeAll(async () => {
  // GET /download[?bytes=N]: a body of N bytes (or without end). An upgrade to /socket: a 101 and
  // one WebSocket frame of N bytes (or without end); to /refuse: a 403.
  backend = createServer((req, res: ServerResponse) => {
    if (!req.url?.startsWith('/download')) return void res.end('ok');
    res.on('close', () => !res.writableFinished && downloadsAborted++);
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    pump(res, requestedBytes(req.url), () => res.end());
  });
  backend.on('upgrade', (req, socket: Socket) => {
    socket.on('error', () => {});
    if (req.url === '/refuse') return void socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n');
    socket.on('close', () => tunnelsClosed++);
    // Reads what comes (nothing), and closes when the proxy closes its side of the tunnel.
    socket.on('end', () => socket.destroy()).resume();
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n');
    const bytes = requestedBytes(req.url);
    const header = Buffer.from([0x82, 127, 0, 0, 0, 0, 0, 0, 0, 0]);
    header.writeBigUInt64BE(BigInt(Number.isFinite(bytes) ? bytes : 2 ** 62), 2);
    socket.write(header);
    pump(socket, bytes, () => {});
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  backendUrl = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  ({ limpet: proxy, port } = await startProxy(`affinity: { by: ip }\ntimeouts: { clientHeaders: 500ms, clientSend: 500ms }\nbackends: [{ id: app, url: "${backendUrl}" }]`));
});

afterAll(async () => {
  await proxy.close();
  backend.closeAllConnections();
  await new Promise((resolve) => backend.close(resolve));
});

/** The proxy's sockets to clients from `address`, orphans included. */
const proxySocketsTo = (address: string, proxyPort = port) => heldSockets(process.pid, proxyPort, address).kernel;

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const exposition = parseExposition((await request(proxy.adminAddress.port, { path: '/metrics' })).body);
  return exposition.samples
    .filter((s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value))
    .reduce((sum, s) => sum + s.value, 0);
}

/** A client from `address` that sends `bytes`, keeps the first 64 KB that come back and counts the rest. */
function client(
  address: string,
  bytes: string,
  options: { allowHalfOpen?: boolean; port?: number } = {},
): { socket: Socket; received: () => string; bodyBytes: () => number } {
  const socket = connect({ port: options.port ?? port, host: '127.0.0.1', localAddress: address, allowHalfOpen: options.allowHalfOpen ?? false });
  let text = '';
  let total = 0;
  socket.on('data', (chunk: Buffer) => {
    if (text.length < 65_536) text += chunk.toString('latin1', 0, 65_536 - text.length);
    total += chunk.length;
  });
  socket.on('error', () => {});
  socket.write(bytes);
  const headLength = () => text.indexOf('\r\n\r\n') + 4;
  return { socket, received: () => text, bodyBytes: () => (headLength() < 4 ? 0 : total - headLength()) };
}

const HALF_HEAD = 'GET / HTTP/1.1\r\nHost: x\r\n';
const UPGRADE = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;

describe('connections the proxy ends after an answer of its own', () => {
  it.each([
    ['a request head cut short (408)', '127.0.107.1', HALF_HEAD, /^HTTP\/1\.1 408 /],
    ['an upgrade the backend refused (its 403 relayed)', '127.0.107.2', UPGRADE('/refuse'), /^HTTP\/1\.1 403 [\s\S]*\r\n\r\nno\n$/],
  ])('are reset after %s when the client never closes its side', async (_, address, bytes, answer) => {
    // allowHalfOpen: the client takes the proxy's FIN without closing its own side.
    const { socket, received } = client(address, bytes, { allowHalfOpen: true });
    try {
      await waitFor(() => answer.test(received()), 10_000, 'the answer');
      await waitFor(() => proxySocketsTo(address) === 0, 10_000, "the proxy's socket to the silent client to be gone");
    } finally {
      socket.destroy();
    }
  });

  // Dropping packets takes root and iptables (test/debian-packages.txt); the cases above run anywhere.
  it('hold no sockets of clients that vanished without a FIN after half a request head', async (ctx) => {
    if (process.getuid?.() !== 0) ctx.skip(`${CI_CANNOT_RUN}dropping a client's packets needs root (CI runs as root)`);
    expect(canDropPackets(), 'iptables must list INPUT: apt-get install -y iptables').toBe(true);
    const address = '127.0.107.3';
    const count = 50;
    const clients = Array.from({ length: count }, () => client(address, HALF_HEAD).socket);
    const answeredBefore = await metric('limpet_requests_total', { code: '408' });
    await waitFor(() => heldSockets(process.pid, port, address).descriptors === count, 10_000, 'the proxy to hold every connection');
    const restore = dropPacketsOf(address);
    try {
      // Their FINs are dropped too: to the proxy they are simply gone.
      for (const socket of clients) socket.destroy();
      await waitFor(async () => (await metric('limpet_requests_total', { code: '408' })) - answeredBefore >= count, 10_000, 'every client answered 408');
      await waitFor(() => proxySocketsTo(address) === 0, 10_000, "the proxy's sockets to the vanished clients to be gone");
    } finally {
      restore();
    }
  });
});

describe('timeouts.clientSend', () => {
  it.each([
    ['a download', 'limpet_backend_inflight_requests', '127.0.107.4', 'GET /download HTTP/1.1\r\nHost: x\r\n\r\n', () => downloadsAborted],
    ['a WebSocket tunnel', 'limpet_websocket_connections', '127.0.107.5', UPGRADE('/socket'), () => tunnelsClosed],
  ])("cuts off a client that stops reading %s: the proxy's socket to it goes, the backend's side is closed, %s returns to 0", async (_, gauge, address, bytes, backendSides) => {
    const closedBefore = backendSides();
    const { socket, received } = client(address, bytes);
    try {
      await waitFor(() => received().includes('\r\n\r\n'), 10_000, 'the response head');
      socket.pause();
      expect(proxySocketsTo(address)).toBe(1);
      await waitFor(() => proxySocketsTo(address) === 0, 10_000, "the proxy's socket to the client to be gone");
      await waitFor(() => backendSides() > closedBefore, 10_000, "the backend's side to be closed");
      await waitFor(async () => (await metric(gauge)) === 0, 10_000, `${gauge} back to 0`);
    } finally {
      socket.destroy();
    }
  });
});

describe('timeouts.clientSend and a client that reads slowly', () => {
  // On loopback the kernel buffers megabytes between the proxy and a client, and tells the proxy
  // that the client took some only once a good part of its send buffer is free: a longer clientSend
  // than above, so that a client reading a few MB/s shows progress well within each period.
  let slow: { limpet: Limpet; port: number };
  beforeAll(async () => {
    slow = await startProxy(`affinity: { by: ip }\ntimeouts: { clientSend: 2s }\nbackends: [{ id: app, url: "${backendUrl}" }]`);
  });
  afterAll(() => slow.limpet.close());

  it.each([
    ['a download', '127.0.107.6', 'GET /download?bytes=BYTES HTTP/1.1\r\nHost: x\r\n\r\n'],
    ['a WebSocket tunnel', '127.0.107.7', UPGRADE('/socket?bytes=BYTES')],
  ])('does not cut off a client that reads %s slowly but keeps taking bytes', async (_, address, template) => {
    const bytes = 24 * 1024 * 1024;
    const looks = vi.spyOn(ClientSendWatch.prototype, 'look');
    const { socket, bodyBytes } = client(address, template.replace('BYTES', String(bytes)), { port: slow.port });
    // A pause after every read: the backend sends far faster than this client takes.
    socket.on('data', () => {
      socket.pause();
      setTimeout(() => socket.resume(), 10);
    });
    let cutOff = false;
    socket.on('close', () => (cutOff = true));
    try {
      await waitFor(() => {
        if (cutOff) throw new Error(`cut off after ${bodyBytes()} of ${bytes} bytes`);
        return bodyBytes() >= bytes;
      }, 60_000, 'the whole body');
      // The proxy watched this client for longer than clientSend (it looks four times a period)
      // and did not cut it off.
      expect(looks.mock.calls.length).toBeGreaterThan(4);
      expect(proxySocketsTo(address, slow.port)).toBe(1);
    } finally {
      looks.mockRestore();
      socket.destroy();
    }
  });
});
