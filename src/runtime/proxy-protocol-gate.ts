import type { Server, Socket } from 'node:net';
import { AddressSet, normaliseAddress, type ClaimedAddresses } from '../affinity/client-address.js';
import { proxySignature, readProxyHeader, type ProxyHeaderFault } from './proxy-protocol.js';

/** Why a connection was closed by the gate; each a bounded metric label. */
export type ProxyProtocolRefusal = ProxyHeaderFault | 'truncated' | 'timeout' | 'unlisted';

export const PROXY_PROTOCOL_REFUSALS: readonly ProxyProtocolRefusal[] = ['missing', 'malformed', 'oversized', 'truncated', 'timeout', 'unlisted'];

/** `proxyProtocol` as the gate runs it; null when the key is absent. */
export interface ProxyProtocolSettings {
  /** Peers whose every connection must open with a header. */
  readonly from: readonly string[];
  /** Time a connection has for its header (timeouts.clientHeaders). */
  readonly headerTimeout: number;
}

type Admitted = Socket & { [kAdmitted]?: true };
const kAdmitted = Symbol('limpet.proxyProtocolAdmitted');
const EMPTY = Buffer.alloc(0);

/**
 * Stands between the listening socket and the HTTP or TLS server: a connection from a peer in
 * `proxyProtocol.from` must open with a PROXY header, which is read and removed before the server
 * sees a byte, and its source address recorded as the connection's client; a peer not listed must
 * not send one. Anything else is closed before a byte reaches a backend, and `refused` is told why.
 * With the key absent every connection goes straight on. All of this is per connection, never per
 * request.
 */
export class ProxyProtocolGate implements ClaimedAddresses {
  private settings: ProxyProtocolSettings | null = null;
  private listed: AddressSet | null = null;
  /** Claimed client addresses by the connection's real peer "address port", which TLS sockets over it report too. */
  private readonly claimed = new Map<string, string>();
  /** Connections whose first bytes have not decided them yet. */
  private readonly waiting = new Set<HeaderWait>();

  constructor(
    settings: ProxyProtocolSettings | null,
    private readonly refused: (reason: ProxyProtocolRefusal, peer: string) => void,
  ) {
    this.configure(settings);
  }

  /** New settings apply to connections accepted from now on. */
  configure(settings: ProxyProtocolSettings | null): void {
    this.settings = settings;
    this.listed = settings === null ? null : new AddressSet(settings.from);
  }

  /**
   * Takes over the `connection` listeners `server` has now (its HTTP or TLS handling): they get each
   * connection once the gate lets it through, with any bytes read past the header put back.
   */
  guard(server: Server): void {
    const listeners = server.listeners('connection') as ((socket: Socket) => void)[];
    server.removeAllListeners('connection');
    const handOn = (socket: Socket): void => {
      (socket as Admitted)[kAdmitted] = true;
      for (const listener of listeners) listener.call(server, socket);
    };
    server.on('connection', (socket: Socket) => {
      // Already through (a socket handed back after a refused CONNECT), or nothing to read.
      if ((socket as Admitted)[kAdmitted] === true || this.settings === null) return handOn(socket);
      const peer = normaliseAddress(socket.remoteAddress ?? '');
      // No peer address: the connection was reset before it could be asked for one. Nobody to serve.
      if (peer === '') return void socket.destroy();
      this.waiting.add(new HeaderWait(this, socket, peer, (this.listed as AddressSet).has(peer), this.settings.headerTimeout, handOn));
    });
  }

  /** Closes the connections still waiting for their first bytes (shutdown): none has a request yet. */
  closeWaiting(): void {
    for (const wait of this.waiting) wait.close();
  }

  of(socket: Socket): string | undefined {
    return this.claimed.size === 0 ? undefined : this.claimed.get(connectionKey(socket));
  }

  /** @internal A listed peer's header named the client `address` for the connection of `socket`. */
  claim(socket: Socket, address: string): void {
    const key = connectionKey(socket);
    this.claimed.set(key, address);
    socket.once('close', () => this.claimed.delete(key));
  }

  /** @internal */
  refuse(socket: Socket, reason: ProxyProtocolRefusal, peer: string): void {
    socket.destroy();
    this.refused(reason, peer);
  }

  /** @internal The connection of `wait` is through, refused or gone. */
  settled(wait: HeaderWait): void {
    this.waiting.delete(wait);
  }
}

function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress} ${socket.remotePort}`;
}

/** One accepted connection until its first bytes decide it: through to the server, or closed. */
class HeaderWait {
  private received: Buffer = EMPTY;
  private settled = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly gate: ProxyProtocolGate,
    private readonly socket: Socket,
    private readonly peer: string,
    private readonly listed: boolean,
    timeout: number,
    private readonly handOn: (socket: Socket) => void,
  ) {
    // Paused mode: the bytes stay in the socket's buffer until read, and what is read past the
    // header goes back with unshift, so the server that takes over loses nothing.
    socket.on('readable', this.onReadable);
    socket.on('end', this.onGone);
    socket.on('error', this.onGone);
    socket.on('close', this.onClose);
    this.timer = setTimeout(this.onTimeout, timeout).unref();
  }

  private readonly onReadable = (): void => {
    let chunk: Buffer | null;
    while ((chunk = this.socket.read() as Buffer | null) !== null) {
      this.received = this.received.length === 0 ? chunk : Buffer.concat([this.received, chunk]);
    }
    if (this.received.length > 0) this.decide();
  };

  private decide(): void {
    if (!this.listed) {
      const signature = proxySignature(this.received);
      if (signature === 'partial') return;
      if (signature === 'none') return this.pass(this.received);
      return this.refuse('unlisted');
    }
    const header = readProxyHeader(this.received);
    if (header.kind === 'incomplete') return;
    if (header.kind === 'invalid') return this.refuse(header.fault);
    if (header.source !== null) this.gate.claim(this.socket, header.source);
    this.pass(this.received.subarray(header.length));
  }

  private pass(rest: Buffer): void {
    this.stop();
    this.socket.off('error', this.onGone);
    if (rest.length > 0) this.socket.unshift(rest);
    this.handOn(this.socket);
  }

  private refuse(reason: ProxyProtocolRefusal): void {
    this.stop();
    this.gate.refuse(this.socket, reason, this.peer);
  }

  /**
   * Closed or reset before the first bytes decided it. A bare connect and close (a TCP health check)
   * is no refusal. Stays the socket's error listener after a refusal, when it does nothing.
   */
  private readonly onGone = (): void => {
    if (this.settled) return;
    if (this.received.length === 0 || !this.listed) this.close();
    else this.refuse('truncated');
  };

  /** Ends the connection without counting it. */
  close(): void {
    this.stop();
    this.socket.destroy();
  }

  private readonly onTimeout = (): void => this.refuse('timeout');

  private readonly onClose = (): void => this.stop();

  private stop(): void {
    this.settled = true;
    this.gate.settled(this);
    clearTimeout(this.timer);
    this.socket.off('readable', this.onReadable);
    this.socket.off('end', this.onGone);
    this.socket.off('close', this.onClose);
  }
}
