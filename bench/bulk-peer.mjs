// Both far ends of big transfers, in a process of their own so that their buffers are not counted
// as the proxy's.
//   node bench/bulk-peer.mjs
// Prints "backend <port>" once its backend listens: POST reads the body and answers its length;
// GET /?bytes=N streams N bytes in 64 KiB writes, honouring backpressure. Then, for every line
// "upload <url> <bytes>" or "download <url> <bytes>" on stdin, does that transfer as a client and
// prints "done <bytes>" (the count the backend read, or the count downloaded).
import { createServer, request } from 'node:http';
import { createInterface } from 'node:readline';

const CHUNK = Buffer.alloc(64 * 1024, 'x');

/** Writes `bytes` to `out` in 64 KiB pieces, waiting for 'drain' whenever it asks to. */
function stream(out, bytes) {
  if (bytes === 0) return void out.end();
  let left = bytes;
  const write = () => {
    while (left > 0) {
      const piece = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= piece.length;
      if (left === 0) out.end(piece);
      else if (!out.write(piece)) return void out.once('drain', write);
    }
  };
  write();
}

const server = createServer((req, res) => {
  if (req.method === 'POST') {
    let length = 0;
    req.on('data', (chunk) => (length += chunk.length));
    req.on('end', () => res.end(String(length)));
    return;
  }
  const bytes = Number(new URL(req.url, 'http://x').searchParams.get('bytes') ?? 0);
  res.writeHead(200, { 'content-length': String(bytes) });
  stream(res, bytes);
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`backend ${server.address().port}\n`));

createInterface({ input: process.stdin }).on('line', (line) => {
  const [what, url, size] = line.split(' ');
  const bytes = Number(size);
  const req = request(`${url}/?bytes=${bytes}`, { method: what === 'upload' ? 'POST' : 'GET', headers: what === 'upload' ? { 'content-length': String(bytes) } : {} }, (res) => {
    let length = 0;
    let body = '';
    res.on('data', (chunk) => {
      length += chunk.length;
      if (what === 'upload') body += chunk;
    });
    res.on('end', () => process.stdout.write(`done ${what === 'upload' ? body : length}\n`));
  });
  req.on('error', (error) => process.stdout.write(`error ${error.message}\n`));
  if (what === 'upload') stream(req, bytes);
  else req.end();
});
