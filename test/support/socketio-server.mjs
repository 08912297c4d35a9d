// A real socket.io server for tests, run as its own process so a test can kill it.
//   node test/support/socketio-server.mjs <id> [port]
// Default socket.io settings: clients start on long-polling and upgrade to WebSocket.
// Prints one JSON line {"id","port"} once listening. Routes besides /socket.io/:
//   GET /health  → 200
//   GET /stats   → {"sids": {<engine sid>: {"handshake": bool, "remappedFrom": <X-Limpet-Remapped-From of the handshake> | null, "polling": n, "websocket": n, "unknown": n}}}
//                  every engine.io request this process saw, keyed by session id, including
//                  requests for sessions it does not know ("unknown": answered 400 "Session ID
//                  unknown"; a non-sticky proxy sends those here).
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const id = process.argv[2] ?? 'app';
const port = Number(process.argv[3] ?? 0);
const sids = new Map();

function record(sid, field, remappedFrom = null) {
  let entry = sids.get(sid);
  if (entry === undefined) sids.set(sid, (entry = { handshake: false, remappedFrom: null, polling: 0, websocket: 0, unknown: 0 }));
  if (field === 'handshake') {
    entry.handshake = true;
    entry.remappedFrom = remappedFrom;
  }
  else {
    entry[field]++;
    // engine.io answers such a request with 400 {"code":1,"message":"Session ID unknown"}
    if (!(sid in io.engine.clients)) entry.unknown++;
  }
}

function engineRequest(url) {
  if (url === undefined || !url.startsWith('/socket.io/')) return null;
  const query = new URL(url, 'http://x').searchParams;
  return { sid: query.get('sid'), transport: query.get('transport') };
}

const httpServer = createServer((req, res) => {
  if (req.url === '/health') return void res.writeHead(200, { 'content-type': 'text/plain' }).end(`${id}\n`);
  if (req.url === '/stats') {
    return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id, sids: Object.fromEntries(sids) }));
  }
  if (req.url?.startsWith('/socket.io/')) return; // engine.io answers these
  res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': id }).end(`${id}\n`);
});

const io = new Server(httpServer);
// Runs before engine.io's own listeners: sees every request, known session or not.
httpServer.prependListener('request', (req) => {
  const seen = engineRequest(req.url);
  if (seen?.sid) record(seen.sid, 'polling');
});
httpServer.prependListener('upgrade', (req) => {
  const seen = engineRequest(req.url);
  if (seen?.sid) record(seen.sid, 'websocket');
});
io.engine.on('connection', (engineSocket) => record(engineSocket.id, 'handshake', engineSocket.request.headers['x-limpet-remapped-from'] ?? null));

io.on('connection', (socket) => {
  socket.on('echo', (payload, ack) => {
    if (typeof ack === 'function') ack({ id, transport: socket.conn.transport.name, sid: socket.conn.id, payload });
  });
});

httpServer.listen(port, '127.0.0.1', () => {
  process.stdout.write(`${JSON.stringify({ id, port: httpServer.address().port })}\n`);
});

process.on('SIGTERM', () => process.exit(0));
