import type { OutgoingHttpHeaders } from 'node:http';
import { constants, type ServerHttp2Stream } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { ConnectionAffinity } from '../affinity/policy.js';
import type { ClientChannel, Sequenced } from './client-channel.js';
import { ClientSendWatch } from './client-send.js';
import type { RequestHead } from './request-head.js';

/** What the streams of one HTTP/2 connection share. */
export interface Http2ClientConnection {
  /** The TLS socket the connection runs on: its peer is the client. */
  readonly socket: TLSSocket;
  /** Where the connection's requests without an affinity cookie go (cookie mode). */
  readonly affinity: ConnectionAffinity;
  /**
   * Starts a request once the frames read with it are processed: a stream the client reset in the
   * same read (rapid reset) is closed by then, and never reaches a backend.
   */
  startSoon(request: Sequenced): void;
}

/**
 * One HTTP/2 stream as the pipeline sees it: a request forwarded beside the connection's other
 * streams, waiting for none of them, whose answer goes back in HTTP/2's terms — `:authority` made the Host an HTTP/1.1
 * backend needs, a body without Content-Length sent on chunked, the response head as HTTP/2 header
 * fields (no status text, no connection-specific fields), interim responses as extra HEADERS frames.
 */
export class Http2StreamChannel implements ClientChannel {
  /** timeouts.clientSend for this stream: a client whose flow-control window stays shut is cut off like a stalled socket. */
  private sendWatch: ClientSendWatch | null = null;

  constructor(
    private readonly connection: Http2ClientConnection,
    private readonly stream: ServerHttp2Stream,
    /** The request's `:authority`, if it sent one. */
    private readonly authority: string | undefined,
  ) {}

  get socket(): TLSSocket {
    return this.connection.socket;
  }

  /** Reset (by either side) or destroyed: a reset with NO_ERROR leaves a stream closed but not yet destroyed. */
  get closed(): boolean {
    return this.stream.closed || this.stream.destroyed;
  }

  /** Streams are independent: no request waits for another. */
  admit(request: Sequenced): void {
    this.connection.startSoon(request);
  }

  finished(): void {}

  sendStalled(timeoutMs: number): void {
    if (this.sendWatch === null) this.sendWatch = new ClientSendWatch(this.stream, timeoutMs, cancelStream);
    else this.sendWatch.stalled();
  }

  completeHead(head: RequestHead): boolean {
    head.connectionAffinity = this.connection.affinity;
    head.viaEntry = '2 limpet';
    // A body without a length (RFC 9113 §8.1.1) goes to the backend chunked, counted against maxBodySize.
    if (head.contentLength === undefined && !this.stream.endAfterHeaders) head.chunked = true;
    return head.adoptAuthority(this.authority);
  }

  /** A waiting stream's client leaves by resetting it, which closes the response like any other leaving. */
  queued(): void {}

  dequeued(): void {}

  sendHead(_res: unknown, status: number, _statusText: string, fields: string[]): boolean {
    const stream = this.stream;
    // Reset by the client meanwhile, or answered by the listener (a 408): the stream's close ends the exchange.
    if (stream.destroyed || stream.closed || stream.headersSent) return true;
    try {
      stream.respond(http2Fields(status, fields));
    } catch {
      // Node refuses what HTTP/2 cannot carry, such as a field that may appear only once repeated.
      return false;
    }
    return true;
  }

  sendInterim(_res: unknown, status: number, _statusText: string, fields: string[]): void {
    const stream = this.stream;
    if (stream.destroyed || stream.closed || stream.headersSent) return;
    try {
      stream.additionalHeaders(http2Fields(status, fields));
    } catch {
      // An interim response HTTP/2 cannot carry is news the client can do without: the final answer follows.
    }
  }

  /**
   * The rest of the request is not wanted: once the answer is sent, RST_STREAM with NO_ERROR tells
   * the client to stop sending it (RFC 9113 §8.1). The connection's other streams go on.
   */
  closeAfterAnswer(): void {
    this.stream.once('finish', closeStreamQuietly);
  }
}

function closeStreamQuietly(this: ServerHttp2Stream): void {
  if (!this.closed) this.close(constants.NGHTTP2_NO_ERROR);
}

/**
 * Cuts a stream off mid-answer with RST_STREAM CANCEL. Not NO_ERROR: a client may read a stream
 * reset with NO_ERROR as ended, and take the cut answer for a whole one.
 */
export function cancelStream(stream: Duplex): void {
  (stream as ServerHttp2Stream).close(constants.NGHTTP2_CANCEL);
}

/**
 * A response head as HTTP/2 header fields: `:status`, lower-case names, repeated fields as lists,
 * no status text (the connection-specific fields RFC 9113 §8.2.2 forbids went with the hop-by-hop
 * ones). The object has no prototype, so a field named like one of Object's own (`__proto__`) is a
 * field like any other.
 */
function http2Fields(status: number, fields: readonly string[]): OutgoingHttpHeaders {
  const headers = Object.create(null) as OutgoingHttpHeaders;
  headers[':status'] = status;
  for (let i = 0; i < fields.length; i += 2) {
    const name = (fields[i] as string).toLowerCase();
    const value = fields[i + 1] as string;
    const earlier = headers[name];
    if (earlier === undefined) headers[name] = value;
    else if (Array.isArray(earlier)) earlier.push(value);
    else headers[name] = [earlier as string, value];
  }
  return headers;
}
