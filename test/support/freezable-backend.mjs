// An app server run as its own process, so a test can freeze it (SIGSTOP) with requests in flight.
//   node test/support/freezable-backend.mjs <id>
// Listens on an ephemeral loopback port and prints "listening <port>", then "held <method>" for
// every request it holds. The lines go out by blocking writes to fd 1, so each is in the kernel
// before the process can be stopped.
//   /hold/<id>  → never answered when <id> is this backend's (in flight for as long as the test
//                 wants); answered like any other path by the others
//   anything    → 200 with the backend id (body and x-backend), and x-remapped-from echoing the
//                 X-Limpet-Remapped-From the proxy sent
import { writeSync } from 'node:fs';
import { createServer } from 'node:http';

const id = process.argv[2] ?? 'app';

const server = createServer((req, res) => {
  req.resume();
  if (req.url === `/hold/${id}`) {
    req.on('end', () => writeSync(1, `held ${req.method}\n`));
    return;
  }
  const headers = { 'content-type': 'text/plain', 'x-backend': id };
  const from = req.headers['x-limpet-remapped-from'];
  if (typeof from === 'string') headers['x-remapped-from'] = from;
  res.writeHead(200, headers).end(`${id}\n`);
});
server.listen(0, '127.0.0.1', () => writeSync(1, `listening ${server.address().port}\n`));
