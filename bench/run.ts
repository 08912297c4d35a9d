// End-to-end benchmark: the same keep-alive load against the backend directly, limpet, a hand-written
// http-proxy sticky proxy and a bare undici pass-through, interleaved round by round.
// `npm run bench`; see bench/README.md for the method and how to read the numbers.
//
// Environment: BENCH_ROUNDS (default 3), BENCH_DURATION seconds per run (default 5),
// BENCH_CONNECTIONS (default 50), BENCH_TOOL (wrk | autocannon; default wrk when on PATH).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  baselineTarget, benchDir, describeRun, directTarget, divide, fmtCpu, fmtCpuPerReq, fmtMs, fmtRate, fmtRatio,
  intFromEnv, isSkipped, isTarget, limpetTarget, describeMachine, machine as readMachine, measure, memoryMb, otherLoadAtStart,
  PIN, pinningDescription, repoRoot, SERVER_CPU, startBackends, stopChildren, summarise, writeResult,
  type Backends, type LimpetVariant, type RunResult, type Skipped, type Summary, type Target,
} from './harness.js';
import { chooseLoadTool, type LoadTool } from './load.js';

const ROUNDS = intFromEnv('BENCH_ROUNDS', 3);
const SECONDS = intFromEnv('BENCH_DURATION', 5);
const CONNECTIONS = intFromEnv('BENCH_CONNECTIONS', 50);
const WARMUP_SECONDS = 1;
const BACKEND_COUNT = 3;

// ---------------------------------------------------------------------------------------------
// Targets

const DESCRIPTIONS = {
  direct: 'the backend itself, no proxy',
  limpet: 'limpet (dist/src/cli.js), affinity by ip, 3 backends, health checks every 2 s',
  'limpet metrics off': 'the same limpet with per-request metrics recording replaced by a no-op (bench/metrics-off.ts preload)',
  'limpet 2 workers': 'the same limpet with workers: 2, allowed both cores (the load generator and backends share CPU 1)',
  'http-proxy': 'http-proxy + keep-alive agent, ip-hash stickiness, 502 on error',
  undici: 'node:http server + undici.Pool.stream to one backend, nothing else',
} as const;

const LIMPET_VARIANTS: LimpetVariant[] = [
  { name: 'limpet', description: DESCRIPTIONS.limpet, nodeArgs: [], extraYaml: [], cpus: SERVER_CPU },
  {
    name: 'limpet metrics off',
    description: DESCRIPTIONS['limpet metrics off'],
    nodeArgs: ['--import', pathToFileURL(path.join(benchDir, 'metrics-off.js')).href],
    extraYaml: [],
    cpus: SERVER_CPU,
  },
  { name: 'limpet 2 workers', description: DESCRIPTIONS['limpet 2 workers'], nodeArgs: [], extraYaml: ['workers: 2'], cpus: PIN ? '0,1' : undefined },
];

// ---------------------------------------------------------------------------------------------
// Selection microbenchmark (bench/selection.ts, when present)

async function runSelection(): Promise<unknown> {
  const file = path.join(benchDir, 'selection.js');
  if (!existsSync(file)) {
    console.log(`selection microbenchmark: skipped (${path.relative(repoRoot, file)} not built)\n`);
    return { skipped: 'not built' };
  }
  let module: { runSelectionBench?: unknown };
  try {
    module = (await import(new URL('./selection.js', import.meta.url).href)) as { runSelectionBench?: unknown };
  } catch (error) {
    console.log(`selection microbenchmark: skipped (import failed: ${(error as Error).message})\n`);
    return { skipped: `import failed: ${(error as Error).message}` };
  }
  if (typeof module.runSelectionBench !== 'function') {
    console.log('selection microbenchmark: skipped (dist/bench/selection.js exports no runSelectionBench)\n');
    return { skipped: 'no runSelectionBench export' };
  }
  console.log('selection microbenchmark:');
  try {
    const result: unknown = await (module.runSelectionBench as () => unknown)();
    const table = rowsTable(result);
    if (table !== undefined) console.log(table);
    console.log('');
    return result ?? null;
  } catch (error) {
    console.log(`selection microbenchmark: failed (${(error as Error).message}); continuing\n`);
    return { failed: (error as Error).message };
  }
}

// ---------------------------------------------------------------------------------------------
// Reporting

/** A Markdown table for an array of flat records (the selection bench's rows), else undefined. */
function rowsTable(value: unknown): string | undefined {
  if (!Array.isArray(value) || value.length === 0) return undefined;
  const rows = value.filter((row): row is Record<string, unknown> => typeof row === 'object' && row !== null);
  if (rows.length !== value.length) return undefined;
  const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const cell = (v: unknown) =>
    typeof v === 'number' ? (Number.isInteger(v) || Math.abs(v) >= 1000 ? fmtRate(v) : v.toFixed(1)) : String(v ?? '');
  return [
    `| ${columns.join(' | ')} |`,
    `|${columns.map(() => '---').join('|')}|`,
    ...rows.map((row) => `| ${columns.map((c) => cell(row[c])).join(' | ')} |`),
  ].join('\n');
}

/** a / b for each metric; null where b is unknown or zero (autocannon reports whole milliseconds). */
interface Ratio {
  label: string;
  requestsPerSec: number | null;
  p50: number | null;
  p99: number | null;
  cpuPerRequest: number | null;
}

function ratio(label: string, a: Summary | undefined, b: Summary | undefined): Ratio | undefined {
  if (a === undefined || b === undefined) return undefined;
  return {
    label,
    requestsPerSec: divide(a.requestsPerSec, b.requestsPerSec),
    p50: divide(a.p50Ms, b.p50Ms),
    p99: divide(a.p99Ms, b.p99Ms),
    cpuPerRequest: divide(a.cpuUsPerRequest, b.cpuUsPerRequest),
  };
}

// ---------------------------------------------------------------------------------------------

function loadCommand(tool: LoadTool): string {
  return tool === 'wrk'
    ? `wrk -t1 -c${CONNECTIONS} -d${SECONDS}s --latency`
    : `autocannon (programmatic, child process) connections=${CONNECTIONS} duration=${SECONDS}s`;
}

async function main(): Promise<void> {
  const started = Date.now();
  const tool = chooseLoadTool();
  const date = new Date().toISOString();
  const machine = readMachine();
  const pinning = pinningDescription();
  console.log(`limpet end-to-end benchmark — ${date}`);
  console.log(`machine: ${describeMachine(machine)}`);
  console.log(`load: ${tool} — ${loadCommand(tool)}; ${WARMUP_SECONDS} s warm-up per target; ${ROUNDS} interleaved rounds, median reported`);
  console.log(`pinning: ${pinning}`);
  const otherLoad = await otherLoadAtStart();

  const selection = await runSelection();

  const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-bench-'));
  try {
    const backends: Backends = await startBackends(BACKEND_COUNT);
    const prepared: (Target | Skipped)[] = await Promise.all([
      Promise.resolve(directTarget(backends, DESCRIPTIONS.direct)),
      ...LIMPET_VARIANTS.map((variant) => limpetTarget(backends, tmp, variant)),
      baselineTarget('http-proxy', DESCRIPTIONS['http-proxy'], 'http-proxy-sticky.js', backends, SERVER_CPU),
      baselineTarget('undici', DESCRIPTIONS.undici, 'undici-passthrough.js', backends, SERVER_CPU),
    ]);
    const targets = prepared.filter(isTarget);
    const ourPids = [backends.pid, ...targets.flatMap((t) => (t.proxyPid === undefined ? [] : [t.proxyPid]))];
    const skipped = prepared.filter(isSkipped);
    for (const s of skipped) console.log(`skipped: ${s.name} — ${s.reason}\n`);

    const run = (target: Target, seconds: number): Promise<RunResult> =>
      measure(target, { tool, path: '/', connections: CONNECTIONS, seconds }, { ourPids });

    console.log('warm-up');
    for (const target of targets) console.log(describeRun(target.name, await run(target, WARMUP_SECONDS)));

    const runs = new Map<string, RunResult[]>(targets.map((t) => [t.name, []]));
    for (let r = 1; r <= ROUNDS; r++) {
      console.log(`round ${r}/${ROUNDS}`);
      // Every target once per round; the starting target rotates so none is always first or last.
      const order = targets.map((_, i) => targets[(i + r - 1) % targets.length]!);
      for (const target of order) {
        const result = await run(target, SECONDS);
        runs.get(target.name)!.push(result);
        console.log(describeRun(target.name, result));
      }
    }

    const memory = new Map(targets.map((t) => [t.name, t.proxyPid === undefined ? undefined : memoryMb(t.proxyPid)]));
    const medians = new Map(targets.map((t) => [t.name, summarise(runs.get(t.name)!)]));
    const ratios = [
      ratio('limpet / http-proxy', medians.get('limpet'), medians.get('http-proxy')),
      ratio('limpet / direct', medians.get('limpet'), medians.get('direct')),
      ratio('limpet / undici pass-through', medians.get('limpet'), medians.get('undici')),
      ratio('http-proxy / undici pass-through', medians.get('http-proxy'), medians.get('undici')),
      ratio('limpet / limpet metrics off', medians.get('limpet'), medians.get('limpet metrics off')),
      ratio('limpet 2 workers / limpet', medians.get('limpet 2 workers'), medians.get('limpet')),
    ].filter((r): r is Ratio => r !== undefined);

    const table = [
      `Median of ${ROUNDS} interleaved rounds; ${loadCommand(tool)}; ${describeMachine(machine)}; ${date.slice(0, 10)}.`,
      '',
      '| target | req/s | p50 | p99 | server CPU per run | CPU per request | RSS after run | errors / non-2xx | disturbed rounds |',
      '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
      ...prepared.map((t) => {
        const m = medians.get(t.name);
        if (m === undefined) return `| ${t.name} | skipped | | | | | | | |`;
        const mem = memory.get(t.name);
        const rss = mem === undefined ? '—' : `${mem.rssMb} MB`;
        return `| ${t.name} | ${fmtRate(m.requestsPerSec)} | ${fmtMs(m.p50Ms)} | ${fmtMs(m.p99Ms)} | ${fmtCpu(m.serverCpuSeconds)} | ${fmtCpuPerReq(m.cpuUsPerRequest)} | ${rss} | ${m.errors} / ${m.non2xx} | ${m.disturbedRounds} / ${ROUNDS} |`;
      }),
    ];
    if (ratios.length > 0) {
      table.push('', '| ratio | req/s | p50 | p99 | CPU per request |', '|---|---:|---:|---:|---:|');
      for (const r of ratios) {
        table.push(`| ${r.label} | ${fmtRatio(r.requestsPerSec)} | ${fmtRatio(r.p50)} | ${fmtRatio(r.p99)} | ${fmtRatio(r.cpuPerRequest)} |`);
      }
    }
    console.log(`\nResults (Markdown)\n\n${table.join('\n')}\n`);
    for (const t of targets) {
      const mem = memory.get(t.name);
      if (mem !== undefined) console.log(`${t.name} memory after run: RSS ${mem.rssMb} MB, peak ${mem.peakRssMb} MB`);
    }

    const results = {
      date,
      node: machine.node,
      cpu: machine.cpu,
      cores: machine.cores,
      platform: machine.platform,
      loadTool: tool,
      loadCommand: loadCommand(tool),
      connections: CONNECTIONS,
      durationSeconds: SECONDS,
      warmupSeconds: WARMUP_SECONDS,
      rounds: ROUNDS,
      pinning,
      targets: Object.fromEntries([
        ...targets.map((t) => [t.name, {
          description: t.description,
          median: medians.get(t.name),
          memory: memory.get(t.name) ?? null,
          rounds: runs.get(t.name),
        }]),
        ...skipped.map((s) => [s.name, { description: s.description, skipped: s.reason }]),
      ]),
      ratios,
      otherLoadAtStart: otherLoad,
      selection,
      wallSeconds: Math.round((Date.now() - started) / 1000),
    };
    const out = writeResult('latest.json', `${JSON.stringify(results, null, 2)}\n`);
    console.log(`\nwrote ${out} (${results.wallSeconds} s)`);
  } finally {
    stopChildren();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
