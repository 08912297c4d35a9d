/**
 * The part durations and sizes share: a plain non-negative integer is taken as is (it counts the
 * base unit), a string goes on to the caller's grammar, and anything else is an Error whose message
 * starts with `expected`, ready to show to the person editing the file.
 */
export function integerOrText(value: unknown, expected: string): number | string {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value >= 0) return value;
    throw new Error(`${expected}, got ${value}`);
  }
  if (typeof value === 'string') return value;
  const got = value === null || value === undefined ? 'nothing' : typeof value === 'object' ? 'a map or list' : String(value);
  throw new Error(`${expected}, got ${got}`);
}
