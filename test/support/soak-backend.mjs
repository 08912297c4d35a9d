// A small app server for the soak test, run as its own process so the test can SIGKILL it.
//   node test/support/soak-backend.mjs <id> <port>
// Prints "listening" once it accepts connections, then one line "seen <x-request-id>" for every
// request that carries that header, before the request is handled. The lines go out by blocking
// writes to fd 1 (process.stdout is never opened, as it would make the fd non-blocking and buffer
// in the process), so each is in the kernel before the request is handled and survives a SIGKILL.
//   GET  /health → 200
//   GET  /*      → 200 with the backend id, sometimes after a few ms (so a kill finds requests in flight)
//   POST /*      → 200 with the number of body bytes read
import { writeSync } from 'node:fs';
import { createServer } from 'node:http';

const id = process.argv[2] ?? 'app';
const port = Number(process.argv[3]);

const server = createServer((req, res) => {
  const requestId = req.headers['x-request-id'];
  if (typeof requestId === 'string') writeSync(1, `seen ${requestId}\n`);
  if (req.method === 'POST') {
    let length = 0;
    req.on('data', (chunk) => (length += chunk.length));
    req.on('end', () => res.writeHead(200, { 'x-backend': id }).end(String(length)));
    return;
  }
  const answer = () => res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': id }).end(`${id}\n`);
  if (req.url !== '/health' && Math.random() < 0.2) setTimeout(answer, Math.floor(Math.random() * 10));
  else answer();
});
server.listen(port, '127.0.0.1', () => writeSync(1, 'listening\n'));
