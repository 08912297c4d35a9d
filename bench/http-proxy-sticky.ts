// Baseline: the sticky proxy a Node user would otherwise write by hand with `http-proxy`.
// IP-hash stickiness (the client's socket address hashed onto the backend list), one keep-alive
// agent for upstream connections, 502 when the backend cannot be reached. No health checks,
// no failover, no metrics — just the routing and forwarding that limpet also does on every request.
//
//   node dist/bench/http-proxy-sticky.js --listen 127.0.0.1:8081 --backends http://127.0.0.1:3001,http://127.0.0.1:3002
//
// Prints `listening http://HOST:PORT` on stdout once it accepts connections (port 0 picks a free one).
import http from 'node:http';
import { baselineArgs, exitOnStopSignals, listenAndAnnounce } from './baseline-args.js';
import { backendFor } from './ip-hash.js';
import httpProxy from 'http-proxy';

const { host, port, backends } = baselineArgs('http-proxy-sticky');

const agent = new http.Agent({ keepAlive: true });
const proxy = httpProxy.createProxyServer({ xfwd: true });
proxy.on('error', (_error, _req, res) => {
  if (!(res instanceof http.ServerResponse)) {
    res.destroy();
    return;
  }
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(502, { 'content-type': 'text/plain' });
  res.end('bad gateway\n');
});

const server = http.createServer((req, res) => {
  proxy.web(req, res, { target: backendFor(req.socket.remoteAddress, backends), agent });
});
listenAndAnnounce(server, host, port);
exitOnStopSignals();
