import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { ClientChannel, QueuedRequest, Sequenced } from './client-channel.js';
import { ClientSendWatch } from './client-send.js';
import { sendProxyError } from './respond.js';

const kConnection = Symbol('limpet.clientConnection');
type SocketWithConnection = Duplex & {
  [kConnection]?: ClientConnection;
  _httpMessage?: { headersSent: boolean; writableEnded: boolean; shouldKeepAlive: boolean } | null;
};
/** Node's own path for interim responses, ordered with the rest of the connection's output. */
interface RawWritable {
  _writeRaw(data: string, encoding: BufferEncoding): boolean;
}

/**
 * One HTTP/1.x client connection's requests, forwarded one at a time in arrival order. Pipelined
 * requests (RFC 9112 §9.3.2) wait until the one before them is answered, as nginx and HAProxy do:
 * responses stay in order, a non-safe request never overtakes an answer, and one connection holds
 * at most one upstream request. A request Node cannot parse behind pipelined ones is answered after them.
 */
export class ClientConnection implements ClientChannel {
  private current: Sequenced | null = null;
  private readonly waiting: Sequenced[] = [];
  /** A parse error seen while earlier requests were still being answered: written after them. */
  private refusal: { status: number; message: string } | null = null;
  /** timeouts.clientSend, from the first time a write to this client returned false. */
  private sendWatch: ClientSendWatch | null = null;
  /** The request waiting for a backend connection, if any (one at a time, as requests go one at a time). */
  private queuedRequest: QueuedRequest | null = null;

  private constructor(readonly socket: Socket) {}

  /** The connection a request arrived on (created on its first request). */
  static of(socket: Socket): ClientConnection {
    const holder = socket as SocketWithConnection;
    return (holder[kConnection] ??= new ClientConnection(socket));
  }

  /** Starts the request now, or once those before it are answered. */
  admit(request: Sequenced): void {
    if (this.current !== null) {
      this.waiting.push(request);
      return;
    }
    this.current = request;
    request.start();
  }

  /** The current request is answered (or abandoned): the next one may go. */
  finished(): void {
    const next = this.waiting.shift();
    this.current = next ?? null;
    if (next !== undefined) {
      next.start();
      return;
    }
    if (this.refusal !== null) {
      const { status, message } = this.refusal;
      this.refusal = null;
      writeRefusal(this.socket, status, message);
    }
  }

  /**
   * A write to the client returned false: the client has `timeoutMs` (timeouts.clientSend, as it
   * was when the connection first stalled) to take some of what waits for it, or it is cut off.
   */
  sendStalled(timeoutMs: number): void {
    if (this.sendWatch === null) this.sendWatch = new ClientSendWatch(this.socket, timeoutMs);
    else this.sendWatch.stalled();
  }

  get closed(): boolean {
    return this.socket.destroyed;
  }

  /** An HTTP/1.x head says everything in its header fields. */
  completeHead(): boolean {
    return true;
  }

  /**
   * A half-closed client is answered once its request has gone out; while the request has not, the
   * end of the client's side is taken as its leaving (HAProxy's abortonclose for queued requests).
   */
  queued(request: QueuedRequest): void {
    this.queuedRequest = request;
    this.socket.once('end', onQueuedClientEnd);
  }

  dequeued(): void {
    if (this.queuedRequest === null) return;
    this.queuedRequest = null;
    this.socket.off('end', onQueuedClientEnd);
  }

  sendHead(res: ServerResponse, status: number, statusText: string, fields: string[]): boolean {
    if (statusText) res.writeHead(status, statusText, fields);
    else res.writeHead(status, fields);
    return true;
  }

  /** Written the way Node writes its own (writeProcessing, writeEarlyHints): in order with the connection's other responses. */
  sendInterim(res: ServerResponse, status: number, statusText: string, fields: string[]): void {
    let head = `HTTP/1.1 ${status} ${statusText}\r\n`;
    for (let i = 0; i < fields.length; i += 2) head += `${fields[i]}: ${fields[i + 1]}\r\n`;
    (res as unknown as RawWritable)._writeRaw(`${head}\r\n`, 'latin1');
  }

  closeAfterAnswer(res: ServerResponse): void {
    res.shouldKeepAlive = false;
  }

  /** The client ended its side while its request waited for a backend connection: it has left. */
  clientEndedWhileQueued(): void {
    this.queuedRequest?.onClientClose();
    this.socket.destroy();
  }

  /**
   * Answers a request Node could not parse (or did not receive in time) with `status` and closes
   * the connection — after the answers to the whole requests before it, never in their place. An
   * error inside the request being answered ends that one at once. Returns whether it was answered.
   */
  static refuse(socket: Duplex, status: number, message: string): boolean {
    const connection = (socket as SocketWithConnection)[kConnection];
    if (connection?.current?.received === true) {
      connection.refusal = { status, message };
      return true;
    }
    return writeRefusal(socket, status, message);
  }
}

function onQueuedClientEnd(this: SocketWithConnection): void {
  this[kConnection]?.clientEndedWhileQueued();
}

function writeRefusal(socket: Duplex, status: number, message: string): boolean {
  // A response half written cannot be followed by another: cut the connection instead. (One that
  // is ended is whole; Node flushes it before these bytes.)
  const current = (socket as SocketWithConnection)._httpMessage;
  if (current?.headersSent === true && !current.writableEnded) {
    socket.destroy();
    return false;
  }
  // The request was already refused with an answer that closes the connection: nothing to add.
  if (current?.writableEnded === true && !current.shouldKeepAlive) return false;
  return sendProxyError(socket, status, message);
}
