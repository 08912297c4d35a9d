// What clients that vanish without a FIN cost the proxy: N clients send half a request head and M
// downloaders read the head of an endless response, then every packet from and to them is dropped
// (as if their machines lost power). Every few seconds it prints how many of the proxy's sockets to
// each group are left (descriptors the process holds, and kernel sockets, orphans included), the
// backend's in-flight requests and how many downloads the backend saw aborted. limpet runs with
// its default timeouts, as its own child process.
//
//   node dist/bench/vanished-clients.js [clients] [downloaders] [seconds]   (default 2000 200 90)
//
// Linux, root and iptables (rules on 127.0.107.11 and .12, removed at the end); ulimit -n above
// clients + downloaders. BENCH_LIMPET_CLI=<another build's dist/src/cli.js> measures that build.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';
import { freePort, waitUntilServing } from './harness.js';
import { canDropPackets, dropPacketsOf, heldSockets, type HeldSockets } from './vanishing-peers.js';

const CLIENTS = Number(process.argv[2] ?? 2000);
const DOWNLOADERS = Number(process.argv[3] ?? 200);
const SECONDS = Number(process.argv[4] ?? 90);
const HALF_HEAD_FROM = '127.0.107.11';
const DOWNLOADERS_FROM = '127.0.107.12';
const BATCH = 250;
const here = path.dirname(fileURLToPath(import.meta.url)); // dist/bench
const cli = path.resolve(process.env.BENCH_LIMPET_CLI ?? path.join(here, '..', 'src', 'cli.js'));

if (!canDropPackets()) {
  console.error('needs root and a working iptables');
  process.exit(2);
}

/** A client that sends half a request head and nothing more. */
function halfHeadClient(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: HALF_HEAD_FROM });
    socket.on('error', reject);
    socket.write('GET / HTTP/1.1\r\nHost: bench\r\n', () => resolve(socket));
  });
}

/** A client that starts a download, reads the response head and stops reading. */
function downloader(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: DOWNLOADERS_FROM });
    let reply = '';
    const onData = (chunk: Buffer) => {
      reply += chunk.toString('latin1');
      if (!reply.includes('\r\n\r\n')) return;
      socket.off('data', onData);
      socket.pause();
      resolve(socket);
    };
    socket.on('data', onData);
    socket.on('error', reject);
    socket.write('GET /download HTTP/1.1\r\nHost: bench\r\n\r\n');
  });
}

async function openAll(count: number, open: () => Promise<net.Socket>): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  for (let opened = 0; opened < count; opened += BATCH) sockets.push(...(await Promise.all(Array.from({ length: Math.min(BATCH, count - opened) }, open))));
  return sockets;
}

async function inflight(adminPort: number): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${adminPort}/metrics`);
  const match = /^limpet_backend_inflight_requests\{[^}]*\} (\d+)/m.exec(await response.text());
  return Number(match?.[1] ?? NaN);
}

function show(held: HeldSockets): string {
  const states = Object.entries(held.states).map(([state, count]) => `${state} ${count}`).join(', ');
  return `${String(held.descriptors).padStart(5)} fds, ${String(held.kernel).padStart(5)} kernel${states ? ` (${states})` : ''}`;
}

// An endless download that honours backpressure; a response cut before its end is an abort.
let aborted = 0;
const chunk = Buffer.alloc(64 * 1024, 120);
const backend = http.createServer((req, res) => {
  if (req.url !== '/download') return void res.end('ok');
  res.writeHead(200, { 'content-type': 'application/octet-stream' });
  const pump = () => {
    while (res.write(chunk));
  };
  res.on('drain', pump);
  res.on('close', () => aborted++);
  pump();
});
await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
const backendPort = (backend.address() as AddressInfo).port;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-vanished-'));
const port = await freePort();
const adminPort = await freePort();
const config = path.join(tmp, 'limpet.yaml');
writeFileSync(
  config,
  `listen: 127.0.0.1:${port}\nadmin: { listen: "127.0.0.1:${adminPort}" }\nlog: { level: warn }\naffinity: { by: ip }\n` +
    `backends: [{ id: app, url: "http://127.0.0.1:${backendPort}" }]\n`,
);
const proxy = spawn(process.execPath, [...RUNTIME_FLAGS, cli, '--config', config], { stdio: ['ignore', 'ignore', 'inherit'] });
const restores: (() => void)[] = [];
const cleanUp = () => {
  for (const restore of restores.splice(0)) restore();
  proxy.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
};
process.once('SIGINT', () => {
  cleanUp();
  process.exit(130);
});
try {
  await waitUntilServing(proxy, `http://127.0.0.1:${adminPort}/healthz`);
  const pid = proxy.pid as number;
  console.log(`${cli}: ${CLIENTS} clients with half a request head, ${DOWNLOADERS} downloaders that stop reading`);
  const clients = await openAll(CLIENTS, () => halfHeadClient(port));
  const downloaders = await openAll(DOWNLOADERS, () => downloader(port));
  const settled = Date.now() + 10_000;
  while (heldSockets(pid, port, HALF_HEAD_FROM).descriptors < CLIENTS && Date.now() < settled) await new Promise((r) => setTimeout(r, 50));
  restores.push(dropPacketsOf(HALF_HEAD_FROM), dropPacketsOf(DOWNLOADERS_FROM));
  // Their machines are gone: what their kernels would still send is dropped anyway.
  for (const socket of [...clients, ...downloaders]) socket.destroy();
  const vanished = Date.now();
  console.log('   s  half-head clients                                  downloaders                                        inflight  aborted');
  for (;;) {
    const seconds = Math.round((Date.now() - vanished) / 1000);
    console.log(
      `${String(seconds).padStart(4)}  ${show(heldSockets(pid, port, HALF_HEAD_FROM)).padEnd(50)} ${show(heldSockets(pid, port, DOWNLOADERS_FROM)).padEnd(50)} ${String(await inflight(adminPort)).padStart(8)}  ${String(aborted).padStart(7)}`,
    );
    if (seconds >= SECONDS) break;
    await new Promise((r) => setTimeout(r, 5000 - ((Date.now() - vanished) % 5000)));
  }
} finally {
  cleanUp();
  backend.close();
  backend.closeAllConnections();
}
