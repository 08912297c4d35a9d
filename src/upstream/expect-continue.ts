import { request as httpRequest, type ClientRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { UpstreamTimeoutError } from '../errors.js';

/**
 * Sends a request that carries `Expect: 100-continue` (RFC 9110 §10.1.1) and drives an undici
 * dispatch handler with what comes back, so the exchange is the same whatever carried it. undici
 * refuses the Expect field and sends a streamed request's head only with its first body byte, so
 * a backend could neither reject an upload before it is sent nor invite it: this path forwards the
 * expectation, sends the head at once, relays the backend's 100 (and other 1xx) through the
 * handler, and lets the client's body through only after it. It is taken only by such requests, on
 * a connection of its own.
 */
export function dispatchExpectingContinue(
  target: URL,
  options: Dispatcher.DispatchOptions & { headers: string[]; body: Readable | null },
  handler: Dispatcher.DispatchHandler,
  connectTimeout: number,
): void {
  const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
  const upstream: ClientRequest = send({
    host: target.hostname,
    port: target.port || (target.protocol === 'https:' ? 443 : 80),
    method: options.method,
    path: options.path,
    headers: [...options.headers, 'Expect', '100-continue'] as unknown as OutgoingHttpHeaders,
    agent: false,
    timeout: connectTimeout,
  });
  const headersTimeout = options.headersTimeout ?? 0;
  let timer: NodeJS.Timeout | null = null;
  const fail = (error: Error) => upstream.destroy(error);
  upstream.once('socket', (socket) => {
    socket.once('connect', () => {
      upstream.setTimeout(0);
      handler.onConnect?.((error?: Error) => fail(error ?? new Error('aborted')));
      if (headersTimeout > 0) timer = setTimeout(fail, headersTimeout, new UpstreamTimeoutError('no response head in time'));
    });
  });
  // Before the connection is up: the same code undici uses, so it is classified as never sent.
  upstream.once('timeout', () => fail(Object.assign(new Error('connect timeout'), { code: 'UND_ERR_CONNECT_TIMEOUT' })));
  upstream.on('continue', () => {
    handler.onHeaders?.(100, [], noop, 'Continue');
    if (options.body === null) upstream.end();
    else {
      // The handler hears of the body as undici would tell it (onBodySent).
      let sent = 0;
      options.body.on('data', (chunk: Buffer) => handler.onBodySent?.(chunk.length, (sent += chunk.length)));
      options.body.pipe(upstream);
    }
  });
  upstream.on('information', (info: { statusCode: number; statusMessage: string; rawHeaders: string[] }) => {
    // Node reports a 100 both here and as 'continue', which handles it.
    if (info.statusCode !== 100) handler.onHeaders?.(info.statusCode, rawBuffers(info.rawHeaders), noop, info.statusMessage);
  });
  upstream.once('response', (res: IncomingMessage) => {
    if (timer !== null) clearTimeout(timer);
    // A final answer before any 100: the body is not wanted, and the connection is not reused.
    options.body?.unpipe(upstream);
    const resume = () => res.resume();
    if (handler.onHeaders?.(res.statusCode ?? 502, rawBuffers(res.rawHeaders), resume, res.statusMessage ?? '') === false) res.pause();
    res.on('data', (chunk: Buffer) => {
      if (handler.onData?.(chunk) === false) res.pause();
    });
    res.once('end', () => {
      handler.onComplete?.([]);
      upstream.destroy();
    });
    res.once('error', (error) => handler.onError?.(error));
  });
  upstream.once('error', (error) => {
    if (timer !== null) clearTimeout(timer);
    handler.onError?.(error);
  });
  // The head goes now; the body waits for the backend's 100.
  upstream.flushHeaders();
}

function rawBuffers(raw: readonly string[]): Buffer[] {
  return raw.map((text) => Buffer.from(text, 'latin1'));
}

function noop(): void {}
