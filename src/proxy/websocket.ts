import { request as httpRequest, STATUS_CODES, type IncomingMessage, type ClientRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { Placement } from '../affinity/router.js';
import type { Backend } from '../upstream/backend.js';
import { headLimitStatus, LIMIT_MESSAGES } from './client-limits.js';
import { FrameBoundary } from './frame-boundary.js';
import type { ForwardingContext } from './exchange.js';
import { isHopByHop } from './headers.js';
import { originFormPath, RequestHead } from './request-head.js';

/** A WebSocket close frame, code 1001 "going away": unmasked as a server sends it, masked (zero key) as a client must. */
const CLOSE_GOING_AWAY_TO_CLIENT = Buffer.from([0x88, 0x02, 0x03, 0xe9]);
const CLOSE_GOING_AWAY_TO_BACKEND = Buffer.from([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9]);
const EMPTY = Buffer.alloc(0);

interface Tunnel {
  backend: Backend;
  client: Duplex;
  upstream: Socket;
  /** Frames relayed each way, so a close frame of the proxy's own never lands inside one. */
  toClient: FrameBoundary;
  toBackend: FrameBoundary;
}

/**
 * Proxies upgrade requests (WebSocket) with the same placement as plain HTTP: same client key, same
 * remap rules and headers, the affinity cookie on the 101 response, retries while the backend could
 * not be reached. After the 101 the two sockets are piped until either side closes or idles out.
 */
export class UpgradeForwarder {
  private readonly tunnels = new Set<Tunnel>();

  constructor(
    private readonly context: () => ForwardingContext,
    private readonly settings: () => { connectTimeout: number; tunnelIdle: number },
  ) {}

  get size(): number {
    return this.tunnels.size;
  }

  handle(req: IncomingMessage, client: Duplex, firstBytes: Buffer): void {
    const context = this.context();
    client.on('error', noop);
    const path = originFormPath(req.url ?? '');
    if (path === null) return rejectUpgrade(client, 400, 'Bad request target');
    const head = new RequestHead();
    head.copy(req, context.affinityHeader);
    if (head.hostConflicts(req.url as string, path)) {
      return rejectUpgrade(client, 400, 'Bad Host');
    }
    const overLimit = headLimitStatus(req, context.limits, head.contentLength);
    if (overLimit !== 0) return rejectUpgrade(client, overLimit, LIMIT_MESSAGES[overLimit]);
    const placement = new Placement();
    context.router.place(placement, req.socket, head, Date.now());
    if (placement.backend === null) return rejectUpgrade(client, 503, 'No backend is available', 'Retry-After: 5\r\n');
    head.appendForwarding(req, context.clients, context.protocol, placement.remappedFrom);
    head.headers.push('Connection', 'Upgrade', 'Upgrade', req.headers.upgrade ?? 'websocket');
    this.connect(context, req, client, firstBytes, path, head, placement, 1);
  }

  /** Closes every tunnel to `backend` (it went down): clients reconnect and are placed afresh. */
  closeBackend(backend: Backend): void {
    for (const tunnel of this.tunnels) if (tunnel.backend === backend) closeTunnel(tunnel);
  }

  /** Closes every tunnel with WebSocket code 1001, for shutdown. */
  closeAll(): void {
    for (const tunnel of this.tunnels) closeTunnel(tunnel);
  }

  private connect(
    context: ForwardingContext,
    req: IncomingMessage,
    client: Duplex,
    firstBytes: Buffer,
    path: string,
    head: RequestHead,
    placement: Placement,
    attempt: number,
  ): void {
    const backend = placement.backend as Backend;
    const target = backend.target;
    const { connectTimeout } = this.settings();
    const send = target.protocol === 'https:' ? httpsRequest : httpRequest;
    const upstreamReq: ClientRequest = send({
      host: target.hostname,
      port: target.port || (target.protocol === 'https:' ? 443 : 80),
      method: req.method,
      path,
      headers: head.headers,
      agent: false,
    });
    // Two separate clocks, as for plain requests: `timeouts.connect` until the TCP connection is up
    // (a timeout then is a request that never reached the backend, so it may go to the next one),
    // then `timeouts.response` until the backend answers the upgrade (a timeout then is a 504).
    let connected = false;
    let timer: NodeJS.Timeout | null = setTimeout(() => fail('CONNECT_TIMEOUT', 'connect timeout'), connectTimeout);
    const stopTimer = () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    };
    const fail = (code: string, message: string) => upstreamReq.destroy(Object.assign(new Error(message), { code }));
    upstreamReq.on('socket', (socket: Socket) => {
      const onConnect = () => {
        connected = true;
        stopTimer();
        timer = setTimeout(() => fail('UPGRADE_TIMEOUT', 'no upgrade response in time'), context.responseTimeout);
      };
      // A TLS socket is usable once its handshake is done; a plain one once connected.
      socket.once(target.protocol === 'https:' ? 'secureConnect' : 'connect', onConnect);
    });
    // The client left before the backend answered: give up on the backend too (not its fault).
    const onClientClose = () => upstreamReq.destroy();
    client.once('close', onClientClose);
    upstreamReq.once('close', () => {
      stopTimer();
      client.off('close', onClientClose);
    });
    upstreamReq.on('error', (error: NodeJS.ErrnoException) => {
      stopTimer();
      if (client.destroyed) return;
      // Not connected yet means nothing was sent: another backend may take it.
      if (!connected) {
        context.observer.upstreamFailed(backend, error);
        if (attempt <= context.retries && context.router.retry(placement) !== null) {
          context.observer.retried(backend);
          if (!head.headers.includes('X-Limpet-Remapped-From') && placement.remappedFrom !== null) {
            head.headers.push('X-Limpet-Remapped-From', placement.remappedFrom);
          }
          this.connect(context, req, client, firstBytes, path, head, placement, attempt + 1);
          return;
        }
      } else {
        context.observer.upstreamFailed(backend, error);
      }
      backend.lastError = error.message;
      if (error.code === 'UPGRADE_TIMEOUT') rejectUpgrade(client, 504, 'Gateway timeout');
      else rejectUpgrade(client, 502, 'Bad gateway');
    });
    // The backend answered without switching protocols: relay its answer and close.
    upstreamReq.on('response', (res: IncomingMessage) => {
      stopTimer();
      let text = `HTTP/1.1 ${res.statusCode} ${res.statusMessage ?? ''}\r\n`;
      for (let i = 0; i < res.rawHeaders.length; i += 2) {
        const name = res.rawHeaders[i] as string;
        const lower = name.toLowerCase();
        if (isHopByHop(lower) || lower === 'content-length') continue;
        text += `${name}: ${res.rawHeaders[i + 1]}\r\n`;
      }
      client.write(`${text}Connection: close\r\n\r\n`);
      res.pipe(client);
    });
    upstreamReq.on('upgrade', (res: IncomingMessage, upstream: Socket, upstreamFirstBytes: Buffer) => {
      stopTimer();
      client.off('close', onClientClose);
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      let text = 'HTTP/1.1 101 Switching Protocols\r\n';
      for (let i = 0; i < res.rawHeaders.length; i += 2) text += `${res.rawHeaders[i]}: ${res.rawHeaders[i + 1]}\r\n`;
      const setCookie = context.router.setCookieFor(placement);
      if (setCookie !== null) text += `Set-Cookie: ${setCookie}\r\n`;
      client.write(`${text}\r\n`);
      const tunnel: Tunnel = { backend, client, upstream, toClient: new FrameBoundary(), toBackend: new FrameBoundary() };
      if (upstreamFirstBytes.length > 0) {
        tunnel.toClient.feed(upstreamFirstBytes);
        client.write(upstreamFirstBytes);
      }
      if (firstBytes.length > 0) {
        tunnel.toBackend.feed(firstBytes);
        upstream.write(firstBytes);
      }
      this.open(tunnel);
    });
    upstreamReq.end();
  }

  private open(tunnel: Tunnel): void {
    const { backend, client, upstream } = tunnel;
    this.tunnels.add(tunnel);
    backend.tunnels++;
    const idle = this.settings().tunnelIdle;
    upstream.setNoDelay(true);
    (client as Socket).setNoDelay?.(true);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      this.tunnels.delete(tunnel);
      backend.tunnels--;
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', close).on('close', close);
    client.on('error', close).on('close', close);
    upstream.setTimeout(idle, close);
    (client as Socket).setTimeout?.(idle, close);
    upstream.on('data', (chunk: Buffer) => tunnel.toClient.feed(chunk));
    client.on('data', (chunk: Buffer) => tunnel.toBackend.feed(chunk));
    upstream.pipe(client);
    client.pipe(upstream);
  }
}

function closeTunnel(tunnel: Tunnel): void {
  const { client, upstream } = tunnel;
  // Stop relaying first: nothing more may follow the close frames (and each pipe would pause its
  // source once the other side finishes, so nobody would read the peers' replies and FINs).
  upstream.unpipe(client);
  client.unpipe(upstream);
  // Mid-frame, a close frame would corrupt the frame being relayed: the peer gets a plain FIN instead.
  if (client.writable) client.end(tunnel.toClient.atBoundary ? CLOSE_GOING_AWAY_TO_CLIENT : EMPTY);
  if (upstream.writable) upstream.end(tunnel.toBackend.atBoundary ? CLOSE_GOING_AWAY_TO_BACKEND : EMPTY);
  // Read and drop what the peers still send (their close replies), so their FINs are seen and both
  // sockets close as soon as the peers are done, not at the deadline below.
  client.resume();
  upstream.resume();
  // Peers that do not answer the close get a moment, then both sockets are cut.
  setTimeout(() => {
    client.destroy();
    upstream.destroy();
  }, 1000).unref();
}

function rejectUpgrade(client: Duplex, status: number, message: string, extra = ''): void {
  if (!client.writable) return void client.destroy();
  const reason = STATUS_CODES[status] ?? 'Error';
  const body = `${message}\n`;
  client.end(`HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}Connection: close\r\n\r\n${body}`);
}

function noop(): void {}
