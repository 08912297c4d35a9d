import type { ServerResponse } from 'node:http';

/** Seconds a client is told to wait when no backend can serve. */
const RETRY_AFTER_SECONDS = '5';

/** A short plain-text error from the proxy itself; a response already under way is cut instead. */
export function sendProxyError(res: ServerResponse, status: number, message: string, extra?: Record<string, string>): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${message}\n`;
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...extra,
  });
  res.end(body);
}

export function sendUnavailable(res: ServerResponse): void {
  sendProxyError(res, 503, 'No backend is available', { 'Retry-After': RETRY_AFTER_SECONDS });
}
