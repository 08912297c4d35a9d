import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import { startBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startProxy } from './support/proxy.js';
import { tcpEnd } from './support/tcp.js';

const SIZE = 50 * 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'limpet-stream-');
/** What may sit in socket buffers and stream queues along the way: far less than the 50 MB body. */
const BUFFER_BOUND = 16 * 1024 * 1024;

const cleanup = useCleanup();

/** Writes `size` bytes with backpressure; resolves when all is written. */
function pump(stream: NodeJS.WritableStream, size: number, done: () => void): void {
  let sent = 0;
  const next = () => {
    while (sent < size) {
      sent += CHUNK.length;
      if (!stream.write(CHUNK)) return void stream.once('drain', next);
    }
    done();
  };
  next();
}

function expectedDigest(): string {
  const hash = createHash('sha256');
  for (let sent = 0; sent < SIZE; sent += CHUNK.length) hash.update(CHUNK);
  return hash.digest('hex');
}

/** A request the backend answers at once, sent through the proxy while a transfer is held. */
const PROBE = '/probe';

async function start(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<number> {
  const backend = cleanup.add(
    await startBackend('big', (req, res) => {
      if (req.url === '/health' || req.url === PROBE) res.end('ok');
      else handler(req, res);
    }),
  );
  const started = await startProxy(`affinity: { by: ip }\ntimeouts: { response: 60s }\nbackends: [{ id: big, url: "${backend.url}" }]`);
  cleanup.add(started.limpet);
  return started.port;
}

/** Round trips through the proxy a transfer must sit out without moving to count as held back. */
const PROBES = 3;

/** The side of a transfer that writes, as the test sees it. */
interface Writer {
  /** Its last write returned false and 'drain' has not come yet. */
  waitingForDrain: boolean;
  /** Bytes handed to write() so far. */
  written: number;
  /** Its connection to the proxy, to read from the kernel. */
  localPort: number;
  remotePort: number;
}

/**
 * Waits until the proxy holds a transfer back: the writer waits for 'drain', the proxy's receive
 * window on the writer's connection is closed (it reads nothing and its buffer is full), and none of
 * this changes (bytes written, bytes the kernel holds to send) while PROBES requests go through the
 * proxy to the backend and back, one after another. Each round trip gives the proxy turns at its
 * sockets in which it would have read from a connection it was still reading. Returns the bytes
 * written by then.
 */
async function heldBack(port: number, writer: () => Writer, what: string): Promise<number> {
  const look = () => {
    const now = writer();
    const end = tcpEnd(now.localPort, now.remotePort);
    return { ...now, sendQueue: end?.sendQueue, windowClosed: end?.peerWindowClosed ?? false };
  };
  const { written } = await waitFor(async () => {
    const before = look();
    if (!before.waitingForDrain || !before.windowClosed) throw new Error(`not held: ${JSON.stringify(before)}`);
    for (let probe = 1; probe <= PROBES; probe++) {
      const res = await request(port, { path: PROBE });
      if (res.status !== 200) throw new Error(`probe ${probe} answered ${res.status}`);
      const now = look();
      if (JSON.stringify(now) !== JSON.stringify(before)) throw new Error(`still moving by probe ${probe}: ${JSON.stringify(before)} → ${JSON.stringify(now)}`);
    }
    return before;
  }, 15_000, what);
  return written;
}

describe('streaming', () => {
  it('streams a 50 MB upload and a 50 MB download intact', async () => {
    const port = await start((req, res) => {
      if (req.method === 'POST') {
        const hash = createHash('sha256');
        let length = 0;
        req.on('data', (c: Buffer) => {
          hash.update(c);
          length += c.length;
        });
        req.on('end', () => res.end(JSON.stringify({ length, sha256: hash.digest('hex') })));
        return;
      }
      res.writeHead(200, { 'content-length': SIZE });
      pump(res, SIZE, () => res.end());
    });
    const digest = expectedDigest();
    const upload = await new Promise<string>((resolve, reject) => {
      const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/upload', headers: { 'content-length': SIZE } }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve(body));
      });
      req.on('error', reject);
      pump(req, SIZE, () => req.end());
    });
    expect(JSON.parse(upload)).toEqual({ length: SIZE, sha256: digest });

    const download = await new Promise<{ length: number; sha256: string }>((resolve, reject) => {
      httpRequest({ host: '127.0.0.1', port, path: '/download' }, (res) => {
        const hash = createHash('sha256');
        let length = 0;
        res.on('data', (c: Buffer) => {
          hash.update(c);
          length += c.length;
        });
        res.on('end', () => resolve({ length, sha256: hash.digest('hex') }));
        res.on('error', reject);
      })
        .on('error', reject)
        .end();
    });
    expect(download).toEqual({ length: SIZE, sha256: digest });
  });

  it('holds back an upload while the backend reads nothing: memory stays bounded, the body is not buffered', async () => {
    let received = 0;
    let held = false;
    let backendReq: IncomingMessage | null = null;
    const port = await start((req, res) => {
      backendReq = req;
      req.on('data', (c: Buffer) => {
        received += c.length;
        if (!held && received >= 1024 * 1024) {
          held = true; // the backend stops reading after 1 MB
          req.pause();
        }
      });
      req.on('end', () => res.end(`${received}`));
    });
    let accepted = 0;
    const req = httpRequest({ host: '127.0.0.1', port, method: 'POST', path: '/', headers: { 'content-length': SIZE } });
    const response = new Promise<string>((resolve) => req.on('response', (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c));
      res.on('end', () => resolve(body));
    }));
    const write = () => {
      while (accepted < SIZE) {
        accepted += CHUNK.length;
        if (!req.write(CHUNK)) return void req.once('drain', write);
      }
      req.end();
    };
    write();
    // The backend has stopped reading; wait until the sender is blocked too.
    await waitFor(() => backendReq !== null && received >= 1024 * 1024, 10_000, 'backend to read its first megabyte');
    const { localPort, remotePort } = req.socket!;
    await heldBack(port, () => ({ waitingForDrain: req.writableNeedDrain, written: accepted, localPort: localPort!, remotePort: remotePort! }), 'the sender to be held back');
    console.log(`upload held back: the client could send ${(accepted / 1048576).toFixed(1)} MB while the backend read nothing`);
    expect(accepted).toBeLessThan(BUFFER_BOUND + 1024 * 1024);
    (backendReq as unknown as IncomingMessage).resume();
    expect(Number(await response)).toBe(SIZE);
  });

  it('holds back a download while the client reads nothing', async () => {
    let written = 0;
    let finished = false;
    let backendRes: ServerResponse | null = null;
    let backendPort = 0;
    let proxyPort = 0;
    const port = await start((_req, res) => {
      backendRes = res;
      backendPort = res.socket!.localPort!;
      proxyPort = res.socket!.remotePort!;
      res.writeHead(200, { 'content-length': SIZE });
      const next = () => {
        while (written < SIZE) {
          written += CHUNK.length;
          if (!res.write(CHUNK)) return void res.once('drain', next);
        }
        res.end(() => (finished = true));
      };
      next();
    });
    let received = 0;
    const res = await new Promise<IncomingMessage>((resolve) => httpRequest({ host: '127.0.0.1', port, path: '/' }, resolve).end());
    res.pause();
    await heldBack(port, () => ({ waitingForDrain: backendRes!.writableNeedDrain, written, localPort: backendPort, remotePort: proxyPort }), 'the backend to be held back');
    console.log(`download held back: the backend could write ${(written / 1048576).toFixed(1)} MB while the client read nothing`);
    expect(written).toBeLessThan(BUFFER_BOUND);
    expect(finished).toBe(false);
    res.on('data', (c: Buffer) => (received += c.length));
    res.resume();
    await new Promise((r) => res.on('end', r));
    expect(received).toBe(SIZE);
  });
});
