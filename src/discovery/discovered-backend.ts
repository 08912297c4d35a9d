import type { DiscoveryEntry } from '../config/schema.js';
import type { BackendSettings } from '../upstream/backend.js';
import type { FoundTarget } from './dns-lookup.js';

/** The name an entry resolves: what `limpet_discovery_errors_total{name}` and the logs call it. */
export function discoveryName(entry: DiscoveryEntry): string {
  return 'dns' in entry ? entry.dns.name : entry.srv;
}

/** Which entry a discovered backend came from, as the admin API shows it: "dns:app.internal:3000" or "srv:_http._tcp.app.internal". */
export function sourceLabel(entry: DiscoveryEntry): string {
  return 'dns' in entry ? `dns:${entry.dns.name}:${entry.dns.port}` : `srv:${entry.srv}`;
}

/** What stays the same for an entry across reloads (its port or weight may change; its name may not). */
export function sourceKey(entry: DiscoveryEntry): string {
  return 'dns' in entry ? `dns ${entry.dns.name}` : `srv ${entry.srv}`;
}

/**
 * A discovered backend's id, stable for as long as its address is in DNS: "name/address" for a dns
 * entry, whose addresses share the entry's port, and "name/address:port" for an srv entry, whose
 * targets each have their own (an IPv6 address then in brackets). The id names the address, which
 * is what DNS adds and removes; cookies carry it signed, as any id.
 */
export function discoveredId(entry: DiscoveryEntry, target: FoundTarget): string {
  if ('dns' in entry) return `${entry.dns.name}/${target.address}`;
  return `${entry.srv}/${hostPort(target)}`;
}

/**
 * The backend a found address stands for. `drainDeadline`: once its address has left DNS, how long
 * it drains (ms after its drain began) before its clients move; undefined while it is in DNS.
 */
export function discoveredBackend(entry: DiscoveryEntry, found: FoundTarget, drainDeadline?: number): BackendSettings {
  // A dns entry's port and weight are the entry's as it reads now: a reload may have changed them.
  const target = 'dns' in entry ? { address: found.address, port: entry.dns.port, weight: entry.weight } : found;
  return {
    id: discoveredId(entry, target),
    url: `http://${hostPort(target)}`,
    weight: target.weight,
    drain: drainDeadline !== undefined,
    drainDeadline: drainDeadline ?? null,
    healthPath: entry.healthPath,
    source: sourceLabel(entry),
  };
}

function hostPort(target: FoundTarget): string {
  return target.address.includes(':') ? `[${target.address}]:${target.port}` : `${target.address}:${target.port}`;
}
