import { createServer, type IncomingMessage, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { LimpetConfig } from '../config/schema.js';
import { sendProxyError } from '../proxy/respond.js';

/** What the proxy listener hands on: requests, upgrades, and what it sees of connections. */
export interface ListenerHandlers {
  request(req: IncomingMessage, res: ServerResponse): void;
  /** `Expect: 100-continue`: decide whether to invite the body, then handle the request. */
  checkContinue(req: IncomingMessage, res: ServerResponse): void;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** A request Node could not parse was answered with `status` (400, 408 or 431). */
  refused(status: number): void;
  connectionOpened(): void;
  connectionClosed(): void;
  /** A connection closed on arrival because `limits.maxConnections` were open. */
  connectionDropped(): void;
}

/** How often Node checks client header and request timers; Node's 30 s default would let a slowloris linger. */
const CLIENT_TIMER_CHECK_MS = 500;

/** The client-facing listener, HTTP or HTTPS, with the client limits of `config`. */
export function createProxyListener(config: LimpetConfig, handlers: ListenerHandlers): Server {
  const options: ServerOptions = {
    maxHeaderSize: config.limits.maxHeaderSize,
    connectionsCheckingInterval: CLIENT_TIMER_CHECK_MS,
    noDelay: true,
  };
  const server = config.tls === null ? createServer(options, handlers.request) : createTlsServer({ ...options, ...readTlsFiles(config.tls) }, handlers.request);
  applyClientLimits(server, config);
  server.on('upgrade', handlers.upgrade);
  server.on('checkContinue', handlers.checkContinue);
  server.on('drop', handlers.connectionDropped);
  server.on('connection', (socket: Socket) => {
    handlers.connectionOpened();
    socket.once('close', handlers.connectionClosed);
  });
  // A request Node could not parse: 400 (431 for oversized heads, 408 for slow ones) and close; never crash.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    if (sendProxyError(socket, status, CLIENT_ERROR_MESSAGES[status] as string)) handlers.refused(status);
  });
  return server;
}

const CLIENT_ERROR_MESSAGES: Record<number, string> = { 400: 'Bad request', 408: 'Request timeout', 431: 'Request header fields too large' };

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
