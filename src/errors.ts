/**
 * limpet's own failures, one class per kind with a stable `code` (undici's `lib/core/errors.js` is
 * the model). Retry, status-code and log decisions branch on the class, never on message text or
 * on sets of error-code strings.
 */
export abstract class LimpetError extends Error {
  abstract readonly code: string;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * A request could not be completed at its backend. `status` is what the client is answered when
 * no retry saves it; `cause` keeps the underlying socket or undici error for logs.
 */
export abstract class UpstreamError extends LimpetError {
  readonly status: 502 | 503 | 504 = 502;
  /** Whether the backend's health is in question: passive ejection counts only these. */
  readonly countsAgainstBackend: boolean = true;
}

/** The connection to the backend was never made (refused, unreachable, connect timeout): nothing was sent, so any backend may take the request. */
export class UpstreamConnectError extends UpstreamError {
  readonly code = 'LIMPET_UPSTREAM_CONNECT';
  /** When retries are spent and still no backend could be reached, the client may come back: 503, with Retry-After. */
  override readonly status = 503;
}

/**
 * The connection died after the request was written and before any response: on a reused
 * keep-alive socket this is most likely one the backend had just closed, so an idempotent request
 * without a body may be sent once more.
 */
export class UpstreamSocketError extends UpstreamError {
  readonly code = 'LIMPET_UPSTREAM_SOCKET';

  /**
   * `reusedConnection`: the connection had carried earlier responses, so the backend most likely
   * closed it idle as this request arrived — a race, no sign of a sick backend.
   */
  constructor(
    message: string,
    readonly reusedConnection: boolean,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The backend sent no response head within `timeouts.response`. */
export class UpstreamTimeoutError extends UpstreamError {
  readonly code = 'LIMPET_UPSTREAM_TIMEOUT';
  override readonly status = 504;
}

/** Any other failure once the request may have reached the backend: not retried. */
export class UpstreamProtocolError extends UpstreamError {
  readonly code = 'LIMPET_UPSTREAM_PROTOCOL';
}

/**
 * The backend was marked down (active checks, passive ejection) while an idempotent, bodiless
 * request waited for its answer there: limpet withdrew the request to send it to the client's next
 * backend. The backend's failure was already counted by whatever marked it down, not again here.
 */
export class UpstreamDownError extends UpstreamError {
  readonly code = 'LIMPET_UPSTREAM_DOWN';
  override readonly countsAgainstBackend = false;
}

/** No connection to the backend came free within `timeouts.response` (limits.maxBackendConnections): busy, not failing. */
export class UpstreamBusyError extends UpstreamError {
  readonly code = 'LIMPET_UPSTREAM_BUSY';
  override readonly status = 503;
  override readonly countsAgainstBackend = false;
}

/**
 * limpet itself ran out of something the connection needed — descriptors (EMFILE, ENFILE), local
 * ports (EADDRNOTAVAIL), buffers or memory. It says nothing about the backend: no ejection, no
 * retry (the next backend would meet the same limit), 503 with Retry-After, and a log line.
 */
export class LocalResourceError extends UpstreamError {
  readonly code = 'LIMPET_LOCAL_RESOURCE';
  override readonly status = 503;
  override readonly countsAgainstBackend = false;
}

/** A chunked request body grew past `limits.maxBodySize`: the client's fault, never the backend's. */
export class BodyTooLargeError extends LimpetError {
  readonly code = 'LIMPET_BODY_TOO_LARGE';
}

/**
 * A DNS lookup of a `dns` or `srv` backend entry gave no usable answer: the server failed, timed
 * out or refused (`empty` false), or the name has no addresses (`empty` true). Either way discovery
 * keeps the last known backends of that name.
 */
export class DiscoveryLookupError extends LimpetError {
  readonly code = 'LIMPET_DISCOVERY_LOOKUP';

  constructor(
    readonly dnsName: string,
    readonly empty: boolean,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** An HTTP/2 client reset more streams than its connection's budget allows (rapid reset, CVE-2023-44487): its connection is closed. */
export class Http2ResetFloodError extends LimpetError {
  readonly code = 'LIMPET_HTTP2_RESET_FLOOD';
}

/** Why a bind failed, in words, for the error codes an operator meets; anything else keeps Node's message. */
const BIND_FAILURES: Readonly<Record<string, string>> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)',
  EADDRNOTAVAIL: 'not an address of this host',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed',
};

/**
 * A listener could not bind its address. `setting` names where the address came from (`listen`,
 * `admin.listen`), so the one line an operator sees says what to change:
 * `cannot listen on 127.0.0.1:9090 (admin.listen): address already in use`.
 */
export class ListenError extends LimpetError {
  readonly code = 'LIMPET_LISTEN';

  constructor(
    readonly host: string,
    readonly port: number,
    readonly setting: string,
    cause: unknown,
  ) {
    const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? '';
    const reason = BIND_FAILURES[code] ?? (cause instanceof Error ? cause.message : String(cause));
    super(`cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port} (${setting}): ${reason}`, { cause });
  }
}

/** Error codes (Node's and undici's) that prove the connection was never made. */
const NEVER_CONNECTED = new Set(['ECONNREFUSED', 'UND_ERR_CONNECT_TIMEOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
/** Codes of this process's own limits, not the backend's. */
const LOCAL_LIMITS = new Set(['EMFILE', 'ENFILE', 'EADDRNOTAVAIL', 'ENOBUFS', 'ENOMEM']);
/** Codes of a connection that died under the request. */
const SOCKET_DIED = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);
/** Codes of a backend that took too long to answer. */
const TIMED_OUT = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/**
 * Turns whatever a forwarding attempt failed with into limpet's kind. `written`: whether any of the
 * request may have been written to a connection (undici's onConnect, a tunnel's TCP connect).
 */
export function classifyUpstreamFailure(error: Error, written: boolean): UpstreamError {
  if (error instanceof UpstreamError) return error;
  const code = (error as NodeJS.ErrnoException).code ?? '';
  const options = { cause: error };
  if (LOCAL_LIMITS.has(code)) return new LocalResourceError(`${code}: ${error.message}`, options);
  if (!written || NEVER_CONNECTED.has(code)) return new UpstreamConnectError(error.message, options);
  if (TIMED_OUT.has(code)) return new UpstreamTimeoutError(error.message, options);
  if (SOCKET_DIED.has(code)) return new UpstreamSocketError(error.message, readEarlierResponses(error), options);
  return new UpstreamProtocolError(error.message, options);
}

/**
 * Whether the connection had read earlier responses: undici attaches the socket's counters to its
 * own socket errors, and limpet's connector marks Node's (upstream/pools.ts).
 */
function readEarlierResponses(error: Error & { socket?: { bytesRead?: number }; connectionReused?: boolean }): boolean {
  if (error.connectionReused !== undefined) return error.connectionReused;
  const bytesRead = error.socket?.bytesRead;
  return bytesRead !== undefined && bytesRead > 0;
}

/**
 * undici takes a 204's or 304's Content-Length as a promise of body bytes and fails the exchange
 * when none come; such a response is complete at its head (RFC 9110 §8.6, §15.3.5).
 */
export function bodilessLengthMismatch(error: Error, status: number): boolean {
  return (status === 204 || status === 304) && (error as NodeJS.ErrnoException).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH';
}
