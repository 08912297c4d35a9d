import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'redis';
import { commandFrom } from './debian-packages.js';
import { freePort } from './ports.js';
import { waitFor } from './client.js';

/** A real redis-server (Debian's) on a free loopback port, without persistence, for one test. */
export interface TestRedis {
  readonly port: number;
  /** The URL a proxy's sharedState.redis names (with the password, if any). */
  readonly url: string;
  /** Stops it (SIGKILL: no shutdown save) and waits for it to exit. */
  stop(): Promise<void>;
  /** Starts it again on the same port: empty, as a restarted Redis without persistence is. */
  start(): Promise<void>;
  /** Sends one command on a connection of its own and returns the reply. */
  command(...args: string[]): Promise<unknown>;
  close(): Promise<void>;
}

export interface RedisOptions {
  password?: string;
  /** Serve TLS only, with this certificate and key (the URL becomes rediss://). */
  tls?: { cert: string; key: string; ca: string };
  /** Extra redis-server arguments, e.g. ['--replicaof', '127.0.0.1', '6379']. */
  args?: string[];
  port?: number;
}

export async function startRedis(options: RedisOptions = {}): Promise<TestRedis> {
  const server = commandFrom('redis-server');
  const port = options.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'limpet-redis-'));
  const args = ['--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...(options.args ?? [])];
  if (options.tls !== undefined) {
    args.push('--port', '0', '--tls-port', String(port), '--tls-cert-file', options.tls.cert, '--tls-key-file', options.tls.key, '--tls-ca-cert-file', options.tls.ca, '--tls-auth-clients', 'no');
  } else args.push('--port', String(port));
  if (options.password !== undefined) args.push('--requirepass', options.password, '--masterauth', options.password);
  let child: ChildProcess | null = null;
  const auth = options.password === undefined ? '' : `:${encodeURIComponent(options.password)}@`;
  const redis: TestRedis = {
    port,
    url: `${options.tls === undefined ? 'redis' : 'rediss'}://${auth}127.0.0.1:${port}`,
    async start() {
      const started = spawn(server, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      child = started;
      await waitFor(() => (options.tls === undefined ? ping(port) : listening(port)), 10_000, `redis-server on port ${port}`);
    },
    async stop() {
      const running = child;
      child = null;
      if (running === null || running.exitCode !== null) return;
      const exited = new Promise((resolve) => running.once('exit', resolve));
      running.kill('SIGKILL');
      await exited;
    },
    async command(...command) {
      const client = createClient({ url: redis.url, socket: options.tls === undefined ? {} : { tls: true, ca: readFileSync(options.tls.ca) } });
      client.on('error', () => {});
      await client.connect();
      try {
        return await client.sendCommand(command);
      } finally {
        client.destroy();
      }
    },
    close: () => redis.stop(),
  };
  await redis.start();
  return redis;
}

/** A Redis Sentinel (redis-server --sentinel) watching `master` as "mymaster", quick to fail over. */
export async function startSentinel(masterPort: number, password?: string): Promise<{ port: number; close(): Promise<void> }> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'limpet-sentinel-'));
  const file = join(dir, 'sentinel.conf');
  const lines = [
    `port ${port}`,
    'bind 127.0.0.1',
    `dir ${dir}`,
    `sentinel monitor mymaster 127.0.0.1 ${masterPort} 1`,
    'sentinel down-after-milliseconds mymaster 1000',
    'sentinel failover-timeout mymaster 3000',
    'sentinel parallel-syncs mymaster 1',
  ];
  if (password !== undefined) lines.push(`sentinel auth-pass mymaster ${password}`);
  writeFileSync(file, `${lines.join('\n')}\n`);
  const child = spawn(commandFrom('redis-server'), [file, '--sentinel'], { stdio: 'ignore' });
  await waitFor(() => ping(port), 10_000, 'sentinel');
  return {
    port,
    close: async () => {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    },
  };
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Whether a Redis answers on `port` (a password-protected one answers PING with NOAUTH: up all the same). */
function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.setTimeout(1_000, () => socket.destroy());
    socket.once('error', () => resolve(false));
    socket.once('close', () => resolve(false));
    socket.once('data', (chunk: Buffer) => {
      socket.destroy();
      resolve(/^(\+PONG|-NOAUTH)/.test(chunk.toString('latin1')));
    });
    socket.write('PING\r\n');
  });
}
