import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import type { UpstreamError } from '../errors.js';
import type { ClientResponse } from './client-channel.js';
import { endClientConnection } from './client-send.js';

/** Seconds a client is told to wait when no backend can serve. */
export const RETRY_AFTER_SECONDS = '5';

/** Headers of the answer when no backend can serve the client. */
export const UNAVAILABLE_HEADERS: Readonly<Record<string, string>> = { 'Retry-After': RETRY_AFTER_SECONDS };

/**
 * The one writer of the proxy's own answers: a short plain-text body with the status. It writes to
 * a response (a request Node parsed, HTTP/1.x or HTTP/2) or to a raw socket (a refused upgrade, a request Node
 * could not parse), which is then closed (endClientConnection). A response already under way is
 * cut instead, so the client never takes a partial body for a whole one (on a raw socket the caller
 * knows whether one is). Returns whether the answer was written.
 */
export function sendProxyError(target: ClientResponse | Duplex, status: number, message: string, extra?: Readonly<Record<string, string>>): boolean {
  const body = `${message}\n`;
  if (isResponse(target)) {
    if (target.headersSent) {
      target.destroy();
      return false;
    }
    target.writeHead(status, {
      'Content-Type': 'text/plain; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
      'Cache-Control': 'no-store',
      ...extra,
    });
    target.end(body);
    return true;
  }
  if (!target.writable) {
    target.destroy();
    return false;
  }
  let head = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nCache-Control: no-store\r\n`;
  if (extra !== undefined) for (const name in extra) head += `${name}: ${extra[name]}\r\n`;
  endClientConnection(target, `${head}Connection: close\r\n\r\n${body}`);
  return true;
}

const FAILURE_MESSAGES = { 502: 'Bad gateway', 503: 'No backend is available', 504: 'Gateway timeout' } as const;

/** The answer to a request that failed at its backends: 502, 504, or 503 with Retry-After when none could be reached. */
export function sendUpstreamFailure(target: ClientResponse | Duplex, failure: UpstreamError): void {
  sendProxyError(target, failure.status, FAILURE_MESSAGES[failure.status], failure.status === 503 ? UNAVAILABLE_HEADERS : undefined);
}

function isResponse(target: ClientResponse | Duplex): target is ClientResponse {
  return 'writeHead' in target;
}
