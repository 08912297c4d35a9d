import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';

/**
 * How long a client has to close its side once the proxy has ended the connection. One that does
 * not has vanished (no FIN came, perhaps no ACK either) or ignores `Connection: close`.
 */
const CLOSE_GRACE_MS = 1000;

/**
 * Ends a client connection after `last`, and resets it if the client has not closed its side within
 * CLOSE_GRACE_MS. The listener allows half-open connections, so an ended socket would otherwise keep
 * its descriptor until the client's FIN, which a vanished client never sends: for minutes, until
 * TCP gives up retransmitting.
 */
export function endClientConnection(socket: Duplex, last?: string): void {
  socket.end(last);
  const grace = setTimeout(resetUnlessClosed, CLOSE_GRACE_MS, socket).unref();
  // A client that closes in time frees its socket at once, not when the grace runs out.
  socket.once('close', () => clearTimeout(grace));
}

function resetUnlessClosed(socket: Duplex): void {
  if (!socket.destroyed) resetClientConnection(socket);
}

/**
 * Cuts a client connection that takes no more bytes. A reset, not a close (nginx's
 * reset_timedout_connection): a close would leave the kernel retransmitting what the client never
 * took, for minutes, holding its send buffer. Node cannot reset a TLS socket, which is closed instead.
 */
function resetClientConnection(socket: Duplex): void {
  if (socket instanceof Socket && !(socket instanceof TLSSocket)) socket.resetAndDestroy();
  else socket.destroy();
}

/** Looks per timeouts.clientSend period: a client is cut off at most a quarter period late. */
const CHECKS_PER_PERIOD = 4;

/**
 * `timeouts.clientSend` for one client connection: a client that takes none of the bytes waiting
 * for it for that long is cut off. A write that returns false arms the watch. Node returns false for
 * every chunk of 16 KB or more even to a client that keeps up (it corks the socket while it writes
 * one), so a stall only bumps a counter: no clock, no timer. The watch looks a few times a period
 * at whether the kernel took bytes since its last look — a stall (each one after a response's first
 * follows a drain), a write completed, or less left of the one under way (libuv's count, which
 * Node's own socket timeout reads too) — and disarms itself once nothing is waiting.
 */
export class ClientSendWatch {
  private readonly timer: NodeJS.Timeout;
  private armed = true;
  /** Stalls since the last look; each one after the first of a response follows a drain. */
  private stalls = 0;
  /** Looks in a row that saw no progress. */
  private stuck = 0;
  /** Bytes waiting for the client, and those of the write under way, at the last look. */
  private waiting: number;
  private unwritten: number;

  constructor(
    private readonly socket: Duplex,
    timeoutMs: number,
    /** How a stalled client is cut off: its connection reset, or (HTTP/2) its stream cancelled. */
    private readonly cutOff: (stalled: Duplex) => void = resetClientConnection,
  ) {
    this.waiting = socket.writableLength;
    this.unwritten = unwrittenOfCurrentWrite(socket);
    this.timer = setTimeout(lookAgain, timeoutMs / CHECKS_PER_PERIOD, this).unref();
    // Or the timer would keep a closed connection's objects for up to a quarter period.
    socket.once('close', () => clearTimeout(this.timer));
  }

  /** A write to the client returned false. */
  stalled(): void {
    if (this.armed) {
      this.stalls++;
      return;
    }
    this.armed = true;
    this.stuck = 0;
    this.waiting = this.socket.writableLength;
    this.unwritten = unwrittenOfCurrentWrite(this.socket);
    this.timer.refresh();
  }

  /** The timer's turn: disarm if nothing waits, cut off a client that took nothing for a period. */
  look(): void {
    const socket = this.socket;
    const waiting = socket.writableLength;
    if (socket.destroyed || waiting === 0) {
      this.armed = false;
      this.stalls = 0;
      return;
    }
    const unwritten = unwrittenOfCurrentWrite(socket);
    const tookSome = this.stalls > 0 || waiting < this.waiting || (waiting === this.waiting && unwritten < this.unwritten);
    this.stalls = 0;
    this.waiting = waiting;
    this.unwritten = unwritten;
    this.stuck = tookSome ? 0 : this.stuck + 1;
    if (this.stuck >= CHECKS_PER_PERIOD) this.cutOff(socket);
    else this.timer.refresh();
  }
}

function lookAgain(watch: ClientSendWatch): void {
  watch.look();
}

/** Bytes of the write under way that the kernel has not taken yet, as libuv counts them; 0 if unknown. */
function unwrittenOfCurrentWrite(socket: Duplex): number {
  return (socket as Duplex & { _handle?: { writeQueueSize?: number } | null })._handle?.writeQueueSize ?? 0;
}
