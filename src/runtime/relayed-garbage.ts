import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { requestsInFlight } from '../upstream/backend.js';

/**
 * Every body chunk limpet relays is an ArrayBuffer of its own, dead once written on: Node's HTTP
 * parser copies each chunk of a request body out of its read buffer, and each read of a backend
 * socket allocates a new one. V8 frees such buffers only in a scavenge, and starts one for them
 * only when the young generation's buffers reach 32 MB (twice its default semi-space size, a
 * constant no flag changes); a big transfer allocates too few JS objects to start one sooner. One
 * 20 MiB upload and one 20 MiB download so left about 30 MB of dead buffers, and the RSS they took
 * stayed (bench/transfer-memory.ts). A scavenge every 4 MiB of relayed bodies keeps them to that,
 * at about 1 ms each: worth it while few requests are in flight, when the dead buffers are most of
 * what grows and the CPU has room. Under load it added 23–29 % to the CPU per request of 100 KB
 * responses (bench:compare ka-100k-50 and -500), while the dead buffers are a small share of the
 * memory in use: V8's own schedule is kept there.
 */
const COLLECT_EVERY_BYTES = 4 * 1024 * 1024;
/** Most requests in flight (all backends, this process) at which a scavenge is still asked for. */
const MOST_IN_FLIGHT = 8;

type MinorGc = (options: { type: 'minor' }) => void;

let sinceCollected = 0;
const collectYoungGeneration = findGc();

/** Counts body bytes relayed (either way, or through a tunnel); every 4 MiB, the dead ones are freed unless under load. */
export function bodyRelayed(bytes: number): void {
  sinceCollected += bytes;
  if (sinceCollected < COLLECT_EVERY_BYTES) return;
  sinceCollected = 0;
  if (requestsInFlight() <= MOST_IN_FLIGHT) collectYoungGeneration?.({ type: 'minor' });
}

/**
 * V8's `gc`, which only `--expose-gc` makes visible: turned on here rather than on every command
 * line that starts limpet (CLI, npm scripts, container, workers, tests); it then exists in contexts
 * created afterwards, and limpet creates none but this one.
 */
function findGc(): MinorGc | null {
  const exposed = (globalThis as { gc?: MinorGc }).gc;
  if (typeof exposed === 'function') return exposed;
  try {
    setFlagsFromString('--expose-gc');
    return runInNewContext('gc') as MinorGc;
  } catch {
    return null;
  }
}
