// Peers that vanish without a FIN, on loopback: every packet from and to one source address is
// dropped (iptables), as if the client's machine had lost power. And the kernel's TCP table, to see
// which sockets to such peers a process still holds. Linux only; dropping needs root and iptables.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** Whether packets can be dropped here (root, and an iptables that works). */
export function canDropPackets(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('iptables', ['-w', '-L', 'INPUT', '-n'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Drops every packet from and to `address` until the returned function is called. Rules go into
 * INPUT, where loopback traffic is delivered, so a drop looks like loss on the wire to both ends.
 */
export function dropPacketsOf(address: string): () => void {
  const rules = [
    ['-s', address, '-j', 'DROP', '-m', 'comment', '--comment', 'limpet vanishing peer'],
    ['-d', address, '-j', 'DROP', '-m', 'comment', '--comment', 'limpet vanishing peer'],
  ];
  const added: string[][] = [];
  const remove = () => {
    for (const rule of added.splice(0)) execFileSync('iptables', ['-w', '-D', 'INPUT', ...rule], { stdio: 'ignore' });
  };
  try {
    for (const rule of rules) {
      execFileSync('iptables', ['-w', '-I', 'INPUT', ...rule], { stdio: 'ignore' });
      added.push(rule);
    }
  } catch (error) {
    remove();
    throw error;
  }
  return remove;
}

/** One row of /proc/net/tcp: local and remote ends, state, and the socket's inode (0 once no process holds it). */
interface TcpRow {
  localPort: number;
  remoteAddress: string;
  state: string;
  inode: number;
}

/** The kernel's states by their /proc/net/tcp number. */
const TCP_STATES = ['', 'ESTABLISHED', 'SYN-SENT', 'SYN-RECV', 'FIN-WAIT-1', 'FIN-WAIT-2', 'TIME-WAIT', 'CLOSE', 'CLOSE-WAIT', 'LAST-ACK', 'LISTEN', 'CLOSING'];

function tcpRows(): TcpRow[] {
  const rows: TcpRow[] = [];
  // The file is read in pieces while connections come and go, so a row can show up twice.
  const seen = new Set<string>();
  for (const line of readFileSync('/proc/net/tcp', 'latin1').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 10) continue;
    const [, local, remote, state, , , , , , inode] = fields as [string, string, string, string, string, string, string, string, string, string];
    if (seen.has(`${local} ${remote}`)) continue;
    seen.add(`${local} ${remote}`);
    const [remoteHex] = remote.split(':') as [string];
    rows.push({
      localPort: parseInt(local.split(':')[1] as string, 16),
      // Little-endian hex: 0100007F is 127.0.0.1.
      remoteAddress: [3, 2, 1, 0].map((i) => parseInt(remoteHex.slice(i * 2, i * 2 + 2), 16)).join('.'),
      state: TCP_STATES[parseInt(state, 16)] ?? state,
      inode: Number(inode),
    });
  }
  return rows;
}

/** Inodes of the sockets process `pid` has open. */
function socketInodes(pid: number): Set<number> {
  const inodes = new Set<number>();
  const dir = `/proc/${pid}/fd`;
  for (const fd of readdirSync(dir)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`${dir}/${fd}`));
      if (match !== null) inodes.add(Number(match[1]));
    } catch {
      // Closed while we looked.
    }
  }
  return inodes;
}

/** What is left of the connections accepted on `localPort` from `remoteAddress`. */
export interface HeldSockets {
  /** Kernel sockets in any state but TIME-WAIT, orphans (no descriptor) included. */
  kernel: number;
  /** Those that process `pid` still has a descriptor for. */
  descriptors: number;
  /** Kernel sockets by state, e.g. { "FIN-WAIT-1": 12 }. */
  states: Record<string, number>;
}

/** Counts the sockets of connections accepted on `localPort` from `remoteAddress`, and those `pid` holds. */
export function heldSockets(pid: number, localPort: number, remoteAddress: string): HeldSockets {
  const inodes = socketInodes(pid);
  const held: HeldSockets = { kernel: 0, descriptors: 0, states: {} };
  for (const row of tcpRows()) {
    if (row.localPort !== localPort || row.remoteAddress !== remoteAddress || row.state === 'TIME-WAIT') continue;
    held.kernel++;
    held.states[row.state] = (held.states[row.state] ?? 0) + 1;
    if (row.inode !== 0 && inodes.has(row.inode)) held.descriptors++;
  }
  return held;
}
