/**
 * The baseline proxies' stickiness: FNV-1a over the client's address string, cheap and spreading
 * neighbouring addresses, reduced onto the backend list. Same client address, same backend.
 */
export function hashAddress(address: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < address.length; i++) {
    hash ^= address.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return hash >>> 0;
}

export function backendFor<T>(address: string | undefined, backends: readonly T[]): T {
  return backends[hashAddress(address ?? '') % backends.length]!;
}
