import { describe, expect, it } from 'vitest';
import { createServer, connect, type Socket, type AddressInfo } from 'node:net';
import { useCleanup } from './support/cleanup.js';
import { waitFor } from './support/client.js';
import { startProxy } from './support/proxy.js';
import { parseConfig } from '../src/config/load.js';
import type { Limpet } from '../src/limpet.js';

const CLOSE_1001_UNMASKED = Buffer.from([0x88, 0x02, 0x03, 0xe9]);

const cleanup = useCleanup();

/** A raw WebSocket backend: answers the upgrade, then sends `frameBytes` and waits. Returns its url and its sockets. */
async function startRawBackend(frameBytes: Buffer): Promise<{ url: string; sockets: Socket[] }> {
  const sockets: Socket[] = [];
  const backend = createServer((socket) => {
    sockets.push(socket);
    let head = '';
    socket.on('data', (chunk) => {
      if (head.includes('\r\n\r\n')) return;
      head += chunk.toString('latin1');
      if (!head.includes('\r\n\r\n')) return;
      if (head.startsWith('GET /health')) return void socket.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      // The accept key is not checked by this raw client, so any value will do.
      socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n');
      socket.write(frameBytes);
    });
    socket.on('error', () => {});
  });
  cleanup.add(() => {
    for (const socket of sockets) socket.destroy();
    return new Promise((resolve) => backend.close(resolve));
  });
  await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(backend.address() as AddressInfo).port}`, sockets };
}

/** Upgrades through the proxy and returns everything received after the 101 head, once the proxy closes. */
async function tunnelThenShutdown(frameBytes: Buffer): Promise<Buffer> {
  return tunnelThen(frameBytes, (limpet) => limpet.close());
}

/** Upgrades through the proxy, runs `end`, and returns everything received after the 101 head once the proxy closes the tunnel. */
async function tunnelThen(frameBytes: Buffer, end: (limpet: Limpet, backendUrl: string) => Promise<void>): Promise<Buffer> {
  const { url } = await startRawBackend(frameBytes);
  const { limpet, port } = await startProxy(`affinity: { by: ip }\nbackends: [{ id: ws, url: "${url}" }]`);
  cleanup.add(limpet);
  const client = connect(port, '127.0.0.1');
  cleanup.add(() => client.destroy());
  const chunks: Buffer[] = [];
  client.on('data', (chunk) => chunks.push(chunk));
  const closed = new Promise((resolve) => client.on('close', resolve));
  client.write('GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  const received = () => Buffer.concat(chunks);
  await waitFor(() => {
    const all = received();
    const end = all.indexOf('\r\n\r\n');
    return end >= 0 && all.length - (end + 4) >= frameBytes.length;
  }, 10_000, 'the backend frame bytes to arrive');
  await end(limpet, url);
  await closed;
  const all = received();
  return all.subarray(all.indexOf('\r\n\r\n') + 4);
}


describe('WebSocket close on shutdown', () => {
  it('sends close 1001 after a complete frame', async () => {
    const frame = Buffer.concat([Buffer.from([0x81, 0x05]), Buffer.from('hello')]);
    const after = await tunnelThenShutdown(frame);
    expect(after).toEqual(Buffer.concat([frame, CLOSE_1001_UNMASKED]));
  });

  it('does not write a close frame into the middle of a frame the backend is still sending', async () => {
    // A frame announcing 1,000 payload bytes, of which only 100 have been sent.
    const partial = Buffer.concat([Buffer.from([0x82, 0x7e, 0x03, 0xe8]), Buffer.alloc(100, 0x61)]);
    const after = await tunnelThenShutdown(partial);
    expect(after).toEqual(partial);
  });
});

describe('WebSocket tunnels of a backend that leaves the config', () => {
  const frame = Buffer.concat([Buffer.from([0x81, 0x02]), Buffer.from('hi')]);

  it('closes them with 1001 when a reload removes the backend, so the client reconnects where its HTTP now goes', async () => {
    const after = await tunnelThen(frame, async (limpet, url) => {
      const other = url.replace(/:\d+$/, ':1');
      limpet.reload(parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\naffinity: { by: ip }\nbackends: [{ id: other, url: "${other}" }]`, 'test.yaml', {}));
    });
    expect(after).toEqual(Buffer.concat([frame, CLOSE_1001_UNMASKED]));
  });

  it('keeps them open while the backend drains: a drained backend keeps its clients', async () => {
    const { url, sockets: backendSockets } = await startRawBackend(frame);
    const { limpet, port } = await startProxy(`affinity: { by: ip }\nbackends: [{ id: ws, url: "${url}" }]`);
    cleanup.add(limpet);
    const client = connect(port, '127.0.0.1');
    client.write('GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
    await waitFor(() => backendSockets.length === 1 || undefined, 10_000, 'the tunnel to open');
    const upstream = backendSockets[0]!;
    let relayed = '';
    upstream.on('data', (chunk: Buffer) => (relayed += chunk.toString('latin1')));
    limpet.setDraining('ws', true);
    // A masked client frame after the drain still reaches the backend through the same tunnel.
    const masked = Buffer.from([0x81, 0x82, 0, 0, 0, 0, 0x6f, 0x6b]);
    client.write(masked);
    await waitFor(() => relayed.endsWith(masked.toString('latin1')) || undefined, 10_000, 'the frame sent after the drain to reach the backend');
    expect(client.destroyed).toBe(false);
    client.destroy();
  });
});
