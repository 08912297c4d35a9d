// Reference ceiling: a featureless pass-through built on node:http + undici. Every request goes to
// the first backend through one `undici.Pool`, request and response bodies streamed, hop-by-hop
// headers dropped. No stickiness, health checks, retries, forwarding headers or metrics: whatever
// limpet costs beyond this is the price of its features, what this costs is Node's HTTP stack.
//
//   node dist/bench/undici-passthrough.js --listen 127.0.0.1:8082 --backends http://127.0.0.1:3001
//
// Extra backends are accepted (same CLI as http-proxy-sticky) and ignored.
// Prints `listening http://HOST:PORT` on stdout once it accepts connections (port 0 picks a free one).
import http from 'node:http';
import { baselineArgs, exitOnStopSignals, listenAndAnnounce } from './baseline-args.js';
import { Pool } from 'undici';

const { host, port, backends } = baselineArgs('undici-passthrough');
const origin = backends[0]!;

const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade',
  'proxy-authorization', 'proxy-authenticate', 'expect',
]);

function endToEnd(headers: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

const pool = new Pool(origin);

const server = http.createServer((req, res) => {
  const hasBody = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
  pool.stream(
    {
      path: req.url ?? '/',
      method: req.method as Parameters<Pool['stream']>[0]['method'],
      headers: endToEnd(req.headers),
      body: hasBody ? req : null,
    },
    ({ statusCode, headers }) => {
      res.writeHead(statusCode, endToEnd(headers));
      return res;
    },
    (error) => {
      if (error === null) return;
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end('bad gateway\n');
    },
  );
});
listenAndAnnounce(server, host, port);
exitOnStopSignals();
