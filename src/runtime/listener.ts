import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https';
import { Server as TlsBaseServer, type TLSSocket } from 'node:tls';
import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { LimpetConfig } from '../config/schema.js';
import { ClientConnection } from '../proxy/client-connection.js';
import type { ProxyProtocolGate } from './proxy-protocol-gate.js';
import type { Http2Listener } from './h2-listener.js';

/** What the proxy listener hands on: requests, upgrades, and what it sees of connections. */
export interface ListenerHandlers {
  request(req: IncomingMessage, res: ServerResponse): void;
  /** `Expect: 100-continue`: decide whether to invite the body, then handle the request. */
  checkContinue(req: IncomingMessage, res: ServerResponse): void;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** A request the proxy answered itself before it reached the request path: `status` 400, 408, 414, 431 or 501. */
  refused(status: number): void;
  /** The longest request target allowed now (limits.maxUrlLength), to tell 414 from 431. */
  maxUrlLength(): number;
  connectionOpened(): void;
  connectionClosed(): void;
  /** A connection closed on arrival because `limits.maxConnections` were open. */
  connectionDropped(): void;
}

/** How often Node checks client header and request timers; Node's 30 s default would let a slowloris linger. */
const CLIENT_TIMER_CHECK_MS = 500;

/**
 * The client-facing listener, HTTP or HTTPS, with the client limits of `config`. `proxyHeaders`
 * reads PROXY protocol headers before the HTTP or TLS server sees a connection's bytes. With
 * `http2`, the HTTPS listener offers h2 by ALPN and hands the connections that choose it to `http2`.
 */
export function createProxyListener(config: LimpetConfig, handlers: ListenerHandlers, proxyHeaders: ProxyProtocolGate, http2: Http2Listener | null): Server {
  const options: ServerOptions = {
    maxHeaderSize: config.limits.maxHeaderSize,
    connectionsCheckingInterval: CLIENT_TIMER_CHECK_MS,
    noDelay: true,
  };
  const server = config.tls === null ? createServer(options, handlers.request) : createTlsServer({ ...options, ...readTlsFiles(config.tls), ...alpn(http2) }, handlers.request);
  if (http2 !== null) sendHttp2Elsewhere(server as TlsServer, http2);
  // Before the listeners below, which count a connection from its arrival.
  proxyHeaders.guard(server);
  applyClientLimits(server, config);
  server.on('upgrade', handlers.upgrade);
  server.on('checkContinue', handlers.checkContinue);
  server.on('drop', handlers.connectionDropped);
  server.on('connection', (socket: Socket) => {
    if ((socket as CountedSocket)[kCounted] === true) return;
    (socket as CountedSocket)[kCounted] = true;
    handlers.connectionOpened();
    socket.once('close', handlers.connectionClosed);
  });
  // A client that sends its request and then shuts down its write side still gets its answer
  // (RFC 9112 §9.6); the connection closes after it. Node would otherwise abort the request.
  (server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
  // A request Node could not parse: 400 (414 or 431 for an oversized head, 408 for a slow one) and
  // close, after any answers still owed on the connection; never crash.
  server.on('clientError', (error: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex) => {
    // The client reset the connection: there is nobody to answer.
    if (error.code === 'ECONNRESET') return void socket.destroy();
    const status = clientErrorStatus(error, handlers.maxUrlLength());
    if (ClientConnection.refuse(socket, status, CLIENT_ERROR_MESSAGES[status] as string)) handlers.refused(status);
  });
  // CONNECT asks for a tunnel to any host, which a reverse proxy does not offer: 501, and the
  // connection stays open for the client's next request.
  server.on('connect', (_req: IncomingMessage, socket: Duplex, head: Buffer) => {
    handlers.refused(501);
    socket.write(CONNECT_REFUSAL);
    if (head.length > 0) socket.unshift(head);
    server.emit(server instanceof TlsBaseServer ? 'secureConnection' : 'connection', socket);
  });
  return server;
}

/** HTTP/2 first when it is on: browsers take the first protocol of the server's list that they speak. */
function alpn(http2: Http2Listener | null): { ALPNProtocols?: string[] } {
  return http2 === null ? {} : { ALPNProtocols: ['h2', 'http/1.1'] };
}

/**
 * Connections that chose h2 go to the HTTP/2 listener; every other one (http/1.1, or no ALPN) to
 * Node's HTTP/1.1 handling of the HTTPS server, exactly as without HTTP/2.
 */
function sendHttp2Elsewhere(server: TlsServer, http2: Http2Listener): void {
  const http1 = server.listeners('secureConnection') as ((socket: TLSSocket) => void)[];
  server.removeAllListeners('secureConnection');
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') http2.accept(socket);
    else for (const listener of http1) listener.call(server, socket);
  });
}

const kCounted = Symbol('limpet.counted');
type CountedSocket = Socket & { [kCounted]?: boolean };

const CONNECT_MESSAGE = 'CONNECT is not supported by this proxy\n';
const CONNECT_REFUSAL =
  `HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(CONNECT_MESSAGE)}\r\n` +
  `Cache-Control: no-store\r\n\r\n${CONNECT_MESSAGE}`;

/** The status for a parse error: an oversized head is 414 when its request line alone is over the URL limit. */
function clientErrorStatus(error: NodeJS.ErrnoException & { rawPacket?: Buffer }, maxUrlLength: number): 400 | 408 | 414 | 431 {
  if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT') return 408;
  if (error.code !== 'HPE_HEADER_OVERFLOW') return 400;
  return requestTargetLength(error.rawPacket) > maxUrlLength ? 414 : 431;
}

/** Length of the request target in a packet that starts with a request line; 0 when it does not. */
function requestTargetLength(packet: Buffer | undefined): number {
  if (packet === undefined) return 0;
  const space = packet.indexOf(32);
  // A method is a short token of capitals: anything else is not the start of a request line.
  if (space < 1 || space > 20 || !/^[A-Z]+$/.test(packet.toString('latin1', 0, space))) return 0;
  const lineEnd = packet.indexOf('\r\n', space + 1, 'latin1');
  const end = lineEnd < 0 ? packet.length : packet.lastIndexOf(' HTTP/', lineEnd, 'latin1');
  return (end > space ? end : lineEnd < 0 ? packet.length : lineEnd) - space - 1;
}

const CLIENT_ERROR_MESSAGES: Record<number, string> = {
  400: 'Bad request',
  408: 'Request timeout',
  414: 'Request target too long',
  431: 'Request header fields too large',
};

/** The limits a running listener can take without a restart, and its certificate. */
export function reconfigureListener(server: Server, config: LimpetConfig, reloadTls: boolean): void {
  applyClientLimits(server, config);
  if (reloadTls && config.tls !== null && 'setSecureContext' in server) (server as TlsServer).setSecureContext(readTlsFiles(config.tls));
}

/** Binds `server`; rejects with the bind error (port in use, no permission) instead of emitting it. */
export function listenOn(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise<AddressInfo>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

function applyClientLimits(server: Server, config: LimpetConfig): void {
  const { clientIdle, clientHeaders, clientRequest } = config.timeouts;
  server.keepAliveTimeout = clientIdle;
  server.requestTimeout = clientRequest;
  // Node refuses a header timeout longer than the whole-request one; the shorter one rules anyway.
  server.headersTimeout = clientRequest === 0 ? clientHeaders : Math.min(clientHeaders, clientRequest);
  // Node would drop fields past its count silently (Host among them, making a 400); the exchange
  // counts them and answers 431 instead, while maxHeaderSize bounds what the parser keeps.
  server.maxHeadersCount = 0;
  server.maxConnections = config.limits.maxConnections === 0 ? Infinity : config.limits.maxConnections;
}

function readTlsFiles(tls: { cert: string; key: string }): { cert: Buffer; key: Buffer } {
  return { cert: readFileSync(tls.cert), key: readFileSync(tls.key) };
}
