import { availableParallelism } from 'node:os';
import type { AffinitySettings } from '../affinity/build-affinity.js';
import type { LimpetConfig } from '../config/schema.js';
import type { DiscoverySettings } from '../discovery/backend-discovery.js';
import type { HealthCheckSettings } from '../health/active-checks.js';
import type { Http2Settings } from './h2-listener.js';
import type { ForwardingContext } from '../proxy/context.js';
import type { PoolSettings } from '../upstream/pools.js';
import type { ProxyProtocolSettings } from './proxy-protocol-gate.js';

/** The config's view for each part of the proxy: each part sees only the keys it needs. */

export function affinitySettings(config: LimpetConfig): AffinitySettings {
  const { affinity } = config;
  return {
    by: affinity.by,
    cookie: {
      name: affinity.cookie.name,
      maxAge: affinity.cookie.maxAge,
      path: affinity.cookie.path,
      domain: affinity.cookie.domain,
      httpOnly: affinity.cookie.httpOnly,
      secure: affinity.cookie.secure ?? config.tls !== null,
      sameSite: affinity.cookie.sameSite,
    },
    onRecovery: affinity.onRecovery,
    rebalance: affinity.rebalance,
    maxLoadFactor: config.balance.maxLoadFactor,
  };
}

type ConfigDerived = Omit<ForwardingContext, 'affinity' | 'clients' | 'accessLog' | 'observer'>;

export function forwardingSettings(config: LimpetConfig): ConfigDerived {
  return {
    responseTimeout: config.timeouts.response,
    connectTimeout: config.timeouts.connect,
    clientSendTimeout: config.timeouts.clientSend,
    tunnelIdle: config.timeouts.tunnel,
    retries: config.retries,
    protocol: config.tls === null ? 'http' : 'https',
    affinityHeader: config.affinity.by === 'header' ? config.affinity.header.toLowerCase() : null,
    limits: config.limits,
    accessLogQuery: config.log.accessQuery,
  };
}

/** Processes serving traffic. */
export function workerCount(config: LimpetConfig): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers;
}

export function http2Settings(config: LimpetConfig): Http2Settings {
  return {
    maxConcurrentStreams: config.limits.maxConcurrentStreams,
    maxHeaderSize: config.limits.maxHeaderSize,
    maxHeaderCount: config.limits.maxHeaderCount,
    clientIdle: config.timeouts.clientIdle,
    clientRequest: config.timeouts.clientRequest,
  };
}

export function healthSettings(config: LimpetConfig): HealthCheckSettings {
  return { ...config.healthCheck, cooldown: config.passive.cooldown };
}

export function poolSettings(config: LimpetConfig): PoolSettings {
  return { connectTimeout: config.timeouts.connect, keepAliveTimeout: 60_000, maxConnections: config.limits.maxBackendConnections };
}

export function discoverySettings(config: LimpetConfig): DiscoverySettings {
  return config.discovery;
}

export function proxyProtocolSettings(config: LimpetConfig): ProxyProtocolSettings | null {
  return config.proxyProtocol === null ? null : { from: config.proxyProtocol.from, headerTimeout: config.timeouts.clientHeaders };
}
