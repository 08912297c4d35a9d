/** How many pseudo-header fields (":method", ":path", …) open a raw header list: HTTP/2 sends them first, HTTP/1.x none. */
export function leadingPseudoFields(raw: readonly string[]): number {
  let count = 0;
  while (2 * count < raw.length && (raw[2 * count] as string).charCodeAt(0) === 58 /* : */) count++;
  return count;
}

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

/**
 * Copies a response's raw headers into `flat` as [name, value, …] strings, without hop-by-hop ones
 * or those its Connection header lists. Returns the Transfer-Encoding value when it names a coding
 * besides chunked (`gzip, chunked`), which must be passed on for the body to mean anything; else null.
 */
export function copyResponseHeaders(raw: readonly Buffer[], flat: string[]): string | null {
  let connectionValue: string | undefined;
  let codings: string | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as Buffer).toString('latin1');
    const lower = name.toLowerCase();
    if (isHopByHop(lower)) {
      if (lower === 'connection') connectionValue = (raw[i + 1] as Buffer).toString('latin1');
      else if (lower === 'transfer-encoding') {
        const value = (raw[i + 1] as Buffer).toString('latin1');
        if (value.length !== 7 || value.toLowerCase() !== 'chunked') codings = codings === null ? value : `${codings}, ${value}`;
      }
      continue;
    }
    flat.push(name, (raw[i + 1] as Buffer).toString('latin1'));
  }
  if (connectionValue !== undefined) {
    const listed = connectionListedHeaders(connectionValue);
    if (listed !== null) removeHeaders(flat, listed);
  }
  return codings;
}
