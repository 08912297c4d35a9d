// Benchmark backends: N tiny HTTP servers in one process, each answering every request with
// `200 ok\n`. They are deliberately cheap so that the proxy in front of them is what gets measured.
//
//   node dist/bench/backend.js [count]
//
// Listens on 127.0.0.1 ephemeral ports and prints one line `{"ports":[p1,p2,...]}` on stdout once
// all are listening. Exits when stdin closes (the harness holds the other end) or on SIGTERM/SIGINT.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const BODY = Buffer.from('ok\n');
const HEADERS = { 'content-type': 'text/plain', 'content-length': String(BODY.length) };

function startBackend(): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, HEADERS);
    res.end(BODY);
  });
  // Longer than any proxy's idle pool timeout, so pooled upstream connections are never closed
  // under a proxy between rounds (that race would show up as 502s that are not the proxy's fault).
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const count = Number(process.argv[2] ?? 3);
if (!Number.isInteger(count) || count < 1) {
  process.stderr.write(`backend: count must be a positive integer, got "${process.argv[2]}"\n`);
  process.exit(2);
}

const servers = await Promise.all(Array.from({ length: count }, startBackend));
const ports = servers.map((server) => (server.address() as AddressInfo).port);
process.stdout.write(`${JSON.stringify({ ports })}\n`);

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
