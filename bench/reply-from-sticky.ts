// Baseline: the sticky proxy a Fastify user would write with @fastify/reply-from. Same stickiness as
// bench/http-proxy-sticky.ts (FNV-1a hash of the client's socket address onto the backend list, via
// reply-from's getUpstream), reply-from's default undici agent (keep-alive pools, 128 connections
// per backend), X-Forwarded-For added, reply-from's own 5xx answers on errors. No health checks,
// failover or metrics.
//
//   node dist/bench/reply-from-sticky.js --listen 127.0.0.1:8083 --backends http://127.0.0.1:3001,http://127.0.0.1:3002
//
// Prints `listening http://HOST:PORT` on stdout once it accepts connections (port 0 picks a free one).
import type { IncomingHttpHeaders } from 'node:http';
import replyFrom from '@fastify/reply-from';
import Fastify from 'fastify';
import { baselineArgs, exitOnStopSignals } from './baseline-args.js';
import { backendFor } from './ip-hash.js';

const { host, port, backends } = baselineArgs('reply-from-sticky');

const app = Fastify({ logger: false });
// Request bodies stream through untouched instead of being parsed (or refused with 415).
app.removeAllContentTypeParsers();
app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
await app.register(replyFrom, { disableRequestLogging: true });

function withForwardedFor(client: string | undefined, headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const previous = headers['x-forwarded-for'];
  headers['x-forwarded-for'] = previous === undefined ? (client ?? '') : `${String(previous)}, ${client ?? ''}`;
  return headers;
}

app.all('/*', (request, reply) =>
  reply.from(request.url, {
    getUpstream: (req) => backendFor(req.socket.remoteAddress, backends),
    rewriteRequestHeaders: (req, headers) => withForwardedFor(req.socket.remoteAddress, headers),
  }));

const address = await app.listen({ host, port });
process.stdout.write(`listening ${address}\n`);
exitOnStopSignals();
