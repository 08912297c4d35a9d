import type { RuntimeDrain } from './durable-state.js';

/**
 * How replicas lay out shared state in Redis and what they tell each other. Pure: keys, messages
 * and their strict decoding, so a stranger's (or a corrupted) value is ignored, never obeyed.
 *
 * - a pin is the string key `<prefix>pin:<client key>` holding the backend id, expiring sessionTtl
 *   after it was last written (so its age tells when the client was last seen);
 * - runtime drains are the fields of the hash `<prefix>drains`: backend id → `{"draining","deadlineAt"}`;
 * - every change is also published on `<prefix>events`, so replicas learn it without asking:
 *   `<origin> p` then one `<backend id> <client key>` line per pin, `<origin> d <drain JSON>`, or
 *   `<origin> f <backend id>` (a drain the config file took over). A replica ignores its own origin.
 */

export interface SharedKeys {
  readonly pinPrefix: string;
  /** SCAN MATCH pattern of every pin key. */
  readonly pinPattern: string;
  readonly drains: string;
  readonly events: string;
}

export function sharedKeys(prefix: string): SharedKeys {
  return {
    pinPrefix: `${prefix}pin:`,
    pinPattern: `${escapeGlob(prefix)}pin:*`,
    drains: `${prefix}drains`,
    events: `${prefix}events`,
  };
}

/** Redis glob patterns treat these as special; a prefix is matched literally. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

/** Backend ids as the config allows them; anything else in shared state is not ours. */
const BACKEND_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A client key longer than this is no address, header value or nonce we would have written. */
const MAX_CLIENT_KEY = 1024;

export type SharedEvent =
  | { kind: 'pins'; pins: [key: string, backendId: string][] }
  | { kind: 'drain'; drain: RuntimeDrain }
  | { kind: 'forgotten'; id: string };

export function pinsMessage(origin: string, pins: readonly [string, string][]): string {
  let text = `${origin} p`;
  for (const [key, backendId] of pins) text += `\n${backendId} ${key}`;
  return text;
}

export function drainMessage(origin: string, drain: RuntimeDrain): string {
  return `${origin} d ${JSON.stringify({ id: drain.id, draining: drain.draining, deadlineAt: drain.deadlineAt })}`;
}

export function forgottenMessage(origin: string, id: string): string {
  return `${origin} f ${id}`;
}

export function encodeDrain(drain: RuntimeDrain): string {
  return JSON.stringify({ draining: drain.draining, deadlineAt: drain.deadlineAt });
}

/** A drain hash field's value, or null when it is not one limpet wrote. */
export function decodeDrain(id: string, value: string): RuntimeDrain | null {
  if (!BACKEND_ID.test(id)) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    return null;
  }
  if (typeof parsed !== 'object' || parsed === null) return null;
  const { draining, deadlineAt } = parsed as { draining?: unknown; deadlineAt?: unknown };
  if (typeof draining !== 'boolean') return null;
  if (deadlineAt !== null && !(Number.isSafeInteger(deadlineAt) && (deadlineAt as number) > 0)) return null;
  return { id, draining, deadlineAt: draining ? (deadlineAt as number | null) : null };
}

/** A pin as stored: its client key from the Redis key, its backend from the value; null when malformed. */
export function decodePin(keys: SharedKeys, redisKey: string, backendId: string): [string, string] | null {
  if (!redisKey.startsWith(keys.pinPrefix) || !BACKEND_ID.test(backendId)) return null;
  const key = redisKey.slice(keys.pinPrefix.length);
  return key.length > 0 && key.length <= MAX_CLIENT_KEY ? [key, backendId] : null;
}

/** An event from another replica; null for our own, and for anything malformed. */
export function decodeEvent(message: string, ownOrigin: string): SharedEvent | null {
  const space = message.indexOf(' ');
  if (space <= 0 || message.slice(0, space) === ownOrigin) return null;
  const kind = message.charAt(space + 1);
  const rest = message.slice(space + 3);
  if (kind === 'p' && message.charAt(space + 2) === '\n') {
    const pins: [string, string][] = [];
    for (const line of message.slice(space + 3).split('\n')) {
      const gap = line.indexOf(' ');
      const backendId = line.slice(0, gap);
      const key = line.slice(gap + 1);
      if (gap > 0 && BACKEND_ID.test(backendId) && key.length > 0 && key.length <= MAX_CLIENT_KEY) pins.push([key, backendId]);
    }
    return { kind: 'pins', pins };
  }
  if (message.charAt(space + 2) !== ' ') return null;
  if (kind === 'f') return BACKEND_ID.test(rest) ? { kind: 'forgotten', id: rest } : null;
  if (kind !== 'd') return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(rest);
  } catch {
    return null;
  }
  const id = (parsed as { id?: unknown } | null)?.id;
  if (typeof id !== 'string') return null;
  const drain = decodeDrain(id, rest);
  return drain === null ? null : { kind: 'drain', drain };
}
