import { afterAll, beforeAll, describe, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { canDropPackets, dropPacketsOf, heldSockets } from '../bench/vanishing-peers.js';
import { request, waitFor } from './support/client.js';
import { parseExposition } from './support/exposition.js';
import { startProxy } from './support/proxy.js';
import type { Limpet } from '../src/limpet.js';

// Clients that vanish without a FIN, or never close their side: the proxy must not hold their
// sockets. Each test talks from its own loopback address, so the kernel's TCP table tells which of
// the proxy's sockets are that client's.

let backend: Server;
let proxy: Limpet;
let port: number;

beforeAll(async () => {
  // Answers requests 'ok', and refuses upgrades with a 403.
  backend = createServer((_req, res) => res.end('ok'));
  backend.on('upgrade', (_req, socket: Socket) => {
    socket.on('error', () => {});
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n');
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
  ({ limpet: proxy, port } = await startProxy(`affinity: { by: ip }\ntimeouts: { clientHeaders: 500ms }\nbackends: [{ id: app, url: "${url}" }]`));
});

afterAll(async () => {
  await proxy.close();
  backend.closeAllConnections();
  await new Promise((resolve) => backend.close(resolve));
});

/** The proxy's sockets to clients from `address`, orphans included. */
const proxySocketsTo = (address: string) => heldSockets(process.pid, port, address).kernel;

async function metric(name: string, labels: Record<string, string> = {}): Promise<number> {
  const exposition = parseExposition((await request(proxy.adminAddress.port, { path: '/metrics' })).body);
  return exposition.samples
    .filter((s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value))
    .reduce((sum, s) => sum + s.value, 0);
}

/** A client from `address` that sends `bytes` and collects what comes back. */
function client(address: string, bytes: string, options: { allowHalfOpen?: boolean } = {}): { socket: Socket; received: () => string } {
  const socket = connect({ port, host: '127.0.0.1', localAddress: address, allowHalfOpen: options.allowHalfOpen ?? false });
  let text = '';
  socket.on('data', (chunk: Buffer) => (text += chunk.toString('latin1')));
  socket.on('error', () => {});
  socket.write(bytes);
  return { socket, received: () => text };
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

  // Dropping packets takes root and iptables; the cases above run anywhere.
  it.skipIf(!canDropPackets())('hold no sockets of clients that vanished without a FIN after half a request head', async () => {
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
