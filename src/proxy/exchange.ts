import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import type { AffinityRouter } from '../affinity/router.js';
import { Placement } from '../affinity/router.js';
import type { ClientAddressResolver } from '../affinity/client-address.js';
import type { Backend } from '../upstream/backend.js';
import { connectionListedHeaders, isHopByHop, removeHeaders } from './headers.js';
import { originFormPath, RequestHead } from './request-head.js';
import { sendProxyError, sendUnavailable } from './responses.js';
import { BodySizeLimit, headLimitStatus, rejectOverLimit, type ClientLimits } from './client-limits.js';

/** What forwarding needs from the running proxy; swapped whole on reload. */
export interface ForwardingContext {
  readonly router: AffinityRouter;
  readonly clients: ClientAddressResolver;
  /** Time allowed for response headers, and between body chunks, before a 504 / cut. */
  readonly responseTimeout: number;
  readonly retries: number;
  readonly protocol: 'http' | 'https';
  /** Lower-case name of the affinity header in header mode, else null. */
  readonly affinityHeader: string | null;
  readonly limits: ClientLimits;
  readonly accessLog: Logger | null;
  readonly observer: ExchangeObserver;
}

/** Hooks for what the data path learns: passive health and metrics listen here. */
export interface ExchangeObserver {
  /** A request met a connection failure or timeout at `backend`: passive detection counts these. */
  upstreamFailed(backend: Backend, error: Error): void;
  /** A request that never reached `failed` is being sent again. */
  retried(failed: Backend): void;
  /** A response (or proxy error) was sent for a request placed on `backend`; duration in seconds. */
  completed(backend: Backend | null, status: number, seconds: number): void;
}

const kExchange = Symbol('limpet.exchange');
type ResponseWithExchange = ServerResponse & { [kExchange]?: Exchange };

/** Errors that prove the request never reached the backend, so sending it elsewhere is safe. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
/** A pooled keep-alive socket the backend had closed: the request died on the wire, unanswered. */
const STALE_SOCKET_CODES = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);
/** Methods that may be sent twice without changing the outcome (RFC 9110 §9.2.2). */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/**
 * One client request on its way through the proxy: placement, the forwarded request, and the
 * streamed response. It is its own undici dispatch handler, so forwarding allocates no closures.
 */
export class Exchange implements Dispatcher.DispatchHandler {
  private readonly placement = new Placement();
  private readonly head = new RequestHead();
  private options: Dispatcher.DispatchOptions | null = null;
  private abortUpstream: ((error?: Error) => void) | null = null;
  private resumeUpstream: (() => void) | null = null;
  /** Set once undici starts writing the request to a socket: from then on it may have reached the backend. */
  private sent = false;
  private responded = false;
  private finished = false;
  private clientGone = false;
  private readonly startedAt = performance.now();
  private attempts = 0;
  private status = 0;
  /** A stale keep-alive resend happens at most once per request. */
  private resentStale = false;
  private remapHeaderSent = false;
  /** Counts a chunked body when a body limit is set; its Content-Length was checked up front otherwise. */
  private bodyLimit: BodySizeLimit | null = null;
  private drainListening = false;
  /** While the request waits for a free connection (limits.maxBackendConnections): where, and its deadline. */
  private queuedOn: Backend | null = null;
  private queueTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly context: ForwardingContext,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
  ) {}

  start(): void {
    const { req, res, context } = this;
    const path = originFormPath(req.url ?? '');
    if (path === null) {
      this.refuseMalformed('Bad request target');
      return;
    }
    const head = this.head;
    head.copy(req, context.affinityHeader);
    if (head.hostConflicts(req.url as string, path)) {
      this.refuseMalformed('Bad Host');
      return;
    }
    const overLimit = headLimitStatus(req, context.limits, head.contentLength);
    if (overLimit !== 0) {
      this.finish(null, overLimit);
      rejectOverLimit(req, res, overLimit, head.chunked ? Infinity : Number(head.contentLength ?? 0));
      return;
    }
    context.router.place(this.placement, req.socket, head, Date.now());
    const backend = this.placement.backend;
    if (backend === null) {
      this.finish(null, 503);
      sendUnavailable(res);
      return;
    }
    head.appendForwarding(req, context.clients, context.protocol, this.placement.remappedFrom);
    this.remapHeaderSent = this.placement.remappedFrom !== null;
    (res as ResponseWithExchange)[kExchange] = this;
    res.on('close', onClientClose);
    this.options = {
      path,
      method: req.method as Dispatcher.HttpMethod,
      headers: head.headers,
      body: head.hasBody ? this.body(head.chunked) : null,
      headersTimeout: context.responseTimeout,
      bodyTimeout: context.responseTimeout,
    };
    this.dispatch(backend);
  }

  // --- undici dispatch handler ---------------------------------------------------------------

  onConnect(abort: (error?: Error) => void): void {
    this.leaveQueue();
    this.sent = true;
    this.abortUpstream = abort;
    // Gone, or answered 503 while it waited in the queue: it must not reach the backend now.
    if (this.clientGone || this.finished) abort();
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) return true; // 1xx: the client side sends its own 100 Continue
    this.responded = true;
    this.resumeUpstream = resume;
    const flat: string[] = [];
    let connectionValue: string | undefined;
    for (let i = 0; i < rawHeaders.length; i += 2) {
      const name = (rawHeaders[i] as Buffer).toString('latin1');
      const lower = name.toLowerCase();
      if (isHopByHop(lower)) {
        if (lower === 'connection') connectionValue = (rawHeaders[i + 1] as Buffer).toString('latin1');
        continue;
      }
      flat.push(name, (rawHeaders[i + 1] as Buffer).toString('latin1'));
    }
    if (connectionValue !== undefined) {
      const listed = connectionListedHeaders(connectionValue);
      if (listed !== null) removeHeaders(flat, listed);
    }
    const setCookie = this.context.router.setCookieFor(this.placement);
    if (setCookie !== null) flat.push('Set-Cookie', setCookie);
    const res = this.res;
    if (statusText) res.writeHead(statusCode, statusText, flat);
    else res.writeHead(statusCode, flat);
    this.status = statusCode;
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.res.write(chunk)) return true;
    // One listener for the whole response: 'drain' only follows a write that returned false, and
    // a large body pauses many times (once() would wrap a new listener each time).
    if (!this.drainListening) {
      this.drainListening = true;
      this.res.on('drain', onClientDrain);
    }
    return false;
  }

  onComplete(): void {
    this.res.end();
    this.finish(this.placement.backend, this.status);
  }

  onError(error: Error): void {
    this.leaveQueue();
    // Already answered (a 503 after waiting in the queue): this is the abort of the dequeued request.
    if (this.finished) return;
    const backend = this.placement.backend as Backend;
    if (this.clientGone) {
      this.finish(backend, 499);
      return;
    }
    if (this.bodyLimit?.exceeded === true) {
      // The client's fault, not the backend's: no passive failure, no retry.
      this.finish(backend, 413);
      if (this.responded) this.res.destroy();
      else rejectOverLimit(this.req, this.res, 413, Infinity);
      return;
    }
    if (this.responded) {
      // Mid-response: the client must see a cut response, not a complete-looking one.
      this.finish(backend, this.status);
      this.res.destroy(error);
      return;
    }
    const code = (error as NodeJS.ErrnoException).code;
    const notSent = !this.sent || (code !== undefined && NOT_SENT_CODES.has(code));
    // The connection died before any answer, and sending twice is harmless with no body read.
    const safeToResend =
      !notSent && code !== undefined && STALE_SOCKET_CODES.has(code) &&
      this.options?.body === null && IDEMPOTENT_METHODS.has(this.req.method ?? '');
    // The first time that is most likely a stale keep-alive socket, no sign of a sick backend: resend
    // to the same backend (the client keeps its pin). Failing again, the backend is the problem: the
    // request goes to the next backend, as nginx's proxy_next_upstream does for idempotent requests.
    const staleSocket = safeToResend && !this.resentStale;
    if (!staleSocket) this.context.observer.upstreamFailed(backend, error);
    if ((notSent || safeToResend) && this.attempts <= this.context.retries) {
      const next = staleSocket ? backend : this.context.router.retry(this.placement);
      if (next !== null) {
        this.resentStale ||= staleSocket;
        this.context.observer.retried(backend);
        backend.inflight--;
        if (next !== backend && this.placement.remappedFrom !== null && !this.remapHeaderSent) {
          (this.options as { headers: string[] }).headers.push('X-Limpet-Remapped-From', this.placement.remappedFrom);
          this.remapHeaderSent = true;
        }
        // Let undici finish tearing down the failed connection first, or the resend joins its fate.
        setImmediate(resendExchange, this, next, staleSocket);
        return;
      }
    }
    const status = code === 'UND_ERR_HEADERS_TIMEOUT' ? 504 : 502;
    backend.lastError = error.message;
    this.finish(backend, status);
    sendProxyError(this.res, status, status === 504 ? 'Gateway timeout' : 'Bad gateway');
  }

  // --- internals ----------------------------------------------------------------------------


  /** A request no backend should see: 400, and the connection is closed, as for a parse error. */
  private refuseMalformed(message: string): void {
    this.finish(null, 400);
    this.res.shouldKeepAlive = false;
    sendProxyError(this.res, 400, message);
  }

  private body(chunked: boolean): IncomingMessage | BodySizeLimit {
    const max = this.context.limits.maxBodySize;
    if (!chunked || max === 0) return this.req;
    this.bodyLimit = new BodySizeLimit(max);
    return this.req.pipe(this.bodyLimit);
  }

  /** A retry's second dispatch, unless the client left while it waited. */
  resend(backend: Backend, newConnection: boolean): void {
    if (this.clientGone) this.finish(null, 499);
    else this.dispatch(backend, newConnection);
  }

  /** `newConnection`: after a stale socket, as the pool may hold more sockets the backend closed. */
  private dispatch(backend: Backend, newConnection = false): void {
    this.attempts++;
    this.sent = false;
    // Every allowed connection is busy: the pool queues the request, and the wait gets a deadline.
    if (!newConnection && backend.maxConnections > 0 && backend.inflight >= backend.maxConnections) this.enterQueue(backend);
    backend.inflight++;
    this.placement.backend = backend;
    if (newConnection) backend.dispatchOnNewConnection(this.options as Dispatcher.DispatchOptions, this);
    else backend.dispatcher.dispatch(this.options as Dispatcher.DispatchOptions, this);
  }

  private enterQueue(backend: Backend): void {
    this.queuedOn = backend;
    backend.queued++;
    this.queueTimer = setTimeout(queueTimedOut, this.context.responseTimeout, this);
  }

  private leaveQueue(): void {
    if (this.queuedOn === null) return;
    clearTimeout(this.queueTimer as NodeJS.Timeout);
    this.queuedOn.queued--;
    this.queuedOn = null;
    this.queueTimer = null;
  }

  /**
   * No connection came free within timeouts.response: 503, as HAProxy answers a queue timeout. The
   * backend is busy, not failing, so passive detection is not told; undici still holds the request
   * in its queue and it is aborted as soon as it is dequeued (onConnect).
   */
  onQueueTimeout(): void {
    const backend = this.queuedOn as Backend;
    // finish() leaves the queue.
    this.finish(backend, this.clientGone ? 499 : 503);
    if (!this.clientGone) sendProxyError(this.res, 503, 'Backend busy', { 'Retry-After': '1' });
  }

  private finish(backend: Backend | null, status: number): void {
    if (this.finished) return;
    this.finished = true;
    this.leaveQueue();
    if (backend !== null && this.attempts > 0) backend.inflight--;
    const seconds = (performance.now() - this.startedAt) / 1000;
    this.context.observer.completed(backend, status, seconds);
    const log = this.context.accessLog;
    if (log !== null) {
      log.info({
        msg: 'request',
        method: this.req.method,
        path: this.req.url,
        status,
        backend: backend?.id ?? null,
        remappedFrom: this.placement.remappedFrom,
        ms: Math.round(seconds * 1e4) / 10,
        // undici unsets `req.socket` when it destroys a request body it has sent.
        client: (this.req.socket ?? this.res.socket)?.remoteAddress ?? null,
      });
    }
  }

  /** The client went away: stop the upstream request and free its socket. */
  onClientClose(): void {
    if (this.finished) return;
    this.clientGone = true;
    if (this.abortUpstream !== null) this.abortUpstream();
    // Still queued: done now, and aborted the moment undici dequeues it (onConnect).
    else if (this.queuedOn !== null) this.finish(this.queuedOn, 499);
  }

  onClientDrain(): void {
    this.resumeUpstream?.();
  }
}

function queueTimedOut(exchange: Exchange): void {
  exchange.onQueueTimeout();
}

function resendExchange(exchange: Exchange, backend: Backend, newConnection: boolean): void {
  exchange.resend(backend, newConnection);
}

function onClientClose(this: ResponseWithExchange): void {
  this[kExchange]?.onClientClose();
}

function onClientDrain(this: ResponseWithExchange): void {
  this[kExchange]?.onClientDrain();
}
