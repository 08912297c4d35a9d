// What affinity.rebalance costs on the request path, for bench/elastic.ts: CPU per request of limpet
// with rebalance off and on in the same run, measured as bench/compare.ts measures it (each limpet
// alone on CPU 0 while wrk and the backends share CPU 1, CPU time from /proc, interleaved rounds),
// and the cost of one placement in isolation, where end-to-end noise cannot reach.
//
// Environment: ELASTIC_ROUNDS (default 9), ELASTIC_SECONDS per run (default 3).
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  intFromEnv, isDisturbed, isSkipped, limpetTarget, measure, median, round, SERVER_CPU, startBackends, type Backends, type RunResult, type Target,
} from './harness.js';
import { chooseLoadTool } from './load.js';
import { placementNs } from './elastic-simulation.js';
import { cookiePair, request } from '../test/support/client.js';

const ROUNDS = intFromEnv('ELASTIC_ROUNDS', 9);
const SECONDS = intFromEnv('ELASTIC_SECONDS', 3);
const CONNECTIONS = 50;
const REBALANCE = 'rebalance: { idleAfter: 30m }';

type Mode = 'ip' | 'cookie';

export interface HotPathRow {
  mode: Mode;
  /** Median CPU µs per request over the rounds, rebalance off and on. */
  offUs: number;
  onUs: number;
  /** on ÷ off CPU per request of each round (the two runs of a round are back to back). */
  roundRatios: number[];
  disturbedRuns: number;
  requestsPerSecOff: number;
  requestsPerSecOn: number;
  /** Nanoseconds per placement of 1,000 returning clients, in-process, off and on (medians of 15), and the median of the on − off differences of back-to-back pairs. */
  placementOffNs: number;
  placementOnNs: number;
  placementAddedNs: number;
}

export interface HotPathFigures {
  rounds: number;
  seconds: number;
  connections: number;
  tool: string;
  rows: HotPathRow[];
}

function affinityLine(mode: Mode, rebalance: boolean): string {
  const by = mode === 'ip' ? 'by: ip' : 'by: cookie, cookie: { secret: elastic-hot-path }';
  return `affinity: { ${by}${rebalance ? `, ${REBALANCE}` : ''} }`;
}

async function startLimpet(backends: Backends, tmp: string, mode: Mode, rebalance: boolean): Promise<Target> {
  const name = `${mode}-rebalance-${rebalance ? 'on' : 'off'}`;
  const target = await limpetTarget(backends, tmp, { name, description: name, nodeArgs: [], extraYaml: [], affinity: affinityLine(mode, rebalance), cpus: SERVER_CPU });
  if (isSkipped(target)) throw new Error(`${name} did not start: ${target.reason}`);
  return target;
}

/** The request headers every wrk request carries: in cookie mode, a valid cookie of that proxy, so every request is a returning client. */
async function headersFor(target: Target, mode: Mode): Promise<Record<string, string>> {
  if (mode === 'ip') return {};
  const res = await request(Number(new URL(target.origin).port), { path: '/' });
  const cookie = cookiePair(res.headers);
  if (cookie === undefined) throw new Error(`${target.name} set no cookie`);
  return { cookie };
}

/** Placement cost off and on, measured in back-to-back pairs (order alternating) so drift hits both alike. */
async function placementMedians(mode: Mode): Promise<{ off: number; on: number; added: number }> {
  const off: number[] = [];
  const on: number[] = [];
  for (let i = 0; i < 15; i++) {
    if (i % 2 === 0) {
      off.push(await placementNs(mode, false));
      on.push(await placementNs(mode, true));
    } else {
      on.push(await placementNs(mode, true));
      off.push(await placementNs(mode, false));
    }
  }
  return { off: round(median(off), 0), on: round(median(on), 0), added: round(median(on.map((ns, i) => ns - (off[i] as number))), 0) };
}

export async function hotPath(): Promise<HotPathFigures> {
  const tool = chooseLoadTool();
  const backends = await startBackends(3);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-elastic-hot-'));
  const rows: HotPathRow[] = [];
  try {
    for (const mode of ['ip', 'cookie'] as const) {
      const off = await startLimpet(backends, tmp, mode, false);
      const on = await startLimpet(backends, tmp, mode, true);
      const headers = new Map<Target, Record<string, string>>();
      for (const target of [off, on]) headers.set(target, await headersFor(target, mode));
      const context = { ourPids: [backends.pid, off.serverPid, on.serverPid] };
      const run = (target: Target, seconds: number) => measure(target, { tool, connections: CONNECTIONS, seconds, path: '/', headers: headers.get(target) ?? {} }, context);
      await run(off, 1);
      await run(on, 1);
      const results = { off: [] as RunResult[], on: [] as RunResult[] };
      for (let r = 0; r < ROUNDS; r++) {
        const order = r % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const);
        for (const which of order) {
          const result = await run(which === 'off' ? off : on, SECONDS);
          results[which].push(result);
          process.stdout.write(`  ${mode} rebalance ${which}: ${Math.round(result.requestsPerSec)} req/s, ${result.cpuUsPerRequest ?? '?'} µs CPU/req${isDisturbed(result) ? ' (disturbed)' : ''}\n`);
        }
      }
      for (const target of [off, on]) process.kill(target.serverPid, 'SIGTERM');
      const cpu = (runs: RunResult[]) => median(runs.map((r) => r.cpuUsPerRequest ?? NaN));
      const placement = await placementMedians(mode);
      rows.push({
        mode,
        offUs: round(cpu(results.off), 2),
        onUs: round(cpu(results.on), 2),
        roundRatios: results.on.map((r, i) => round((r.cpuUsPerRequest ?? NaN) / (results.off[i]?.cpuUsPerRequest ?? NaN), 3)),
        disturbedRuns: [...results.off, ...results.on].filter(isDisturbed).length,
        requestsPerSecOff: Math.round(median(results.off.map((r) => r.requestsPerSec))),
        requestsPerSecOn: Math.round(median(results.on.map((r) => r.requestsPerSec))),
        placementOffNs: placement.off,
        placementOnNs: placement.on,
        placementAddedNs: placement.added,
      });
    }
  } finally {
    process.kill(backends.pid, 'SIGTERM');
    rmSync(tmp, { recursive: true, force: true });
  }
  return { rounds: ROUNDS, seconds: SECONDS, connections: CONNECTIONS, tool, rows };
}
