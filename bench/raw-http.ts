// HTTP/1.1 over bare sockets, for checks where node:http (or any client library) would hide what
// was actually on the wire: a scripted backend that writes exactly the bytes it is told to, and a
// client that writes exact bytes and parses every response (1xx included) as it arrives.
// Used by test/http11-*.test.ts and by bench/http11-peers.ts, so both send the same bytes.
import net, { type AddressInfo, type Server, type Socket } from 'node:net';

// ---------------------------------------------------------------------------------------------
// Parsing

export type HeaderList = [name: string, value: string][];

/** The value of every field named `name` (any case), joined with ", " as RFC 9110 §5.3 allows; undefined if absent. */
export function headerValue(headers: HeaderList, name: string): string | undefined {
  const lower = name.toLowerCase();
  const values = headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
  return values.length === 0 ? undefined : values.join(', ');
}

function parseFields(lines: string[]): HeaderList {
  return lines.map((line) => {
    const colon = line.indexOf(':');
    return colon < 0 ? [line, ''] : [line.slice(0, colon), line.slice(colon + 1).trim()];
  });
}

/** Whether the last transfer coding named is chunked (RFC 9112 §6.3: then the message is chunked). */
export function endsChunked(transferEncoding: string | undefined): boolean {
  if (transferEncoding === undefined) return false;
  const codings = transferEncoding.split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '');
  return codings.at(-1) === 'chunked';
}

/**
 * Decodes a chunked body starting at `offset`. Returns the payload and where the message ends
 * (after the trailer section), or null while incomplete. Malformed framing throws.
 */
export function parseChunked(buf: Buffer, offset: number): { body: Buffer; end: number } | null {
  const parts: Buffer[] = [];
  let at = offset;
  for (;;) {
    const lineEnd = buf.indexOf('\r\n', at, 'latin1');
    if (lineEnd < 0) return null;
    const sizeText = buf.toString('latin1', at, lineEnd).split(';')[0]!.trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeText)) throw new Error(`bad chunk size line ${JSON.stringify(buf.toString('latin1', at, lineEnd))}`);
    const size = parseInt(sizeText, 16);
    at = lineEnd + 2;
    if (size === 0) {
      // Trailer fields, then an empty line.
      for (;;) {
        const end = buf.indexOf('\r\n', at, 'latin1');
        if (end < 0) return null;
        if (end === at) return { body: Buffer.concat(parts), end: end + 2 };
        at = end + 2;
      }
    }
    if (buf.length < at + size + 2) return null;
    parts.push(buf.subarray(at, at + size));
    at += size;
    if (buf.toString('latin1', at, at + 2) !== '\r\n') throw new Error('chunk data not followed by CRLF');
    at += 2;
  }
}

export interface RawResponse {
  /** e.g. "HTTP/1.1 200 OK" */
  statusLine: string;
  status: number;
  headers: HeaderList;
  /** The payload: chunked framing removed, any other coding left as sent. */
  body: Buffer;
  /** The exact bytes of this response on the wire. */
  raw: Buffer;
  header(name: string): string | undefined;
}

/**
 * Parses one response at `offset`. `head`: it answers a HEAD request (no body whatever the head
 * says). `closed`: no more bytes will come, so a body delimited by the close is complete.
 * Returns null while incomplete.
 */
export function parseResponse(buf: Buffer, offset: number, head: boolean, closed: boolean): { response: RawResponse; end: number } | null {
  const headEnd = buf.indexOf('\r\n\r\n', offset, 'latin1');
  if (headEnd < 0) return null;
  const lines = buf.toString('latin1', offset, headEnd).split('\r\n');
  const statusLine = lines[0]!;
  const match = /^HTTP\/\d\.\d (\d{3})(?: |$)/.exec(statusLine);
  if (match === null) throw new Error(`not a status line: ${JSON.stringify(statusLine.slice(0, 80))}`);
  const status = Number(match[1]);
  const headers = parseFields(lines.slice(1));
  const bodyStart = headEnd + 4;
  const make = (body: Buffer, end: number) => ({
    response: { statusLine, status, headers, body, raw: buf.subarray(offset, end), header: (name: string) => headerValue(headers, name) },
    end,
  });
  // RFC 9112 §6.3: these never have content, whatever Content-Length or Transfer-Encoding say.
  if (head || status < 200 || status === 204 || status === 304) return make(Buffer.alloc(0), bodyStart);
  const te = headerValue(headers, 'transfer-encoding');
  if (te !== undefined && endsChunked(te)) {
    const chunked = parseChunked(buf, bodyStart);
    return chunked === null ? null : make(chunked.body, chunked.end);
  }
  const cl = headerValue(headers, 'content-length');
  if (te === undefined && cl !== undefined) {
    const length = Number(cl.split(',')[0]);
    if (buf.length < bodyStart + length) return null;
    return make(buf.subarray(bodyStart, bodyStart + length), bodyStart + length);
  }
  // Delimited by the close of the connection.
  return closed ? make(buf.subarray(bodyStart), buf.length) : null;
}

// ---------------------------------------------------------------------------------------------
// Client

export interface RawClientOptions {
  host?: string;
  /** Source address: any 127.x.y.z is local on Linux. */
  localAddress?: string;
  /** Keep the connection open for reading after this side calls end(). Default true. */
  allowHalfOpen?: boolean;
}

/** One client connection: exact bytes out, responses parsed in order as they arrive. */
export class RawClient {
  private data = Buffer.alloc(0);
  private cursor = 0;
  /** The peer sent FIN. */
  ended = false;
  /** The socket is fully closed (or errored). */
  closed = false;
  error: Error | null = null;
  readonly parsed: RawResponse[] = [];

  private constructor(readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.data = Buffer.concat([this.data, chunk]);
    });
    socket.on('end', () => {
      this.ended = true;
    });
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('error', (error) => {
      this.error = error;
    });
  }

  static open(port: number, options: RawClientOptions = {}): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ port, host: options.host ?? '127.0.0.1', localAddress: options.localAddress, allowHalfOpen: options.allowHalfOpen ?? true });
      socket.setNoDelay(true);
      const client = new RawClient(socket);
      socket.once('connect', () => resolve(client));
      socket.once('error', reject);
    });
  }

  /** Everything received so far. */
  get received(): Buffer {
    return this.data;
  }

  /** Bytes received but not yet returned as a response. */
  get unread(): Buffer {
    return this.data.subarray(this.cursor);
  }

  write(bytes: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => this.socket.write(typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : bytes, (e) => (e ? reject(e) : resolve())));
  }

  /** Half-closes: sends FIN, keeps reading. */
  end(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Whether the peer has ended or closed the connection. */
  get peerClosed(): boolean {
    return this.ended || this.closed;
  }

  /**
   * The next response on the connection (an interim 1xx counts as one). Fails with what was
   * received when the connection closes first, or after `timeoutMs` without one.
   */
  async next(options: { head?: boolean; timeoutMs?: number } = {}): Promise<RawResponse> {
    const deadline = Date.now() + (options.timeoutMs ?? 10_000);
    for (;;) {
      const done = this.peerClosed;
      const result = parseResponse(this.data, this.cursor, options.head === true, done);
      if (result !== null) {
        this.cursor = result.end;
        this.parsed.push(result.response);
        return result.response;
      }
      if (done) throw new Error(`connection closed by the proxy ${this.describeUnread()}`);
      if (Date.now() > deadline) throw new Error(`no complete response within ${options.timeoutMs ?? 10_000} ms ${this.describeUnread()}`);
      await pause(10);
    }
  }

  /** The next response that is not an interim 1xx, with the interim ones that came before it. */
  async final(options: { head?: boolean; timeoutMs?: number } = {}): Promise<{ interim: RawResponse[]; response: RawResponse }> {
    const interim: RawResponse[] = [];
    for (;;) {
      const response = await this.next(options);
      if (response.status >= 200) return { interim, response };
      interim.push(response);
    }
  }

  /** Resolves once the peer has ended or closed the connection; false if it is still open after `timeoutMs`. */
  async waitClosed(timeoutMs = 10_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.peerClosed) {
      if (Date.now() > deadline) return false;
      await pause(10);
    }
    return true;
  }

  private describeUnread(): string {
    const rest = this.unread;
    if (rest.length === 0) return `after ${this.parsed.length} response(s), with no further bytes`;
    return `after ${this.parsed.length} response(s), with ${rest.length} unparsed bytes: ${JSON.stringify(rest.toString('latin1').slice(0, 200))}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Backend

/** A request as the backend read it. */
export interface RawRequest {
  /** Order of arrival over the whole backend, from 0. */
  readonly index: number;
  readonly method: string;
  readonly target: string;
  readonly version: string;
  readonly headers: HeaderList;
  /** The request line and fields exactly as received. */
  readonly head: string;
  /** The de-chunked body (chunked framing removed, any other coding left), once complete. */
  body: Buffer;
  /** Bytes that arrived on the connection after this request's head, while it was the last one. */
  bytesAfterHead: number;
  complete: boolean;
  readonly connection: RawConnection;
  header(name: string): string | undefined;
}

export interface RawConnection {
  readonly id: number;
  readonly socket: Socket;
  /** Requests read on this connection so far (health checks included). */
  requests: number;
  /** When this connection last finished writing a response (ms since epoch); 0 before the first. */
  lastResponseAt: number;
  /** Writes bytes exactly; `respond` marks the end of a response (for idle tracking). */
  write(bytes: string | Buffer): void;
  respond(bytes: string | Buffer): void;
}

export type Verdict = void | 'stop';

export interface RawBackendScript {
  /**
   * The head of a request has been read (its body may still be on its way). Write an answer here
   * to answer before the body; return 'stop' to read nothing more on this connection.
   */
  onHead?(req: RawRequest, conn: RawConnection): Verdict;
  /** The whole request has been read. */
  onRequest?(req: RawRequest, conn: RawConnection): void;
  /** Extra header lines (each ending in CRLF) on the answer to `GET /health`, e.g. the Keep-Alive hint every answer carries. */
  healthHeaders?: string;
}

export interface RawBackend {
  readonly server: Server;
  readonly port: number;
  readonly url: string;
  /** Requests that reached it, `GET /health` left out (the proxy's checks answer themselves). */
  readonly seen: RawRequest[];
  /** Connections accepted (health checks' included). */
  connections: number;
  /** Events in order, for checks about what happened before what. */
  readonly events: string[];
  close(): Promise<void>;
}

/** A plain 200 with a body. */
export function ok(body: string, extra = ''): string {
  return `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}\r\n${body}`;
}

let nextConnectionId = 1;

/**
 * A backend on an ephemeral loopback port that parses requests itself and answers exactly as its
 * script writes. `GET /health` is answered 200 on any connection, so active checks pass. A request
 * the script does not answer in onHead or onRequest is left unanswered.
 */
export async function startRawBackend(script: RawBackendScript, host = '127.0.0.1'): Promise<RawBackend> {
  const seen: RawRequest[] = [];
  const events: string[] = [];
  const sockets = new Set<Socket>();
  let index = 0;
  const backend: RawBackend = {
    server: null as unknown as Server,
    port: 0,
    url: '',
    seen,
    connections: 0,
    events,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    backend.connections++;
    const conn: RawConnection = {
      id: nextConnectionId++,
      socket,
      requests: 0,
      lastResponseAt: 0,
      write: (bytes) => {
        // Strings as UTF-8, as ok() counts its Content-Length.
        if (!socket.destroyed) socket.write(bytes);
      },
      respond: (bytes) => {
        conn.write(bytes);
        conn.lastResponseAt = Date.now();
      },
    };
    let buf = Buffer.alloc(0);
    let current: (RawRequest & { framing: 'none' | 'chunked' | number; bodyStart: number }) | null = null;
    let stopped = false;
    socket.on('end', () => events.push(`conn ${conn.id} client FIN`));
    socket.on('data', (chunk: Buffer) => {
      if (current !== null && !current.complete) current.bytesAfterHead += chunk.length;
      if (stopped) return;
      buf = Buffer.concat([buf, chunk]);
      for (;;) {
        if (current === null) {
          const headEnd = buf.indexOf('\r\n\r\n', 0, 'latin1');
          if (headEnd < 0) return;
          const headText = buf.toString('latin1', 0, headEnd);
          const lines = headText.split('\r\n');
          const [method = '', target = '', version = ''] = lines[0]!.split(' ');
          const headers = parseFields(lines.slice(1));
          const te = headerValue(headers, 'transfer-encoding');
          const cl = headerValue(headers, 'content-length');
          const framing = te !== undefined ? 'chunked' : cl !== undefined ? Number(cl) : 'none';
          const rest = buf.subarray(headEnd + 4);
          buf = rest;
          conn.requests++;
          const health = method === 'GET' && target === '/health';
          const req = {
            index: health ? -1 : index++,
            method,
            target,
            version,
            headers,
            head: headText,
            body: Buffer.alloc(0),
            bytesAfterHead: rest.length,
            complete: false,
            connection: conn,
            header: (name: string) => headerValue(headers, name),
            framing: framing as 'none' | 'chunked' | number,
            bodyStart: 0,
          };
          current = req;
          if (health) {
            req.complete = true;
            conn.respond(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${script.healthHeaders ?? ''}\r\nok`);
            current = null;
            continue;
          }
          seen.push(req);
          events.push(`conn ${conn.id} head ${method} ${target}`);
          if (script.onHead?.(req, conn) === 'stop') {
            stopped = true;
            return;
          }
        }
        const req = current;
        let bodyEnd: number;
        if (req.framing === 'none' || req.framing === 0) {
          bodyEnd = 0;
        } else if (req.framing === 'chunked') {
          let chunked: { body: Buffer; end: number } | null;
          try {
            chunked = parseChunked(buf, 0);
          } catch {
            socket.destroy();
            return;
          }
          if (chunked === null) return;
          req.body = chunked.body;
          bodyEnd = chunked.end;
        } else {
          if (buf.length < req.framing) return;
          req.body = buf.subarray(0, req.framing);
          bodyEnd = req.framing;
        }
        buf = buf.subarray(bodyEnd);
        req.complete = true;
        // Bytes after this request belong to the next one.
        req.bytesAfterHead -= buf.length;
        current = null;
        events.push(`conn ${conn.id} request ${req.method} ${req.target}`);
        script.onRequest?.(req, conn);
        if (buf.length === 0) return;
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  Object.assign(backend, { server, port, url: `http://${host}:${port}` });
  return backend;
}

export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
