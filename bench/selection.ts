import { pathToFileURL } from 'node:url';
import { hashKey } from '../src/selection/hash.js';
import { buildMaglevTable } from '../src/selection/maglev.js';
import { bestRendezvous, rendezvousSet } from '../src/selection/rendezvous.js';
import { Selector } from '../src/selection/selector.js';

/** One measured case: operations (lookups, or table builds) per second and nanoseconds per operation. */
export interface Row {
  readonly name: string;
  readonly backends: number;
  readonly opsPerSec: number;
  readonly nsPerOp: number;
}

const KEY_COUNT = 1 << 14;
const ROUND_NS = 100_000_000n;
const ROUNDS = 5;
const BACKEND_COUNTS = [3, 10, 100] as const;

/** Deterministic client keys: a mix of IPv4 and IPv6 addresses, like ip-mode affinity sees. */
function clientKeys(count: number): string[] {
  let state = 0x2545f491;
  const next = (): number => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return state >>> 0;
  };
  const keys: string[] = [];
  for (let i = 0; i < count; i++) {
    const r = next();
    if (i % 4 === 3) {
      keys.push(`2001:db8:${(r >>> 16).toString(16)}:${(r & 0xffff).toString(16)}::${(next() & 0xffff).toString(16)}`);
    } else {
      keys.push(`${r >>> 24}.${(r >>> 16) & 255}.${(r >>> 8) & 255}.${r & 255}`);
    }
  }
  return keys;
}

function backendsOf(count: number, weightOf: (index: number) => number): { id: string; weight: number }[] {
  return Array.from({ length: count }, (_, i) => ({ id: `app-${i + 1}`, weight: weightOf(i) }));
}

/**
 * Runs `batch` (which performs `opsPerBatch` operations and returns a checksum) after a warm-up, in
 * ROUNDS rounds of at least ROUND_NS each, and keeps the fastest round: on a shared machine the
 * slower rounds measure the neighbours, not the code. The checksum keeps the work from being
 * optimised away.
 */
function measure(name: string, backends: number, opsPerBatch: number, batch: () => number): Row {
  let checksum = 0;
  const warmUntil = process.hrtime.bigint() + ROUND_NS;
  while (process.hrtime.bigint() < warmUntil) checksum = (checksum + batch()) | 0;
  let bestNsPerOp = Infinity;
  for (let round = 0; round < ROUNDS; round++) {
    let ops = 0;
    const start = process.hrtime.bigint();
    let elapsed = 0n;
    while (elapsed < ROUND_NS) {
      checksum = (checksum + batch()) | 0;
      ops += opsPerBatch;
      elapsed = process.hrtime.bigint() - start;
    }
    bestNsPerOp = Math.min(bestNsPerOp, Number(elapsed) / ops);
  }
  sink ^= checksum;
  return { name, backends, opsPerSec: 1e9 / bestNsPerOp, nsPerOp: bestNsPerOp };
}

let sink = 0;

/** Measures lookups (Maglev path and pure rendezvous for comparison) and table builds. */
export function runSelectionBench(): Row[] {
  const keys = clientKeys(KEY_COUNT);
  const rows: Row[] = [];
  for (const count of BACKEND_COUNTS) {
    const backends = backendsOf(count, () => 1);
    const usable = new Uint8Array(count).fill(1);
    const selector = new Selector(backends);
    rows.push(
      measure('hashKey + Selector.pick', count, KEY_COUNT, () => {
        let sum = 0;
        for (let i = 0; i < KEY_COUNT; i++) sum += selector.pick(hashKey(keys[i] as string), usable);
        return sum;
      }),
    );
    // Equal weights let rendezvous rank by the raw draw; unequal weights need a logarithm per backend.
    for (const [label, weightOf] of [
      ['equal', () => 1],
      ['weighted', (index: number) => (index % 4) + 1],
    ] as const) {
      const rendezvous = rendezvousSet(backendsOf(count, weightOf));
      rows.push(
        measure(`hashKey + pure rendezvous (${label})`, count, KEY_COUNT, () => {
          let sum = 0;
          for (let i = 0; i < KEY_COUNT; i++) sum += bestRendezvous(rendezvous, hashKey(keys[i] as string), usable, -1, -1);
          return sum;
        }),
      );
    }
    rows.push(measure('buildMaglevTable', count, 1, () => buildMaglevTable(backends)[0] as number));
  }
  return rows;
}

function formatRows(rows: readonly Row[]): string {
  const header = ['case', 'backends', 'ops/s', 'ns/op'];
  const cells = rows.map((row) => [
    row.name,
    String(row.backends),
    row.opsPerSec >= 1e6 ? `${(row.opsPerSec / 1e6).toFixed(2)} M` : row.opsPerSec.toFixed(0),
    row.nsPerOp >= 1e5 ? `${(row.nsPerOp / 1e6).toFixed(2)} ms` : row.nsPerOp.toFixed(1),
  ]);
  const widths = header.map((title, column) => Math.max(title.length, ...cells.map((line) => (line[column] as string).length)));
  const render = (line: readonly string[]): string =>
    line.map((cell, column) => (column === 0 ? cell.padEnd(widths[column] as number) : cell.padStart(widths[column] as number))).join('  ');
  return [render(header), render(widths.map((width) => '-'.repeat(width))), ...cells.map(render)].join('\n');
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(formatRows(runSelectionBench()));
  if (sink === 0x7fffffff) console.log('');
}
