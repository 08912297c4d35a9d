import { integerOrText } from './units.js';

/** One or more `<number><unit>` parts, e.g. `250ms`, `1.5s`, `1m30s`. Shared with the JSON schema. */
export const DURATION_PATTERN = '^(?:\\d+(?:\\.\\d+)?(?:ms|s|m|h))+$';

const DURATION = new RegExp(DURATION_PATTERN);
const PART = /(\d+)(?:\.(\d+))?(ms|s|m|h)/g;
const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

const EXPECTED = 'expected a duration like "250ms", "2s", "5m" or integer milliseconds';

/**
 * A config duration in milliseconds: a string with units (`250ms`, `2s`, `1m30s`, `1.5h`) or a
 * non-negative integer, which counts milliseconds. Throws an Error whose message says what was
 * expected, ready to show to the person editing the file.
 */
export function parseDuration(input: unknown): number {
  const value = integerOrText(input, EXPECTED);
  if (typeof value === 'number') return value;
  if (!DURATION.test(value)) {
    // A quoted bare number is the likeliest slip; say how to write what was probably meant.
    const hint = /^\d+$/.test(value) ? ` (add a unit, e.g. "${value}ms")` : '';
    throw new Error(`${EXPECTED}, got ${JSON.stringify(value)}${hint}`);
  }
  let ms = 0;
  for (const [, whole, fraction, unit] of value.matchAll(PART)) {
    const size = UNIT_MS[unit as string] as number;
    // Whole and fraction apart: as one float, "1249773964.9h" lands half a millisecond off and rounds wrong.
    ms += Number(whole) * size + (fraction === undefined ? 0 : Number(`0.${fraction}`) * size);
  }
  // Timers have millisecond resolution, so fractions like "1.0005s" round to whole milliseconds.
  const rounded = Math.round(ms);
  if (!Number.isSafeInteger(rounded)) throw new Error(`duration ${JSON.stringify(value)} is too large`);
  return rounded;
}

/** Milliseconds the way a person writes them in the config: `1500` → `"1.5s"`, `90000` → `"90s"`. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1_000]] as const) {
    if (ms >= size && ms % (size / 10) === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

/** What a bare number on a key measured in seconds probably meant; `ms` is the number as written. */
export function bareNumberHint(ms: number): string {
  return `a bare number counts milliseconds, so ${ms} is ${ms}ms: write "${ms}s" for seconds`;
}
