// A small app server for the soak test, run as its own process so the test can SIGKILL it.
//   node test/support/soak-backend.mjs <id> <port> [seed]
// Prints "listening" once it accepts connections, then one line "seen <x-request-id>" for every
// request that carries that header, before the request is handled. The lines go out by blocking
// writes to fd 1 (process.stdout is never opened, as it would make the fd non-blocking and buffer
// in the process), so each is in the kernel before the request is handled and survives a SIGKILL.
//   GET  /health → 200
//   GET  /*      → 200 with the backend id, sometimes after a few ms (so a kill finds requests in flight):
//                  which requests and how long follows from the seed and the request's x-request-id,
//                  so a soak replayed with its seed delays the same requests.
//   POST /*      → 200 with the number of body bytes read
import { writeSync } from 'node:fs';
import { createServer } from 'node:http';

const id = process.argv[2] ?? 'app';
const port = Number(process.argv[3]);
const seed = process.argv[4] ?? '0';

/** FNV-1a: a 32-bit hash of the seed and a request id. */
function hash(text) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

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
  // One request in five waits 0-9 ms.
  const draw = typeof requestId === 'string' ? hash(`${seed}:${requestId}`) : 1;
  if (draw % 5 === 0) setTimeout(answer, (draw >>> 8) % 10);
  else answer();
});
server.listen(port, '127.0.0.1', () => writeSync(1, 'listening\n'));
