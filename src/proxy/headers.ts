/** Headers that describe one connection, not the message: never forwarded in either direction. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

export function isHopByHop(lowerName: string): boolean {
  return HOP_BY_HOP.has(lowerName);
}

/**
 * Extra header names a `Connection` header declares hop-by-hop (RFC 9110 §7.6.1), lower-cased.
 * `close`, `keep-alive` and `upgrade` are connection options, not header names worth listing.
 */
export function connectionListedHeaders(value: string): Set<string> | null {
  // Nearly every message says just "keep-alive" or "close": answer those without splitting.
  if (value.length <= 10) {
    const lower = value.toLowerCase();
    if (lower === 'keep-alive' || lower === 'close' || lower === 'upgrade') return null;
  }
  let names: Set<string> | null = null;
  for (const token of value.split(',')) {
    const name = token.trim().toLowerCase();
    if (name === '' || name === 'close' || name === 'keep-alive' || name === 'upgrade') continue;
    (names ??= new Set()).add(name);
  }
  return names;
}

/** Removes the named headers from a flat [name, value, …] list in place. */
export function removeHeaders(flat: string[], lowerNames: ReadonlySet<string>): void {
  let write = 0;
  for (let read = 0; read < flat.length; read += 2) {
    const name = flat[read] as string;
    if (lowerNames.has(name.toLowerCase())) continue;
    flat[write] = name;
    flat[write + 1] = flat[read + 1] as string;
    write += 2;
  }
  flat.length = write;
}
