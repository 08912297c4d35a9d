import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { RequestHead } from './request-head.js';

/**
 * A client's request as the pipeline reads it: node:http's IncomingMessage, or the request of an
 * HTTP/2 stream (node:http2's compatibility API). Both are one as they are.
 */
export interface ClientRequest extends Readable {
  readonly url?: string | undefined;
  readonly method?: string | undefined;
  /** Names and values in arrival order; an HTTP/2 request's pseudo-header fields come first. */
  readonly rawHeaders: string[];
  readonly headers: IncomingHttpHeaders;
  /** Whether the whole request, body included, has arrived. */
  readonly complete: boolean;
  /** "1.1", "1.0" or "2.0". */
  readonly httpVersion: string;
}

/** The answer to a client's request as the pipeline writes it: node:http's ServerResponse, or an HTTP/2 stream's. */
export interface ClientResponse {
  readonly headersSent: boolean;
  /** Bytes written but not yet taken by the client's connection or stream. */
  readonly writableLength: number;
  writeHead(status: number, headers: OutgoingHttpHeaders): unknown;
  writeContinue(): unknown;
  write(chunk: Buffer): boolean;
  end(): unknown;
  end(body: string): unknown;
  destroy(error?: Error): unknown;
  on(event: 'close' | 'drain', listener: () => void): unknown;
}

/** What a client channel sequences: a request that can be started once the ones before it are answered. */
export interface Sequenced {
  start(): void;
  /** Whether the whole request (head and body) has arrived. */
  readonly received: boolean;
}

/** A request waiting for a backend connection, which must hear of its client leaving meanwhile. */
export interface QueuedRequest {
  onClientClose(): void;
}

/**
 * Where a request came from, and what differs with it: an HTTP/1.x connection (ClientConnection:
 * its requests one at a time, in order) or an HTTP/2 stream (one request beside the others of its
 * connection). The exchange forwards alike through either; the channel knows how the client's
 * protocol frames what goes back, and when the client has gone.
 */
export interface ClientChannel {
  /** The client's connection (for HTTP/2, the TLS socket the stream's connection runs on): its peer is the client. */
  readonly socket: Socket;
  /** Whether the client has gone: its connection, or its HTTP/2 stream, is closed. */
  readonly closed: boolean;
  /** Starts the request now, or once those before it are answered. */
  admit(request: Sequenced): void;
  /** The current request is answered (or abandoned). */
  finished(): void;
  /** A write to the client returned false: timeouts.clientSend watches the client from now on. */
  sendStalled(timeoutMs: number): void;
  /**
   * Adds to the head what the client said outside its header fields (HTTP/2: the authority, a body
   * without a length, the connection's first placement). False when that makes the request bad (400).
   */
  completeHead(head: RequestHead): boolean;
  /** The request waits for a backend connection (limits.maxBackendConnections); `dequeued` when it got one or gave up. */
  queued(request: QueuedRequest): void;
  dequeued(): void;
  /** Writes the response head; false when the client's protocol cannot carry it (the exchange then answers 502). */
  sendHead(res: ClientResponse, status: number, statusText: string, fields: string[]): boolean;
  /** Relays an interim (1xx) response. */
  sendInterim(res: ClientResponse, status: number, statusText: string, fields: string[]): void;
  /** The rest of the request will not be read: the channel ends after this answer (HTTP/2: the stream, not the connection). */
  closeAfterAnswer(res: ClientResponse): void;
}
