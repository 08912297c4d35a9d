// HAProxy as an L4 balancer in front of limpet: `mode tcp`, each client connection relayed to limpet
// from one source address, with a PROXY protocol header (`send-proxy`, `send-proxy-v2`) or without.
// Used by test/proxy-protocol-haproxy.test.ts and bench/proxy-protocol.ts.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import os from 'node:os';
import path from 'node:path';

export interface RelaySettings {
  /** Port HAProxy listens on (127.0.0.1). */
  port: number;
  /** limpet's port (127.0.0.1). */
  target: number;
  /** The PROXY header HAProxy writes first on every connection to limpet, or none. */
  send: 'send-proxy' | 'send-proxy-v2' | 'none';
  /** Source address of HAProxy's connections to limpet: the balancer limpet lists. */
  source: string;
  /** When set, HAProxy health-checks limpet with `GET <path>` every 300 ms, its header sent first (`check-send-proxy`). */
  checkPath?: string;
}

export function haproxyRelayConfig({ port, target, send, source, checkPath }: RelaySettings): string {
  const check = checkPath === undefined ? '' : ` check${send === 'none' ? '' : ' check-send-proxy'} inter 300ms`;
  return [
    'global',
    '    maxconn 4096',
    'defaults',
    '    mode tcp',
    '    maxconn 4096',
    '    timeout connect 2s',
    '    timeout client 60s',
    '    timeout server 60s',
    'frontend edge',
    `    bind 127.0.0.1:${port}`,
    '    default_backend limpet',
    'backend limpet',
    ...(checkPath === undefined ? [] : [`    option httpchk GET ${checkPath}`]),
    `    server limpet 127.0.0.1:${target}${send === 'none' ? '' : ` ${send}`} source ${source}${check}`,
    '',
  ].join('\n');
}

export interface Relay {
  child: ChildProcess;
  config: string;
  /** Stops HAProxy and waits for it to exit. */
  close(): Promise<void>;
}

/**
 * Starts `binary` (HAProxy) in the foreground with a relay config and resolves once its port
 * accepts connections; rejects with HAProxy's own output if it exits first. `wrap` prefixes the
 * command (e.g. taskset).
 */
export async function startHaproxyRelay(binary: string, settings: RelaySettings, wrap: string[] = []): Promise<Relay> {
  const config = haproxyRelayConfig(settings);
  const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'limpet-haproxy-')), 'relay.cfg');
  writeFileSync(file, config);
  const [program, ...args] = [...wrap, binary, '-f', file, '-db'];
  const child = spawn(program!, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!(await acceptsConnections(settings.port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`HAProxy did not start listening on 127.0.0.1:${settings.port}: ${output.trim() || `exit ${child.exitCode}`}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    child,
    config,
    close: async () => {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Whether a TCP connection to 127.0.0.1:`port` is accepted (it is closed at once). */
export function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
  });
}
