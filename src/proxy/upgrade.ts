import { request as httpRequest, type IncomingMessage, type ClientRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Placement } from '../affinity/policy.js';
import { classifyUpstreamFailure, LocalResourceError, UpstreamConnectError, UpstreamTimeoutError } from '../errors.js';
import { bodyRelayed } from '../runtime/relayed-garbage.js';
import type { Backend } from '../upstream/backend.js';
import { ClientConnection } from './client-connection.js';
import { endClientConnection } from './client-send.js';
import type { ForwardingContext } from './context.js';
import { FrameBoundary } from './frame-boundary.js';
import { isHopByHop } from './headers.js';
import { prepareForward } from './prepare.js';
import { RequestHead } from './request-head.js';
import { sendProxyError, sendUpstreamFailure } from './respond.js';
import { countsAgainstBackend, retryAction } from './retry-policy.js';

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

  handle(context: ForwardingContext, req: IncomingMessage, client: Duplex, firstBytes: Buffer): void {
    client.on('error', noop);
    const head = new RequestHead();
    const placement = context.affinity.newPlacement();
    const path = prepareForward(context, req, ClientConnection.of(req.socket), head, placement);
    if (typeof path !== 'string') return void sendProxyError(client, path.status, path.message, path.headers);
    // Busy until the client's socket closes: through the upgrade, the tunnel, or a failure before it.
    client.once('close', () => context.affinity.released(placement));
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
    let timer: NodeJS.Timeout | null = setTimeout(() => upstreamReq.destroy(new UpstreamConnectError('connect timeout')), context.connectTimeout);
    const stopTimer = () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    };
    upstreamReq.on('socket', (socket: Socket) => {
      const onConnect = () => {
        connected = true;
        stopTimer();
        timer = setTimeout(() => upstreamReq.destroy(new UpstreamTimeoutError('no upgrade response in time')), context.responseTimeout);
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
    upstreamReq.on('error', (error: Error) => {
      stopTimer();
      if (client.destroyed) return;
      const failure = classifyUpstreamFailure(error, connected);
      // A tunnel's connection is always new, so a dead socket is never a stale pooled one.
      const facts = { replayable: false, pooled: false, resentFresh: false, attempts: attempt, retries: context.retries };
      if (countsAgainstBackend(failure, facts)) context.observer.upstreamFailed(backend, failure);
      else if (failure instanceof LocalResourceError) context.observer.localLimitReached(failure);
      if (retryAction(failure, facts) === 'next-backend' && context.affinity.retry(placement) !== null) {
        context.observer.retried(backend);
        head.setRemapNotice(placement.remappedFrom);
        this.connect(context, req, client, firstBytes, path, head, placement, attempt + 1);
        return;
      }
      backend.noteError(failure.message);
      sendUpstreamFailure(client, failure);
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
      res.pipe(client, { end: false });
      res.once('end', () => endClientConnection(client));
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
      const setCookie = context.affinity.responseCookie(placement);
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
      this.open(tunnel, context.tunnelIdle, context.clientSendTimeout);
    });
    upstreamReq.end();
  }

  private open(tunnel: Tunnel, idle: number, clientSend: number): void {
    const { backend, client, upstream } = tunnel;
    this.tunnels.add(tunnel);
    backend.tunnelOpened();
    upstream.setNoDelay(true);
    (client as Socket).setNoDelay?.(true);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      this.tunnels.delete(tunnel);
      backend.tunnelClosed();
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', close).on('close', close);
    client.on('error', close).on('close', close);
    upstream.setTimeout(idle, close);
    // The relay pauses the backend's side whenever the client takes no more. Stalled is not idle:
    // the backend has bytes for a client that takes none, which timeouts.clientSend cuts off as it
    // would from a plain response, rather than after timeouts.tunnel.
    const connection = ClientConnection.of(client as Socket);
    upstream.on('pause', () => connection.sendStalled(clientSend));
    (client as Socket).setTimeout?.(idle, close);
    upstream.on('data', (chunk: Buffer) => {
      bodyRelayed(chunk.length);
      tunnel.toClient.feed(chunk);
    });
    client.on('data', (chunk: Buffer) => {
      bodyRelayed(chunk.length);
      tunnel.toBackend.feed(chunk);
    });
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

function noop(): void {}
