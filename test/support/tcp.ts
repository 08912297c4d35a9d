import { readFileSync } from 'node:fs';

/** One end of a TCP connection on this host, as the kernel reports it (Linux, /proc/net/tcp). */
export interface TcpEnd {
  /** Bytes written by the application that the peer has not taken yet. */
  sendQueue: number;
  /** Bytes received that the application has not read yet. */
  receiveQueue: number;
  /**
   * The peer's receive window is closed: it has stopped reading and its buffer is full, so this end
   * may send nothing and the kernel only probes until the window opens (the zero-window probe timer).
   */
  peerWindowClosed: boolean;
}

const ZERO_WINDOW_PROBE_TIMER = '04';

/** The end of the IPv4 connection from `localPort` to `remotePort` on loopback, or undefined if none is open. */
export function tcpEnd(localPort: number, remotePort: number): TcpEnd | undefined {
  const local = `0100007F:${hexPort(localPort)}`;
  const remote = `0100007F:${hexPort(remotePort)}`;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] !== local || fields[2] !== remote) continue;
    const [sendQueue, receiveQueue] = fields[4]!.split(':').map((hex) => parseInt(hex, 16)) as [number, number];
    return { sendQueue, receiveQueue, peerWindowClosed: fields[5]!.split(':')[0] === ZERO_WINDOW_PROBE_TIMER };
  }
  return undefined;
}

function hexPort(port: number): string {
  return port.toString(16).toUpperCase().padStart(4, '0');
}
