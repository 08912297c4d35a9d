import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { Placement } from '../affinity/policy.js';
import {
  bodilessLengthMismatch, BodyTooLargeError, classifyUpstreamFailure, LocalResourceError, UpstreamBusyError, UpstreamDownError, UpstreamProtocolError,
} from '../errors.js';
import { bodyRelayed } from '../runtime/relayed-garbage.js';
import type { Backend, InflightRequest } from '../upstream/backend.js';
import { CONTINUE_STAND_IN } from '../upstream/interim-responses.js';
import { copyResponseHeaders } from './headers.js';
import { RequestHead } from './request-head.js';
import { sendProxyError, sendUpstreamFailure } from './respond.js';
import { BodySizeLimit, rejectOverLimit } from './client-limits.js';
import type { ClientChannel, ClientRequest, ClientResponse, QueuedRequest, Sequenced } from './client-channel.js';
import type { ForwardingContext } from './context.js';
import { prepareForward } from './prepare.js';
import { countsAgainstBackend, retryAction, type AttemptFacts } from './retry-policy.js';

const kExchange = Symbol('limpet.exchange');
type ResponseWithExchange = ClientResponse & { [kExchange]?: Exchange };

/** Methods that may be sent twice without changing the outcome (RFC 9110 §9.2.2). */
const IDEMPOTENT_METHODS = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE']);

/**
 * One client request on its way through the proxy: placement, the forwarded request, and the
 * streamed response. It is its own undici dispatch handler, so forwarding allocates no closures.
 */
export class Exchange implements Dispatcher.DispatchHandler, Sequenced, InflightRequest, QueuedRequest {
  inflightPrev: InflightRequest | null = null;
  inflightNext: InflightRequest | null = null;
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
  /** This attempt's backend was marked down before it answered: the request goes to the next one. */
  private withdrawn = false;
  /** A stale keep-alive resend happens at most once per request. */
  private resentFresh = false;
  private drainListening = false;
  /** While the request waits for a free connection (limits.maxBackendConnections): where, and its deadline. */
  private queuedOn: Backend | null = null;
  private queueTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly context: ForwardingContext,
    private readonly req: ClientRequest,
    private readonly res: ClientResponse,
    /** Where the request came from: an HTTP/1.x connection (its requests one at a time) or an HTTP/2 stream. */
    private readonly channel: ClientChannel,
    /** The client sent `Expect: 100-continue`: the backend decides whether the body is wanted. */
    private readonly expectContinue = false,
  ) {
    this.placement = context.affinity.newPlacement();
  }

  get received(): boolean {
    return this.req.complete;
  }

  start(): void {
    const { req, res, context, head, channel } = this;
    // The client left while this request waited behind an earlier one on its connection.
    if (channel.closed) {
      this.finish(null, 499);
      return;
    }
    const path = prepareForward(context, req, channel, head, this.placement);
    if (typeof path !== 'string') {
      if (path.status === 400 || path.status === 501) {
        // A request no backend should see: the connection (HTTP/2: the stream) is closed, as for a parse error.
        channel.closeAfterAnswer(res);
        sendProxyError(res, path.status, path.message);
      } else if (path.status === 503) sendProxyError(res, 503, path.message, path.headers);
      else rejectOverLimit(req, res, channel, path.status, head.chunked ? Infinity : Number(head.contentLength ?? 0));
      this.finish(null, path.status);
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
    // Its backend was marked down while it waited for a connection.
    else if (this.withdrawn) abort(this.downError());
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    if (statusCode < 200) {
      this.relayInformational(statusCode, rawHeaders, statusText);
      return true;
    }
    const flat: string[] = [];
    const codings = copyResponseHeaders(rawHeaders, flat);
    if (codings !== null) {
      // A coding besides chunked travels with the body: relayed as sent (Node frames the chunks
      // again), except to an HTTP/1.0 or HTTP/2 client, which has no chunked framing.
      if (this.req.httpVersion !== '1.1') {
        this.abortUpstream?.(new UpstreamProtocolError(`transfer coding "${codings}" cannot reach an HTTP/${this.req.httpVersion} client`));
        return false;
      }
      flat.push('Transfer-Encoding', codings);
    }
    const setCookie = this.context.affinity.responseCookie(this.placement);
    if (setCookie !== null) flat.push('Set-Cookie', setCookie);
    if (!this.channel.sendHead(this.res, statusCode, statusText, flat)) {
      this.abortUpstream?.(new UpstreamProtocolError(`the response head cannot be relayed over HTTP/${this.req.httpVersion}`));
      return false;
    }
    this.responded = true;
    this.resumeUpstream = resume;
    this.status = statusCode;
    return true;
  }


  /** undici passes the chunk written; its types still say the chunk's size. */
  onBodySent(chunk: Buffer | number): void {
    bodyRelayed(typeof chunk === 'number' ? chunk : chunk.length);
  }

  onData(chunk: Buffer): boolean {
    bodyRelayed(chunk.length);
    if (this.res.write(chunk)) return true;
    this.channel.sendStalled(this.context.clientSendTimeout);
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
    // The end of the response, still waiting for the client, is under timeouts.clientSend too.
    if (this.res.writableLength > 0) this.channel.sendStalled(this.context.clientSendTimeout);
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
      if (this.responded) this.res.destroy(error);
      else rejectOverLimit(this.req, this.res, this.channel, 413, Infinity);
      this.finish(backend, 413);
      return;
    }
    if (this.responded) {
      if (bodilessLengthMismatch(error, this.status)) {
        // A 204 or 304 is complete at its head, whatever its Content-Length says (RFC 9110 §8.6).
        this.res.end();
        this.finish(backend, this.status);
        return;
      }
      // Mid-response: the client must see a cut response, not a complete-looking one.
      this.res.destroy(error);
      this.finish(backend, this.status);
      return;
    }
    const failure = classifyUpstreamFailure(error, this.sent);
    const facts: AttemptFacts = {
      replayable: this.replayable,
      // An Expect: 100-continue request has a connection of its own, never a reused one.
      pooled: !this.expectContinue,
      resentFresh: this.resentFresh,
      attempts: this.attempts,
      retries: this.context.retries,
    };
    if (countsAgainstBackend(failure, facts)) this.context.observer.upstreamFailed(backend, failure);
    else if (failure instanceof LocalResourceError) this.context.observer.localLimitReached(failure);
    const action = retryAction(failure, facts);
    if (action !== 'give-up') {
      const next = action === 'resend-fresh' ? backend : this.context.affinity.retry(this.placement);
      if (next !== null) {
        this.resentFresh ||= action === 'resend-fresh';
        this.context.observer.retried(backend);
        backend.requestFinished(this);
        if (next !== backend) this.head.setRemapNotice(this.placement.remappedFrom);
        // Let undici finish tearing down the failed connection first, or the resend joins its fate.
        setImmediate(resendExchange, this, next, action === 'resend-fresh');
        return;
      }
    }
    backend.noteError(failure.message);
    sendUpstreamFailure(this.res, failure);
    this.finish(backend, failure.status);
  }

  // --- the backend's in-flight list ------------------------------------------------------------

  /**
   * Its backend was marked down before answering. An idempotent request without a body leaves for
   * the client's next backend at once (through onError and the retry policy, so the client's pin
   * moves with the remap notice, as after a connect failure), rather than waiting out
   * timeouts.response on a backend that may never answer; any other request keeps waiting for its
   * own answer or timeout, as sending it twice could repeat its effects.
   */
  backendLost(): void {
    if (this.responded || this.finished || this.clientGone || this.withdrawn || !this.replayable || this.attempts > this.context.retries) return;
    this.withdrawn = true;
    // Not yet given a connection: withdrawn as soon as it gets one (onConnect).
    if (this.sent) this.abortUpstream?.(this.downError());
  }

  // --- internals ----------------------------------------------------------------------------

  /** Idempotent method and no body: sending it twice changes nothing (RFC 9110 §9.2.2). */
  private get replayable(): boolean {
    return this.options?.body === null && IDEMPOTENT_METHODS.has(this.req.method ?? '');
  }

  private downError(): UpstreamDownError {
    return new UpstreamDownError(`${(this.placement.backend as Backend).id} was marked down before it answered`);
  }

  /**
   * An interim response (102, 103, …) goes on to the client before the final one, as RFC 9110
   * §15.2 asks of a proxy; not to an HTTP/1.0 client, which knows none.
   */
  private relayInformational(statusCode: number, rawHeaders: Buffer[], statusText: string): void {
    if (statusCode === 101 || this.req.httpVersion === '1.0' || this.res.headersSent) return;
    if (statusCode === 100 || statusCode === CONTINUE_STAND_IN) {
      // Only a client that asked for it is invited to send its body; to others it is news.
      if (this.expectContinue) this.res.writeContinue();
      else this.channel.sendInterim(this.res, 100, 'Continue', []);
      return;
    }
    const flat: string[] = [];
    copyResponseHeaders(rawHeaders, flat);
    this.channel.sendInterim(this.res, statusCode, statusText, flat);
  }


  private body(chunked: boolean): ClientRequest | BodySizeLimit {
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
    this.withdrawn = false;
    // Every allowed connection is busy: the pool queues the request, and the wait gets a deadline.
    if (!newConnection && backend.atConnectionCap) this.enterQueue(backend);
    backend.requestStarted(this);
    this.placement.backend = backend;
    const options = this.options as Dispatcher.DispatchOptions & { headers: string[]; body: Readable | null };
    if (this.expectContinue) backend.dispatchExpectingContinue(options, this);
    else if (newConnection) backend.dispatchOnNewConnection(options, this);
    else backend.dispatcher.dispatch(options, this);
  }

  private enterQueue(backend: Backend): void {
    this.queuedOn = backend;
    backend.queueEntered();
    this.queueTimer = setTimeout(queueTimedOut, this.context.responseTimeout, this);
    this.channel.queued(this);
  }

  private leaveQueue(): void {
    if (this.queuedOn === null) return;
    clearTimeout(this.queueTimer as NodeJS.Timeout);
    this.queuedOn.queueLeft();
    this.queuedOn = null;
    this.queueTimer = null;
    this.channel.dequeued();
  }

  /**
   * No connection came free within timeouts.response: 503, as HAProxy answers a queue timeout. The
   * backend is busy, not failing, so passive detection is not told; undici still holds the request
   * in its queue and it is aborted as soon as it is dequeued (onConnect).
   */
  onQueueTimeout(): void {
    const backend = this.queuedOn as Backend;
    const busy = new UpstreamBusyError(`no connection to ${backend.id} came free in time`);
    if (!this.clientGone) sendProxyError(this.res, busy.status, 'Backend busy', BUSY_HEADERS);
    // finish() leaves the queue.
    this.finish(backend, this.clientGone ? 499 : busy.status);
  }

  /** Accounts for the request once its answer is written (or abandoned), and lets the connection's next one go. */
  private finish(backend: Backend | null, status: number): void {
    if (this.finished) return;
    this.finished = true;
    this.leaveQueue();
    if (backend !== null && this.attempts > 0) backend.requestFinished(this);
    this.context.affinity.released(this.placement);
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
        client: this.logClient(),
        http: this.req.httpVersion,
      });
    }
    this.channel.finished();
  }

  /** The access log's client: the connection's peer (the address a PROXY protocol header claimed, if any). */
  private logClient(): string | null {
    return this.context.clients.peerAddress(this.channel.socket) || null;
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
