// Instructions per request of limpet's HTTP/1.1 hot path, counted by valgrind's callgrind: a figure
// a busy or virtual machine cannot blur, where CPU time per request wanders with the neighbours and
// `perf stat` has no hardware counters (bench:compare then prints "—" for instructions).
//
//   node dist/bench/instructions.js [requests]     (default 4000; about 3 minutes per build)
//
// limpet (this build, and BENCH_LIMPET_BASELINE=<other build>/dist/src/cli.js beside it) runs under
// `valgrind --tool=callgrind` with instrumentation off, takes BENCH_WARMUP requests (default 30,000)
// of keep-alive load so V8 has optimised the request path (a count, not a time: the same for every
// build however fast the machine is at the moment), then is counted over exactly `requests`
// requests (h2load --h1 -c10 -n, GET /, 3-byte answers from bench/backend.ts --raw). Two figures:
// the main thread's instructions (the event loop: the request path, and the garbage collection it
// causes), and every thread's (V8's background compiler and GC helpers too), which is steadier over
// many requests than over a few thousand, as a late optimisation may land in the counted window.
// BENCH_ROUNDS (default 4) repeats it, alternating builds; medians are reported. Needs valgrind and
// h2load (Debian: valgrind, nghttp2-client).
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { capture } from './load.js';
import { distRoot, findExecutable, freePort, intFromEnv, median, startBackends, stopChildren, waitUntilServing, type Backends } from './harness.js';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';

const REQUESTS = Number(process.argv[2] ?? 4000);
const WARMUP_REQUESTS = intFromEnv('BENCH_WARMUP', 30_000);
const ROUNDS = intFromEnv('BENCH_ROUNDS', 4);

interface Count {
  /** Instructions per request on the main thread. */
  main: number;
  /** Instructions per request on all threads. */
  all: number;
}

/** Instructions callgrind counted over `REQUESTS` requests through the limpet at `cli`. */
async function count(cli: string, backends: Backends, tmp: string): Promise<Count> {
  const port = await freePort();
  const config = path.join(tmp, `limpet-${port}.yaml`);
  writeFileSync(
    config,
    `listen: 127.0.0.1:${port}\nadmin: { listen: "127.0.0.1:0" }\nlog: { level: warn }\naffinity: { by: ip }\nhealthCheck: { interval: 1h }\n` +
      `backends: [{ id: b1, url: "${backends.origins[0]}" }]\n`,
  );
  const out = path.join(tmp, `callgrind-${port}`);
  const valgrind = spawn(
    'valgrind',
    ['--tool=callgrind', '--instr-atstart=no', '--separate-threads=yes', `--callgrind-out-file=${out}.%p`, '--smc-check=all-non-file', process.execPath, ...RUNTIME_FLAGS, cli, '--config', config],
    { stdio: 'ignore' },
  );
  try {
    const url = `http://127.0.0.1:${port}/`;
    // Under valgrind start-up takes minutes, not seconds: several of the harness's waits.
    for (let attempt = 1; ; attempt++) {
      try {
        await waitUntilServing(valgrind, url);
        break;
      } catch (error) {
        if (attempt === 10 || valgrind.exitCode !== null) throw error;
      }
    }
    await capture(['h2load', '--h1', '-t1', '-c10', '-n', String(WARMUP_REQUESTS), url], 3_600_000);
    await capture(['callgrind_control', '-i', 'on', String(valgrind.pid)], 60_000);
    const load = await capture(['h2load', '--h1', '-t1', '-c10', '-n', String(REQUESTS), url], 1_800_000);
    await capture(['callgrind_control', '-i', 'off', String(valgrind.pid)], 60_000);
    await capture(['callgrind_control', '-d', String(valgrind.pid)], 60_000);
    const succeeded = Number(/(\d+) succeeded/.exec(load)?.[1]);
    if (succeeded !== REQUESTS) throw new Error(`only ${succeeded} of ${REQUESTS} requests succeeded:\n${load}`);
    // One file per thread and dump, named …-<thread>; thread 01 is the main thread.
    const dumps = readdirSync(tmp).filter((file) => file.startsWith(path.basename(out)));
    const totals = dumps.map((file) => ({ main: file.endsWith('-01'), instructions: Number(/^totals: (\d+)/m.exec(readFileSync(path.join(tmp, file), 'utf8'))?.[1] ?? 0) }));
    const sum = (list: typeof totals) => list.reduce((total, dump) => total + dump.instructions, 0);
    return { main: sum(totals.filter((dump) => dump.main)) / REQUESTS, all: sum(totals) / REQUESTS };
  } finally {
    valgrind.kill('SIGTERM');
  }
}

async function main(): Promise<void> {
  for (const tool of ['valgrind', 'callgrind_control', 'h2load']) {
    if (findExecutable(tool) === undefined) throw new Error(`${tool} is needed (Debian: valgrind, nghttp2-client)`);
  }
  const builds: [string, string][] = [['this build', path.join(distRoot, 'src', 'cli.js')]];
  if (process.env.BENCH_LIMPET_BASELINE) builds.push(['baseline', path.resolve(process.env.BENCH_LIMPET_BASELINE)]);
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-instructions-'));
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
  try {
    const backends = await startBackends(1, ['--raw']);
    const counts = new Map(builds.map(([name]) => [name, [] as Count[]]));
    const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
    for (let round = 1; round <= ROUNDS; round++) {
      for (const [name, cli] of round % 2 === 1 ? builds : [...builds].reverse()) {
        const perRequest = await count(cli, backends, tmp);
        counts.get(name)!.push(perRequest);
        console.log(`round ${round}: ${name} (${cli}): ${fmt(perRequest.main)} instructions per request on the main thread, ${fmt(perRequest.all)} on all`);
      }
    }
    const medians = builds.map(([name]) => {
      const values = counts.get(name)!;
      return { name, main: median(values.map((c) => c.main)), all: median(values.map((c) => c.all)) };
    });
    for (const m of medians) console.log(`${m.name}: median over ${ROUNDS} rounds ${fmt(m.main)} instructions per request on the main thread, ${fmt(m.all)} on all`);
    const [self, baseline] = medians;
    if (baseline !== undefined) console.log(`this build ÷ baseline: main thread ${(self!.main / baseline.main).toFixed(3)}, all threads ${(self!.all / baseline.all).toFixed(3)}`);
  } finally {
    stopChildren();
  }
}

await main();
process.exit(0);
