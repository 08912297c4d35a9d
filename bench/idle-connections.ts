// Memory per idle keep-alive client connection: limpet beside a bare node:http server, the floor
// any Node proxy stands on. Each server runs as its own child process; after one request on each of
// N connections, the growth of its resident memory is divided by N.
//
//   node dist/bench/idle-connections.js [connections]   (default 5000; needs ulimit -n above 2×N)
import { freePort } from './free-port.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';

const CONNECTIONS = Number(process.argv[2] ?? 5000);
const BATCH = 250;
const here = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const cli = path.resolve(here, '..', 'src', 'cli.js');

function residentKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
}

async function untilListening(port: number): Promise<void> {
  for (let tries = 0; tries < 200; tries++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => resolve(true));
      socket.on('error', () => resolve(false));
      socket.on('connect', () => socket.destroy());
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

/** Opens one connection, sends a request and resolves once the response head is back; the socket stays open. */
function idleClient(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let reply = '';
    socket.on('data', (chunk) => {
      reply += chunk.toString('latin1');
      if (reply.includes('\r\n\r\n')) resolve(socket);
    });
    socket.on('error', reject);
    socket.write('GET / HTTP/1.1\r\nHost: bench\r\n\r\n');
  });
}

async function measure(name: string, child: ChildProcess, port: number): Promise<void> {
  await untilListening(port);
  // A short warm-up so first-use costs (code, pools) are not counted per connection.
  for (let i = 0; i < 200; i++) (await idleClient(port)).destroy();
  await new Promise((r) => setTimeout(r, 1000));
  const before = residentKb(child.pid!);
  const sockets: net.Socket[] = [];
  for (let opened = 0; opened < CONNECTIONS; opened += BATCH) {
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, CONNECTIONS - opened) }, () => idleClient(port)))));
  }
  await new Promise((r) => setTimeout(r, 2000));
  const after = residentKb(child.pid!);
  console.log(`${name.padEnd(16)} ${CONNECTIONS} idle connections: RSS ${(before / 1024).toFixed(1)} → ${(after / 1024).toFixed(1)} MB, ${Math.round(((after - before) * 1024) / CONNECTIONS)} bytes per connection`);
  for (const socket of sockets) socket.destroy();
  child.kill('SIGKILL');
}

const backend = http.createServer((_req, res) => res.end('ok')).listen(0, '127.0.0.1');
await new Promise((r) => backend.once('listening', r));
const backendPort = (backend.address() as AddressInfo).port;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-idle-'));
try {
  const barePort = await freePort();
  const bare = spawn(process.execPath, ['-e', `require('http').createServer({ keepAliveTimeout: 600000 }, (q, s) => s.end('ok')).listen(${barePort}, '127.0.0.1')`], { stdio: 'ignore' });
  await measure('bare node:http', bare, barePort);

  const limpetPort = await freePort();
  const config = path.join(tmp, 'limpet.yaml');
  writeFileSync(
    config,
    `listen: 127.0.0.1:${limpetPort}\nadmin: { listen: "127.0.0.1:0" }\nlog: { level: warn }\naffinity: { by: ip }\ntimeouts: { clientIdle: 10m }\n` +
      `backends: [{ id: app, url: "http://127.0.0.1:${backendPort}" }]\n`,
  );
  await measure('limpet', spawn(process.execPath, [...RUNTIME_FLAGS, cli, '--config', config], { stdio: 'ignore' }), limpetPort);
} finally {
  rmSync(tmp, { recursive: true, force: true });
  backend.close();
  backend.closeAllConnections();
}
