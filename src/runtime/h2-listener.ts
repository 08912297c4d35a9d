import { constants, createServer, type Http2Server, type Http2ServerRequest, type Http2ServerResponse, type ServerHttp2Session, type ServerHttp2Stream } from 'node:http2';
import type { TLSSocket } from 'node:tls';
import { ConnectionAffinity } from '../affinity/policy.js';
import { Http2ResetFloodError } from '../errors.js';
import type { Sequenced } from '../proxy/client-channel.js';
import { cancelStream, Http2StreamChannel, type Http2ClientConnection } from '../proxy/h2-stream.js';
import { sendProxyError } from '../proxy/respond.js';

/** What the HTTP/2 listener takes from the config; a change applies to connections opened after it. */
export interface Http2Settings {
  /** limits.maxConcurrentStreams: streams one connection may have open at once. */
  maxConcurrentStreams: number;
  /** limits.maxHeaderSize: a header list larger than this (as HTTP/2 counts it) gets 431. */
  maxHeaderSize: number;
  /** limits.maxHeaderCount: fields past it get 431 from the pipeline; HTTP/2 has to hold them first. */
  maxHeaderCount: number;
  /** timeouts.clientIdle: a connection with no open stream and no traffic for this long is sent GOAWAY. */
  clientIdle: number;
  /** timeouts.clientRequest: time a client has to send a request's body; 0 = none. */
  clientRequest: number;
}

/** What the HTTP/2 listener hands on, and what it tells of its connections. */
export interface Http2Handlers {
  /** A request on a stream; `expectContinue` when it carried `Expect: 100-continue`. */
  request(req: Http2ServerRequest, res: Http2ServerResponse, channel: Http2StreamChannel, expectContinue: boolean): void;
  /** A request the listener answered itself: 431 (header list too large), 408 (body too slow) or 501 (CONNECT). */
  refused(status: number): void;
  connectionOpened(): void;
  connectionClosed(): void;
  /** A client reset a stream (or broke HTTP/2 on it) before its answer was complete. */
  streamReset(): void;
  /** A connection was closed with ENHANCE_YOUR_CALM for resetting too many streams; `peer` is its address. */
  resetFlood(peer: string): void;
}

/**
 * How many streams a connection may see reset before it is closed: a burst of twice the concurrent
 * streams (a browser that leaves a page cancels what it has in flight), refilled over this window.
 * A client resetting streams as fast as it opens them (the rapid-reset attack, CVE-2023-44487) is
 * closed after that burst, long before the 1,000 that nghttp2 allows.
 */
const RESET_WINDOW_MS = 10_000;

/** Sizes a header list the way SETTINGS_MAX_HEADER_LIST_SIZE does (RFC 9113 §6.5.2): each field's name and value, plus 32. */
const FIELD_OVERHEAD = 32;

/**
 * The resets a connection may still cause: a token bucket of `capacity` that fills at `capacity`
 * per RESET_WINDOW_MS. `take` spends one and says whether there was one to spend.
 */
export class ResetBudget {
  private tokens: number;
  private last: number;

  constructor(
    readonly capacity: number,
    nowMs: number,
  ) {
    this.tokens = capacity;
    this.last = nowMs;
  }

  take(nowMs: number): boolean {
    this.tokens = Math.min(this.capacity, this.tokens + ((nowMs - this.last) * this.capacity) / RESET_WINDOW_MS);
    this.last = nowMs;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}

const kConnection = Symbol('limpet.http2Connection');
type SessionWithConnection = ServerHttp2Session & { [kConnection]?: Http2Connection };

/** One client's HTTP/2 connection: its socket, what its streams share, and what limits it. */
class Http2Connection implements Http2ClientConnection {
  readonly affinity = new ConnectionAffinity();
  /** Streams received and not yet closed: while there are any, the connection is not idle. */
  openStreams = 0;
  /** Closed for a reset flood: streams still arriving are refused, not forwarded. */
  flooded = false;
  /** Requests received in this turn of the event loop, started in the next. */
  private arrived: Sequenced[] = [];

  constructor(
    readonly session: ServerHttp2Session,
    readonly socket: TLSSocket,
    readonly resets: ResetBudget,
  ) {}

  startSoon(request: Sequenced): void {
    if (this.arrived.push(request) === 1) setImmediate(startArrived, this);
  }

  startArrived(): void {
    const arrived = this.arrived;
    this.arrived = [];
    for (const request of arrived) request.start();
  }
}

function startArrived(connection: Http2Connection): void {
  connection.startArrived();
}

/**
 * The HTTP/2 side of the TLS listener. The listener hands it every connection that chose `h2` by
 * ALPN; each becomes a node:http2 session, whose streams are handed on as requests (through Node's
 * compatibility API) to the same pipeline as HTTP/1.1. It owns the connections: their limits (the
 * SETTINGS they are offered, the header list size, the reset budget), idle close, and GOAWAY when
 * the proxy stops.
 */
export class Http2Listener {
  /** Makes sessions of the sockets handed to it; never listens itself. Replaced when settings change. */
  private factory: Http2Server;
  private settings: Http2Settings;
  private readonly connections = new Set<Http2Connection>();
  /** The socket whose session the factory is creating (its 'session' event comes synchronously). */
  private accepting: TLSSocket | null = null;
  private closing = false;

  constructor(
    settings: Http2Settings,
    private readonly handlers: Http2Handlers,
  ) {
    this.settings = settings;
    this.factory = this.createFactory(settings);
  }

  /** A TLS connection that chose h2. */
  accept(socket: TLSSocket): void {
    this.accepting = socket;
    try {
      this.factory.emit('connection', socket);
    } finally {
      this.accepting = null;
    }
  }

  /** New settings, for connections opened from now on; open ones keep theirs. */
  reconfigure(settings: Http2Settings): void {
    const before = this.settings;
    this.settings = settings;
    if (before.maxConcurrentStreams !== settings.maxConcurrentStreams || before.maxHeaderSize !== settings.maxHeaderSize || before.maxHeaderCount !== settings.maxHeaderCount) {
      // The old factory keeps serving the sessions it made; it has no socket of its own to close.
      this.factory = this.createFactory(settings);
    }
  }

  /** Graceful stop: every connection is sent GOAWAY; open streams finish, then each connection closes. */
  goAway(): void {
    this.closing = true;
    for (const connection of this.connections) connection.session.close();
  }

  /** Cuts every connection still open (the shutdown deadline passed). */
  destroyAll(): void {
    for (const connection of this.connections) connection.session.destroy();
  }

  private createFactory(settings: Http2Settings): Http2Server {
    const factory = createServer({
      settings: {
        maxConcurrentStreams: settings.maxConcurrentStreams,
        // Node refuses (resets) a larger list before it is read; one between this proxy's limit and
        // that gets the 431 an HTTP/1.1 client would.
        maxHeaderListSize: Math.max(65_535, 2 * settings.maxHeaderSize),
        enablePush: false,
      },
      // Node counts pseudo-header fields too; fields past limits.maxHeaderCount get 431 from the pipeline.
      maxHeaderListPairs: 2 * (settings.maxHeaderCount + 4),
    });
    factory.on('session', this.onSession);
    factory.on('request', this.onRequest);
    factory.on('checkContinue', this.onExpectContinue);
    factory.on('connect', this.onConnect);
    return factory;
  }

  private readonly onSession = (session: ServerHttp2Session): void => {
    const socket = this.accepting as TLSSocket;
    const connection = new Http2Connection(session, socket, new ResetBudget(2 * this.settings.maxConcurrentStreams, Date.now()));
    (session as SessionWithConnection)[kConnection] = connection;
    this.connections.add(connection);
    this.handlers.connectionOpened();
    session.setTimeout(this.settings.clientIdle, onSessionIdle);
    session.once('close', () => {
      this.connections.delete(connection);
      this.handlers.connectionClosed();
    });
    if (this.closing) session.close();
  };

  private readonly onRequest = (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    this.admit(req, res, false);
  };

  private readonly onExpectContinue = (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    this.admit(req, res, true);
  };

  /** CONNECT asks for a tunnel to any host, which a reverse proxy does not offer (as over HTTP/1.1). */
  private readonly onConnect = (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    if (this.track(req.stream) === null) return;
    this.handlers.refused(501);
    sendProxyError(res, 501, 'CONNECT is not supported by this proxy');
  };

  private admit(req: Http2ServerRequest, res: Http2ServerResponse, expectContinue: boolean): void {
    const stream = req.stream;
    const connection = this.track(stream);
    if (connection === null) return;
    const channel = new Http2StreamChannel(connection, stream, req.headers[':authority']);
    if (headerListSize(req.rawHeaders) > this.settings.maxHeaderSize) {
      this.handlers.refused(431);
      channel.closeAfterAnswer();
      sendProxyError(res, 431, 'Request header fields too large');
      return;
    }
    if (!stream.endAfterHeaders && this.settings.clientRequest > 0) this.limitUpload(req, res, channel, this.settings.clientRequest);
    this.handlers.request(req, res, channel, expectContinue);
  }

  /** Counts the stream on its connection and watches for its reset; null when the connection is closed for a flood. */
  private track(stream: ServerHttp2Stream): Http2Connection | null {
    const connection = (stream.session as SessionWithConnection | undefined)?.[kConnection];
    if (connection === undefined || connection.flooded) {
      stream.close(constants.NGHTTP2_REFUSED_STREAM);
      return null;
    }
    connection.openStreams++;
    stream.once('close', () => connection.openStreams--);
    stream.once('aborted', () => {
      // Aborted by this proxy (a cut response, a stalled client): not the client's doing.
      if (stream.destroyed) return;
      this.handlers.streamReset();
      if (!connection.resets.take(Date.now())) this.closeFlooded(connection);
    });
    return connection;
  }

  /** ENHANCE_YOUR_CALM, and the connection is closed: its streams are cut and their requests aborted. */
  private closeFlooded(connection: Http2Connection): void {
    if (connection.flooded) return;
    connection.flooded = true;
    this.handlers.resetFlood(connection.socket.remoteAddress ?? '');
    // Not from inside nghttp2's callback, which this runs in.
    const error = new Http2ResetFloodError(`more than ${connection.resets.capacity} streams reset within ${RESET_WINDOW_MS / 1000} s`);
    setImmediate(() => connection.session.destroy(error, constants.NGHTTP2_ENHANCE_YOUR_CALM));
  }

  /**
   * timeouts.clientRequest for a stream whose body is still coming: 408 when it has not all arrived
   * in time (or the stream cut, when an answer is already under way), as over HTTP/1.1.
   */
  private limitUpload(req: Http2ServerRequest, res: Http2ServerResponse, channel: Http2StreamChannel, timeoutMs: number): void {
    const timer = setTimeout(() => {
      if (req.stream.destroyed) return;
      if (res.headersSent) {
        cancelStream(req.stream);
        return;
      }
      this.handlers.refused(408);
      channel.closeAfterAnswer();
      sendProxyError(res, 408, 'Request timeout');
    }, timeoutMs);
    const stop = () => clearTimeout(timer);
    req.once('end', stop);
    req.stream.once('close', stop);
  }
}

/**
 * No frame for timeouts.clientIdle. With streams open the connection is not idle (each has its own
 * timeouts); without, it is sent GOAWAY, and one still there a period later (its socket stuck) is cut.
 */
function onSessionIdle(this: ServerHttp2Session): void {
  const connection = (this as SessionWithConnection)[kConnection];
  if (connection !== undefined && connection.openStreams > 0) return;
  if (this.closed) this.destroy();
  else this.close();
}

/** The size of a request's header list as HTTP/2 counts it. */
function headerListSize(raw: readonly string[]): number {
  let size = 0;
  for (let i = 0; i < raw.length; i++) size += (raw[i] as string).length;
  return size + (raw.length / 2) * FIELD_OVERHEAD;
}
