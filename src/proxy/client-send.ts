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
  setTimeout(resetUnlessClosed, CLOSE_GRACE_MS, socket).unref();
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
