import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';
import type { Placement } from '../affinity/policy.js';
import { BodyTooLargeError, classifyUpstreamFailure, UpstreamBusyError } from '../errors.js';
import type { Backend } from '../upstream/backend.js';
import { connectionListedHeaders, isHopByHop, removeHeaders } from './headers.js';
import { RequestHead } from './request-head.js';
import { sendProxyError } from './respond.js';
import { BodySizeLimit, rejectOverLimit } from './client-limits.js';
import type { ForwardingContext } from './context.js';
import { prepareForward } from './prepare.js';
import { countsAgainstBackend, retryAction, type AttemptFacts } from './retry-policy.js';

const kExchange = Symbol('limpet.exchange');
type ResponseWithExchange = ServerResponse & { [kExchange]?: Exchange };

/** Methods that may be sent twice without changing the outcome (RFC 9110 §9.2.2). */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/**
 * One client request on its way through the proxy: placement, the forwarded request, and the
 * streamed response. It is its own undici dispatch handler, so forwarding allocates no closures.
 */
export class Exchange implements Dispatcher.DispatchHandler {
  private readonly placement: Placement;
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
  private resentFresh = false;
  private drainListening = false;
  /** While the request waits for a free connection (limits.maxBackendConnections): where, and its deadline. */
  private queuedOn: Backend | null = null;
  private queueTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly context: ForwardingContext,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
  ) {
    this.placement = context.affinity.newPlacement();
  }

  start(): void {
    const { req, res, context, head } = this;
    const path = prepareForward(context, req, head, this.placement);
    if (typeof path !== 'string') {
      this.finish(null, path.status);
      if (path.status === 400) {
        // A request no backend should see: the connection is closed, as for a parse error.
        res.shouldKeepAlive = false;
        sendProxyError(res, 400, path.message);
      } else if (path.status === 503) sendProxyError(res, 503, path.message, path.headers);
      else rejectOverLimit(req, res, path.status, head.chunked ? Infinity : Number(head.contentLength ?? 0));
      return;
    }
    const backend = this.placement.backend as Backend;
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
    const setCookie = this.context.affinity.responseCookie(this.placement);
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
    if (error instanceof BodyTooLargeError) {
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
    const failure = classifyUpstreamFailure(error, this.sent);
    const facts: AttemptFacts = {
      replayable: this.options?.body === null && IDEMPOTENT_METHODS.has(this.req.method ?? ''),
      pooled: true,
      resentFresh: this.resentFresh,
      attempts: this.attempts,
      retries: this.context.retries,
    };
    if (countsAgainstBackend(failure, facts)) this.context.observer.upstreamFailed(backend, failure);
    const action = retryAction(failure, facts);
    if (action !== 'give-up') {
      const next = action === 'resend-fresh' ? backend : this.context.affinity.retry(this.placement);
      if (next !== null) {
        this.resentFresh ||= action === 'resend-fresh';
        this.context.observer.retried(backend);
        backend.requestFinished();
        if (next !== backend && this.placement.remappedFrom !== null) this.head.addRemapNotice(this.placement.remappedFrom);
        // Let undici finish tearing down the failed connection first, or the resend joins its fate.
        setImmediate(resendExchange, this, next, action === 'resend-fresh');
        return;
      }
    }
    backend.noteError(failure.message);
    this.finish(backend, failure.status);
    sendProxyError(this.res, failure.status, failure.status === 504 ? 'Gateway timeout' : 'Bad gateway');
  }

  // --- internals ----------------------------------------------------------------------------


  private body(chunked: boolean): IncomingMessage | BodySizeLimit {
    const max = this.context.limits.maxBodySize;
    if (!chunked || max === 0) return this.req;
    // Counts a chunked body; a Content-Length was checked up front.
    return this.req.pipe(new BodySizeLimit(max));
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
    if (!newConnection && backend.atConnectionCap) this.enterQueue(backend);
    backend.requestStarted();
    this.placement.backend = backend;
    if (newConnection) backend.dispatchOnNewConnection(this.options as Dispatcher.DispatchOptions, this);
    else backend.dispatcher.dispatch(this.options as Dispatcher.DispatchOptions, this);
  }

  private enterQueue(backend: Backend): void {
    this.queuedOn = backend;
    backend.queueEntered();
    this.queueTimer = setTimeout(queueTimedOut, this.context.responseTimeout, this);
  }

  private leaveQueue(): void {
    if (this.queuedOn === null) return;
    clearTimeout(this.queueTimer as NodeJS.Timeout);
    this.queuedOn.queueLeft();
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
    const busy = new UpstreamBusyError(`no connection to ${backend.id} came free in time`);
    // finish() leaves the queue.
    this.finish(backend, this.clientGone ? 499 : busy.status);
    if (!this.clientGone) sendProxyError(this.res, busy.status, 'Backend busy', BUSY_HEADERS);
  }

  private finish(backend: Backend | null, status: number): void {
    if (this.finished) return;
    this.finished = true;
    this.leaveQueue();
    if (backend !== null && this.attempts > 0) backend.requestFinished();
    const seconds = (performance.now() - this.startedAt) / 1000;
    this.context.observer.completed(backend, status, seconds);
    const log = this.context.accessLog;
    if (log !== null) {
      log.info({
        msg: 'request',
        method: this.req.method,
        path: this.context.accessLogQuery ? this.req.url : this.req.url?.split('?', 1)[0],
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

/** A busy backend frees a connection soon: ask for a quick retry (HAProxy's queue timeout answer). */
const BUSY_HEADERS = { 'Retry-After': '1' } as const;

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
