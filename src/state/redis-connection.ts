import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { createClient, createSentinel, type RedisClientOptions } from 'redis';
import type { HostPort } from '../config/schema.js';

/** `sharedState` as the connection reads it. */
export interface RedisSettings {
  redis: string;
  tlsCa: string | null;
  sentinel: { name: string; nodes: HostPort[] } | null;
}

/** The few operations shared state needs, over a plain Redis or one found through Sentinel. */
export interface RedisConnection {
  /** Sends the commands in one round trip; resolves with their replies (an error reply is an Error in its slot). */
  pipeline(commands: readonly string[][]): Promise<unknown[]>;
  subscribe(channel: string, listener: (message: string) => void): Promise<void>;
  close(): Promise<void>;
}

/** Reconnects back off from 100 ms to at most 2 s, forever: Redis coming back must find us trying. */
const reconnectStrategy = (retries: number) => Math.min(100 * 2 ** Math.min(retries, 5), 2_000);
const CONNECT_TIMEOUT_MS = 2_000;

/**
 * Connects to Redis without waiting for it: commands fail at once while it is unreachable (no
 * offline queue — shared state is never worth holding a request or piling up work for), and the
 * client keeps reconnecting in the background. `onError` hears every connection error.
 */
export function connectRedis(settings: RedisSettings, onError: (error: Error) => void): RedisConnection {
  const url = new URL(settings.redis);
  const tls = url.protocol === 'rediss:';
  const ca = settings.tlsCa === null ? undefined : readFileSync(settings.tlsCa);
  const socket = tls
    ? // SNI carries host names only (RFC 6066); an address is checked against the certificate's IP entries.
      { tls: true as const, ca, servername: isIP(url.hostname) === 0 ? url.hostname : undefined, connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy }
    : { connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy };
  if (settings.sentinel === null) return plainConnection({ url: settings.redis, socket, disableOfflineQueue: true, pingInterval: 5_000 }, url, onError);
  const database = url.pathname.length > 1 ? Number(url.pathname.slice(1)) : undefined;
  const sentinel = createSentinel({
    name: settings.sentinel.name,
    sentinelRootNodes: settings.sentinel.nodes,
    nodeClientOptions: {
      username: url.username === '' ? undefined : decodeURIComponent(url.username),
      password: url.password === '' ? undefined : decodeURIComponent(url.password),
      database,
      socket: tls ? { tls: true, ca, connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy } : { connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy },
      disableOfflineQueue: true,
    },
    sentinelClientOptions: { socket: { connectTimeout: CONNECT_TIMEOUT_MS, reconnectStrategy } },
  });
  sentinel.on('error', (error: unknown) => onError(error instanceof Error ? error : new Error(String(error))));
  const ready = sentinel.connect().catch((error: unknown) => onError(error as Error));
  return {
    async pipeline(commands) {
      // Never queue behind a connection that is not there: the batch stays pending and is sent later.
      if (!sentinel.isReady) throw new Error(`no connection to the Redis master "${settings.sentinel?.name}"`);
      const multi = sentinel.multi();
      for (const command of commands) multi.addCommand(false, command);
      return (await multi.execAsPipeline()) as unknown[];
    },
    async subscribe(channel, listener) {
      await ready;
      await sentinel.subscribe(channel, listener);
    },
    async close() {
      await sentinel.close().catch(() => sentinel.destroy());
    },
  };
}

function plainConnection(options: RedisClientOptions, url: URL, onError: (error: Error) => void): RedisConnection {
  const client = createClient(options);
  client.on('error', onError);
  client.connect().catch((error: unknown) => onError(error as Error));
  // Pub/sub takes a connection of its own.
  const subscriber = client.duplicate();
  subscriber.on('error', onError);
  const subscriberReady = subscriber.connect().catch((error: unknown) => onError(error as Error));
  return {
    async pipeline(commands) {
      // Never queue behind a connection that is not there: the batch stays pending and is sent later.
      if (!client.isReady) throw new Error(`no connection to Redis at ${url.host}`);
      const multi = client.multi();
      for (const command of commands) multi.addCommand(command);
      return (await multi.execAsPipeline()) as unknown[];
    },
    async subscribe(channel, listener) {
      await subscriberReady;
      await subscriber.subscribe(channel, listener);
    },
    async close() {
      await Promise.all([client.close().catch(() => client.destroy()), subscriber.close().catch(() => subscriber.destroy())]);
    },
  };
}
