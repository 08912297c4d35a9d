// Worker scaling: req/s of limpet with 1 and with 2 workers when every worker has the same CPU
// budget, so that the machine's core count is not what is measured.
//
//   npm run bench:scaling            (root, or write access to the cgroup cpu controller)
//
// On a 2-core machine `workers: 2` shares its cores with the load generator and the backends, so
// "1 worker vs 2" there measures the machine. Here each worker process gets its own cgroup with a
// CPU quota (BENCH_WORKER_CPU of one core, default 0.35), like a dedicated slower core, and the
// rest of the machine is left to wrk and the backends. Linear scaling is 2 workers doing 2× the
// req/s of 1; the figure reported is req/s(2) ÷ (2 × req/s(1)). The quota's throttle counts are
// read back to show that the budget, not the load generator, was the limit.
//
// Environment: BENCH_ROUNDS (default 5), BENCH_DURATION seconds per run (default 5),
// BENCH_WORKER_CPU (default 0.35).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  cpuSeconds, describeMachine, descendantPids, intFromEnv, isSkipped, limpetTarget, machine, median, round, startBackends, stopChildren,
  writeResult, type Target,
} from './harness.js';
import { chooseLoadTool, runLoad, type LoadResult } from './load.js';

const ROUNDS = intFromEnv('BENCH_ROUNDS', 5);
const SECONDS = intFromEnv('BENCH_DURATION', 5);
const WORKER_CPU = Number(process.env.BENCH_WORKER_CPU ?? '0.35');
const PERIOD_US = 100_000;
const CONNECTIONS = 50;

/** A cgroup holding processes to a CPU quota: v1's cpu controller, or v2's cpu.max. */
interface CpuBudget {
  add(pid: number): void;
  /** Periods in which the group ran out of quota, and all periods, since it was made. */
  throttled(): { periods: number; throttled: number };
  remove(): void;
}

function cpuBudget(name: string, cores: number): CpuBudget | string {
  const quota = Math.round(cores * PERIOD_US);
  const v1 = '/sys/fs/cgroup/cpu';
  const v2 = '/sys/fs/cgroup';
  let dir: string;
  let root: string;
  try {
    if (existsSync(path.join(v1, 'cpu.cfs_quota_us'))) {
      root = v1;
      dir = path.join(v1, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, 'cpu.cfs_period_us'), String(PERIOD_US));
      writeFileSync(path.join(dir, 'cpu.cfs_quota_us'), String(quota));
    } else if (readFileSync(path.join(v2, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('cpu')) {
      root = v2;
      writeFileSync(path.join(v2, 'cgroup.subtree_control'), '+cpu');
      dir = path.join(v2, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, 'cpu.max'), `${quota} ${PERIOD_US}`);
    } else {
      return 'no cgroup cpu controller (v1 /sys/fs/cgroup/cpu or v2 with "cpu" in cgroup.controllers)';
    }
  } catch (error) {
    return `cannot set a CPU quota: ${(error as Error).message} (run as root)`;
  }
  const stat = () => Object.fromEntries(
    readFileSync(path.join(dir, 'cpu.stat'), 'utf8').trim().split('\n').map((line) => line.split(' ') as [string, string]),
  );
  return {
    add: (pid) => writeFileSync(path.join(dir, 'cgroup.procs'), String(pid)),
    throttled: () => {
      const s = stat();
      return { periods: Number(s.nr_periods), throttled: Number(s.nr_throttled) };
    },
    remove: () => {
      for (const pid of readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean)) {
        try {
          writeFileSync(path.join(root, 'cgroup.procs'), pid);
        } catch {
          // exited meanwhile
        }
      }
      rmdirSync(dir);
    },
  };
}

interface Variant {
  workers: number;
  target: Target;
  workerPids: number[];
  budgets: CpuBudget[];
  /** `workerCpuSeconds`: CPU each worker used during the run, to show how the load was split. */
  runs: { load: LoadResult; throttledShare: number; workerCpuSeconds: number[] }[];
}

async function main(): Promise<void> {
  const tool = chooseLoadTool();
  const probe = cpuBudget(`limpet-bench-probe-${process.pid}`, WORKER_CPU);
  if (typeof probe === 'string') {
    console.log(`scaling: skipped — ${probe}`);
    process.exitCode = 2;
    return;
  }
  probe.remove();
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-scaling-'));
  const variants: Variant[] = [];
  try {
    const backends = await startBackends(3, ['--raw']);
    for (const workers of [1, 2]) {
      const started = await limpetTarget(backends, tmp, {
        name: `limpet-${workers}w`,
        description: `limpet, workers: ${workers}, each worker held to ${WORKER_CPU} of a core`,
        nodeArgs: [],
        extraYaml: [`workers: ${workers}`],
        cpus: undefined,
      });
      if (isSkipped(started)) throw new Error(`${started.name}: ${started.reason}`);
      const workerPids = workers === 1 ? [started.serverPid] : descendantPids(started.serverPid);
      if (workerPids.length !== workers) throw new Error(`${started.name}: found ${workerPids.length} worker processes`);
      const budgets = workerPids.map((pid, i) => {
        const budget = cpuBudget(`limpet-bench-${process.pid}-${workers}w-${i}`, WORKER_CPU);
        if (typeof budget === 'string') throw new Error(budget);
        budget.add(pid);
        return budget;
      });
      variants.push({ workers, target: started, workerPids, budgets, runs: [] });
    }
    const url = (v: Variant) => `${v.target.origin}/`;
    for (const v of variants) await runLoad({ tool, url: url(v), connections: CONNECTIONS, seconds: 1, cpus: undefined });
    for (let r = 1; r <= ROUNDS; r++) {
      for (const v of r % 2 === 1 ? variants : [...variants].reverse()) {
        const before = v.budgets.map((b) => b.throttled());
        const cpuBefore = v.workerPids.map((pid) => cpuSeconds(pid) ?? 0);
        const load = await runLoad({ tool, url: url(v), connections: CONNECTIONS, seconds: SECONDS, cpus: undefined });
        const after = v.budgets.map((b) => b.throttled());
        const workerCpuSeconds = v.workerPids.map((pid, i) => round((cpuSeconds(pid) ?? 0) - cpuBefore[i]!, 2));
        const periods = after.reduce((sum, a, i) => sum + a.periods - before[i]!.periods, 0);
        const throttled = after.reduce((sum, a, i) => sum + a.throttled - before[i]!.throttled, 0);
        const throttledShare = periods === 0 ? 0 : throttled / periods;
        v.runs.push({ load, throttledShare, workerCpuSeconds });
        console.log(
          `  round ${r}  ${v.target.name.padEnd(10)} ${Math.round(load.requestsPerSec).toLocaleString('en-US').padStart(8)} req/s   ` +
          `throttled in ${Math.round(throttledShare * 100)} % of quota periods   worker CPU ${workerCpuSeconds.map((c) => `${c} s`).join(' + ')}   ` +
          `errors ${load.errors} / ${load.non2xx}`,
        );
      }
    }
  } finally {
    stopChildren();
    await new Promise((resolve) => setTimeout(resolve, 500));
    for (const v of variants) for (const budget of v.budgets) {
      try {
        budget.remove();
      } catch {
        // a worker still exiting keeps the group busy a moment; the kernel frees it with the last pid
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  }

  const rps = (v: Variant) => median(v.runs.map((run) => run.load.requestsPerSec));
  const [one, two] = variants as [Variant, Variant];
  const efficiency = rps(two) / (2 * rps(one));
  const minThrottled = Math.min(...variants.flatMap((v) => v.runs.map((run) => run.throttledShare)));
  // A worker that is out of quota while wrk opens its connections acknowledges no hand-off from the
  // round-robin primary, so the other worker can take them all: such a round measures one worker.
  const lopsided = two.runs.filter((run) => Math.min(...run.workerCpuSeconds) < 0.25 * Math.max(...run.workerCpuSeconds)).length;
  const lines = [
    `# limpet worker scaling — ${new Date().toISOString()}`,
    '',
    `${describeMachine()}, ${machine().platform}. Each limpet worker in its own cgroup held to ${WORKER_CPU} of a core (quota ${Math.round(WORKER_CPU * PERIOD_US)} µs per ${PERIOD_US} µs); ` +
      `backends (bench/backend.ts --raw) and ${tool} unconstrained; keep-alive, "ok" responses, ${CONNECTIONS} connections; median of ${ROUNDS} interleaved rounds of ${SECONDS} s.`,
    '',
    '| workers | req/s | per worker | rounds |',
    '|---:|---:|---:|---|',
    ...variants.map((v) =>
      `| ${v.workers} | ${Math.round(rps(v)).toLocaleString('en-US')} | ${Math.round(rps(v) / v.workers).toLocaleString('en-US')} | ` +
      `${v.runs.map((run) => Math.round(run.load.requestsPerSec).toLocaleString('en-US')).join(', ')} |`),
    '',
    `Scaling per added worker: req/s(2) ÷ (2 × req/s(1)) = **${round(efficiency, 2)}** (target ≥ 0.8). ` +
      `Every run was throttled in at least ${Math.round(minThrottled * 100)} % of its quota periods, so the budget was the limit` +
      (minThrottled < 0.5 ? ' — (!) in under half of them: the load generator or backends may have been the limit instead.' : '.'),
    ...(lopsided === 0 ? [] : [
      '',
      `In ${lopsided} of ${ROUNDS} rounds one of the two workers served (nearly) every connection: it was the only one not out of ` +
        "quota when wrk connected, and node:cluster's round-robin primary hands a connection only to a worker that has taken the previous one. " +
        'The median is taken over all rounds.',
    ]),
  ];
  console.log(`\n${lines.join('\n')}`);
  console.log(`\nwritten: ${writeResult('scaling-latest.md', `${lines.join('\n')}\n`)}`);
  writeResult('scaling-latest.json', JSON.stringify({
    date: new Date().toISOString(),
    machine: machine(),
    tool,
    workerCpu: WORKER_CPU,
    connections: CONNECTIONS,
    seconds: SECONDS,
    variants: variants.map((v) => ({ workers: v.workers, requestsPerSec: rps(v), runs: v.runs })),
    efficiency,
    lopsidedRounds: lopsided,
  }, null, 2));
}

await main();
