import { Transform, type TransformCallback } from 'node:stream';
import { BodyTooLargeError } from '../errors.js';
import type { ClientChannel, ClientRequest, ClientResponse } from './client-channel.js';
import { leadingPseudoFields } from './headers.js';
import { sendProxyError } from './respond.js';

/** What a client may send, checked on every request before it is placed or forwarded. */
export interface ClientLimits {
  readonly maxHeaderCount: number;
  readonly maxUrlLength: number;
  /** 0: no limit. */
  readonly maxBodySize: number;
  /** Forward header names containing "_" (dropped by default). */
  readonly allowUnderscoreHeaders: boolean;
}

/**
 * An over-limit body of up to this many unread bytes is read and discarded, so the client gets its
 * 413 intact and keeps the connection; beyond it the connection is closed instead.
 */
const DISCARD_AT_MOST = 1024 * 1024;

/**
 * The status a request's head earns for breaking a limit (431, 414 or 413), or 0 within limits.
 * HTTP/2's pseudo-header fields (the request line's parts) are not header fields here.
 */
export function headLimitStatus(req: ClientRequest, limits: ClientLimits, contentLength: string | undefined): 0 | 413 | 414 | 431 {
  const raw = req.rawHeaders;
  if (raw.length - 2 * leadingPseudoFields(raw) > 2 * limits.maxHeaderCount) return 431;
  if ((req.url as string).length > limits.maxUrlLength) return 414;
  if (limits.maxBodySize > 0 && contentLength !== undefined && Number(contentLength) > limits.maxBodySize) return 413;
  return 0;
}

/** The short plain-text answer for each limit. */
export const LIMIT_MESSAGES = { 413: 'Request body too large', 414: 'Request target too long', 431: 'Too many request header fields' } as const;

/** Answers a request that broke a limit without forwarding it, and gets rid of its unread body. */
export function rejectOverLimit(req: ClientRequest, res: ClientResponse, channel: ClientChannel, status: 413 | 414 | 431, unreadBytes: number): void {
  if (unreadBytes > DISCARD_AT_MOST) channel.closeAfterAnswer(res);
  // Reading the rest lets the client see the answer rather than a reset while it is still sending.
  req.resume();
  sendProxyError(res, status, LIMIT_MESSAGES[status]);
}

/**
 * Passes a chunked body through while counting it; past `maxBytes` it fails with BodyTooLargeError,
 * which aborts the upstream request and tells the exchange to answer 413 rather than 502.
 */
export class BodySizeLimit extends Transform {
  private seen = 0;

  constructor(private readonly maxBytes: number) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen <= this.maxBytes) {
      callback(null, chunk);
      return;
    }
    callback(new BodyTooLargeError(`request body over ${this.maxBytes} bytes`));
  }
}
