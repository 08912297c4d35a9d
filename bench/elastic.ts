// Elastic fleets: what moves, and what it costs, when the fleet grows or shrinks.
//
//   npm run bench:elastic                     # every scenario, about 5 minutes
//   npm run bench:elastic -- scale-up drain   # some of them
//
// Scenarios (see bench/README.md, "Elastic fleets", for what each does and what it found):
//   scale-up      4 → 5 backends through limpet (by: ip and by: cookie, affinity.rebalance on)
//   peers         the same through nginx (hash $remote_addr consistent) and HAProxy (balance source)
//   drain         5 → 4 with a drain deadline, HTTP and socket.io clients
//   slow-start    new-client share of an added backend while balance.slowStart ramps it
//   bounded-load  balance.maxLoadFactor with every pinned client on one backend
//   simulation    the same placement code on a fake clock at full timescales (idleAfter 30m)
//   hot-path      CPU per request with rebalance on and off, and the cost of one placement
//
// The real-proxy scenarios run limpet from dist/src/cli.js with backends and clients in this
// process, each client from its own 127.x.y.z address (ip affinity) or with its own cookie jar.
// Results are printed as Markdown; bench/results/elastic-latest.md keeps the latest run of each
// scenario (a run of some scenarios replaces only theirs).
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describeMachine, resultsDir, stopChildren, writeResult } from './harness.js';
import { seedFrom } from '../test/support/random.js';
import { percent, startFleetBackends, type FleetBackend } from './elastic-fleet.js';
import { hotPath, type HotPathFigures } from './elastic-hot-path.js';
import { simulateConvergence, simulateScaleUp, type SimulatedConvergence, type SimulatedScaleUp } from './elastic-simulation.js';
import {
  boundedLoad, drainWithDeadline, haproxyScaleUpTarget, IDLE_AFTER, limpetScaleUpTarget, nginxScaleUpTarget, scaleUp, slowStart,
  type BoundedLoadFigures, type DrainFigures, type ScaleUpFigures, type ScaleUpTarget, type SlowStartFigures,
} from './elastic-live.js';

const SCENARIOS = ['scale-up', 'peers', 'drain', 'slow-start', 'bounded-load', 'simulation', 'hot-path'] as const;
type Scenario = (typeof SCENARIOS)[number];

// ---------------------------------------------------------------------------------------------
// Tables

function table(header: string[], rows: (string | number)[][]): string {
  const line = (cells: (string | number)[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

export function scaleUpTable(results: readonly ScaleUpFigures[]): string {
  return table(
    ['proxy', 'active clients (a request every 0.5 s) moved', 'shortest silence before a move', 'idle clients on b5 after their return', 'idle clients moved between b1–b4', 'new clients on b5', 'moves with the remap notice', 'errors', 'remaps counted (rebalance)', 'Set-Cookie per active client'],
    results.map((r) => [
      r.name,
      `${r.activeMovedWhileActive} of ${r.active} (${percent(r.activeMovedWhileActive, r.active)})` +
        (r.activeMoved > r.activeMovedWhileActive ? `; ${r.activeMoved - r.activeMovedWhileActive} more that the loaded machine held up past idleAfter, moved as idle` : ''),
      r.shortestSilenceBeforeMoveMs === null ? '—' : `${(r.shortestSilenceBeforeMoveMs / 1000).toFixed(2)} s`,
      `${r.idleOnNew} of ${r.idle} (${percent(r.idleOnNew, r.idle)})${r.idleHomeOnNew === null ? '' : `; b5 is the home of ${r.idleHomeOnNew}`}`,
      `${r.idleMovedElsewhere}`,
      `${r.newOnNew} of ${r.newClients} (${percent(r.newOnNew, r.newClients)})`,
      `${r.movesNoticed} of ${r.moves}${r.needlessNotices > 0 ? ` (+${r.needlessNotices} needless)` : ''}`,
      `${r.errors}${r.resent > 0 ? `; ${r.resent} resent on a new connection` : ''}${r.failedChecks ? `; ${r.failedChecks} failed health checks` : ''}`,
      r.rebalanceRemaps === null ? '—' : String(r.rebalanceRemaps),
      r.setCookiePerSecond === null ? '—' : `${r.setCookiePerSecond.toFixed(2)}/s`,
    ]),
  );
}

export function drainTable(d: DrainFigures): string {
  const ms = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b);
    return sorted.length === 0 ? '—' : `${Math.round(sorted[0] as number)}–${Math.round(sorted.at(-1) as number)} ms`;
  };
  return table(
    ['what', 'measured'],
    [
      ['active clients of b5 (a request every 0.5 s) moved before the deadline', `${d.activeMovedBefore} of ${d.activeOnDrained}`],
      ['… moved at the deadline', `${d.activeMovedAfter} of ${d.activeOnDrained}, the last ${d.activeLastMoveAfterDeadlineMs} ms after it`],
      ['idle clients of b5 that came back during the drain, moved before the deadline', `${d.idleMovedBefore} of ${d.idleOnDrained}`],
      ['clients of b1–b4 moved', String(d.othersMoved)],
      ['moves with the remap notice', `${d.movesNoticed} of ${d.moves}`],
      ['`limpet_session_remaps_total{reason="drain"}`', String(d.drainRemaps)],
      ['errors', d.errors],
      ['health checks failed during the run (a loaded machine)', String(d.failedChecks)],
      ['`drained: true` (GET /backends/b5) after the deadline', d.drainedAfterDeadlineMs === null ? 'never' : `${(d.drainedAfterDeadlineMs / 1000).toFixed(2)} s (idleAfter ${IDLE_AFTER})`],
      ['b5 liveClients / WebSockets: at the drain, before the deadline, when drained', d.liveClientsTrace.map((t) => `${t.liveClients} / ${t.websockets} (+${(t.afterDrainMs / 1000).toFixed(1)} s)`).join(', ')],
      ['socket.io clients of b5 disconnected, after the deadline', `${d.socketsOnDrained} of ${d.sockets}, ${ms(d.socketDisconnectAfterDeadlineMs)}`],
      ['… connected again (on a WebSocket, elsewhere), after their disconnect', `${ms(d.socketReconnectMs)}; now on ${Object.entries(d.socketsMovedTo).map(([id, n]) => `${id} ${n}`).join(', ')}`],
      ['socket.io clients of b1–b4 disconnected', String(d.otherSocketsDisconnected)],
    ],
  );
}

/**
 * Slow start with weight w of 1 (the others 1 each): by: ip admits that fraction of the keys whose
 * home is b5 (a fifth of them), so b5 gets w/5 of new clients; by: cookie, round-robin with weight
 * w against four of 1, so w/(4 + w).
 */
export function slowStartTable(s: SlowStartFigures): string {
  const share = (part: number, whole: number, expected: number) => `${part} of ${whole} (${percent(part, whole)}; ramp: ${(100 * expected).toFixed(1)} %)`;
  return table(
    ['seconds since b5 came up', 'b5 effective weight w (ip run / cookie run)', 'new clients on b5, by: ip (ramp: w/5)', 'new clients on b5, by: cookie (ramp: w/(4+w))'],
    s.ip.map((bucket, i) => {
      const cookie = s.cookie[i];
      return [
        `${bucket.from}–${bucket.to}`,
        `${bucket.effectiveWeight.toFixed(2)}${cookie === undefined ? '' : ` / ${cookie.effectiveWeight.toFixed(2)}`}`,
        share(bucket.onNew, bucket.newClients, bucket.effectiveWeight / 5),
        cookie === undefined ? '—' : share(cookie.onNew, cookie.newClients, cookie.effectiveWeight / (4 + cookie.effectiveWeight)),
      ];
    }),
  );
}

export function boundedLoadTable(b: BoundedLoadFigures): string {
  return table(
    ['new clients placed', 'of those in the last 500, on b1', 'b1 holds, of all clients'],
    b.buckets.map((bucket) => [bucket.placed, `${bucket.onLoaded} of ${bucket.newClients} (${percent(bucket.onLoaded, bucket.newClients)})`, percent(bucket.loadedShare, 1)]),
  );
}

export function simulatedScaleUpTable(results: readonly SimulatedScaleUp[]): string {
  const n = (value: number) => value.toLocaleString('en-US');
  return table(
    ['by', 'clients', 'active: a request every', 'idle clients return over', 'active clients moved', 'idle clients on b5 after their return', 'idle clients moved between b1–b4', 'new clients on b5', 'moves with the remap notice', 'Set-Cookie per active client', 'requests simulated'],
    results.map((r) => [
      r.mode,
      n(r.clients),
      `${r.activeEveryMs / 1000} s`,
      `${r.returnsOverMs / 60_000} min`,
      `${n(r.activeMoved)} of ${n(r.active)} (${percent(r.activeMoved, r.active)})`,
      `${n(r.idleOnNew)} of ${n(r.idle)} (${percent(r.idleOnNew, r.idle)}); b5 is the home of ${n(r.idleHomeOnNew)}`,
      n(r.idleMovedElsewhere),
      `${n(r.newOnNew)} of ${n(r.newClients)} (${percent(r.newOnNew, r.newClients)})`,
      `${n(r.tally.noticed)} of ${n(r.tally.moves)}${r.tally.needless > 0 ? ` (+${r.tally.needless} needless)` : ''}`,
      r.setCookiePerActiveHour === null ? '—' : `${r.setCookiePerActiveHour.toFixed(1)}/h`,
      `${n(r.requests)} in ${r.wallSeconds.toFixed(1)} s`,
    ]),
  );
}

export function convergenceTable(c: SimulatedConvergence): string {
  return [
    table(
      ['after b5 was added', 'clients seen within idleAfter, on b5', 'all clients, on b5', 'moved home by rebalance so far'],
      c.samples.map((s) => [
        s.afterMinutes < 60 ? `${s.afterMinutes} min` : `${s.afterMinutes / 60} h`,
        `${s.liveOnNew} of ${s.live} (${percent(s.liveOnNew, s.live)})`,
        `${s.allOnNew} of ${s.all} (${percent(s.allOnNew, s.all)})`,
        s.rebalanceMoves,
      ]),
    ),
    `b5 is the home of ${c.homeOnNew} of ${c.clients} clients (${percent(c.homeOnNew, c.clients)}). Shortest idle time before a rebalance move: ` +
      `${c.shortestIdleBeforeMoveMinutes.toFixed(1)} min (idleAfter 30m). Clients forgotten after sessionTtl (2h) and placed afresh on another backend, ` +
      `without the notice: ${c.placedAfreshElsewhere}. Needless notices: ${c.needless}. ${c.requests.toLocaleString('en-US')} requests simulated in ${c.wallSeconds.toFixed(1)} s; seed ${c.seed}.`,
  ].join('\n\n');
}

export function hotPathTable(h: HotPathFigures): string {
  const range = (values: number[]) => `${Math.min(...values).toFixed(3)}–${Math.max(...values).toFixed(3)}`;
  return [
    table(
      ['affinity', 'CPU per request, rebalance off', 'on', 'on ÷ off (medians)', 'on ÷ off, each round', 'req/s off / on', 'one placement, off → on (in-process)', 'disturbed runs'],
      h.rows.map((r) => [
        r.mode === 'ip' ? 'by: ip' : 'by: cookie (a valid cookie on every request)',
        `${r.offUs.toFixed(2)} µs`,
        `${r.onUs.toFixed(2)} µs`,
        (r.onUs / r.offUs).toFixed(3),
        range(r.roundRatios),
        `${r.requestsPerSecOff.toLocaleString('en-US')} / ${r.requestsPerSecOn.toLocaleString('en-US')}`,
        `${r.placementOffNs} → ${r.placementOnNs} ns (median difference of the pairs: ${r.placementAddedNs >= 0 ? '+' : '−'}${Math.abs(r.placementAddedNs)} ns)`,
        String(r.disturbedRuns),
      ]),
    ),
    `${h.tool}, ${h.connections} keep-alive connections from 127.0.0.1, ${h.rounds} interleaved rounds of ${h.seconds} s per target; rebalance on = \`rebalance: { idleAfter: 30m }\`.`,
  ].join('\n\n');
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async function runScaleUp(targets: (() => Promise<ScaleUpTarget | string>)[]): Promise<string> {
  const results: ScaleUpFigures[] = [];
  const skipped: string[] = [];
  for (const make of targets) {
    const target = await make();
    if (typeof target === 'string') {
      skipped.push(target);
      continue;
    }
    process.stdout.write(`  ${target.name} …\n`);
    try {
      results.push(await scaleUp(target));
    } finally {
      await target.stop();
    }
  }
  return [scaleUpTable(results), ...skipped.map((reason) => `skipped: ${reason}`)].join('\n\n');
}

async function run(scenario: Scenario, backends: readonly FleetBackend[], tmp: string): Promise<string> {
  switch (scenario) {
    case 'scale-up':
      return runScaleUp([() => limpetScaleUpTarget('ip', backends, tmp), () => limpetScaleUpTarget('cookie', backends, tmp)]);
    case 'peers':
      return runScaleUp([() => nginxScaleUpTarget(backends, tmp), () => haproxyScaleUpTarget(backends, tmp)]);
    case 'drain':
      return drainTable(await drainWithDeadline(backends, tmp));
    case 'slow-start':
      return slowStartTable(await slowStart(backends, tmp));
    case 'bounded-load': {
      const figures = await boundedLoad(backends, tmp);
      return [
        boundedLoadTable(figures),
        `pinned clients moved: ${figures.pinnedMoved} of ${figures.pinned}; errors: ${figures.errors}; health checks failed: ${figures.failedChecks}; maxLoadFactor ${figures.maxLoadFactor}`,
      ].join('\n\n');
    }
    case 'simulation': {
      const seed = seedFrom('ELASTIC_SEED');
      process.stdout.write(`  seed ${seed} (ELASTIC_SEED=${seed} repeats it)\n`);
      const scaleUps: SimulatedScaleUp[] = [];
      for (const options of [
        { mode: 'ip', clients: 1_000, activeEveryMs: 500, returnsOverMs: 10 * 60_000 },
        { mode: 'cookie', clients: 1_000, activeEveryMs: 500, returnsOverMs: 10 * 60_000 },
        { mode: 'ip', clients: 100_000, activeEveryMs: 30_000, returnsOverMs: 10 * 60_000 },
        { mode: 'ip', clients: 100_000, activeEveryMs: 30_000, returnsOverMs: 60_000 },
      ] as const) {
        scaleUps.push(await simulateScaleUp({ ...options, seed }));
      }
      return [simulatedScaleUpTable(scaleUps), convergenceTable(await simulateConvergence(10_000, seed))].join('\n\n');
    }
    case 'hot-path':
      return hotPathTable(await hotPath());
  }
}

/** Replaces the sections of `results` in bench/results/elastic-latest.md, keeping the others; returns the path. */
function keepResults(results: ReadonlyMap<Scenario, string>): string {
  const file = path.join(resultsDir, 'elastic-latest.md');
  const sections = new Map<string, string>();
  if (existsSync(file)) {
    for (const part of readFileSync(file, 'utf8').split(/^(?=## )/m)) {
      const name = /^## (\S+)/.exec(part)?.[1];
      if (name !== undefined) sections.set(name, part.trimEnd());
    }
  }
  for (const [name, text] of results) sections.set(name, text);
  const ordered = SCENARIOS.filter((name) => sections.has(name)).map((name) => sections.get(name) as string);
  return writeResult('elastic-latest.md', `# npm run bench:elastic\n\n${ordered.join('\n\n')}\n`);
}

const asked = process.argv.slice(2);
for (const name of asked) {
  if (!(SCENARIOS as readonly string[]).includes(name)) {
    process.stderr.write(`unknown scenario "${name}"; the scenarios are: ${SCENARIOS.join(', ')}\n`);
    process.exit(2);
  }
}
const chosen = (asked.length === 0 ? SCENARIOS : asked) as readonly Scenario[];
const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-elastic-'));
const backends = await startFleetBackends(5);
const results = new Map<Scenario, string>();
try {
  for (const scenario of chosen) {
    process.stdout.write(`\n## ${scenario}\n`);
    const started = Date.now();
    const load = os.loadavg()[0]?.toFixed(1);
    const text = await run(scenario, backends, tmp);
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    process.stdout.write(`${text}\n(${seconds} s)\n`);
    results.set(scenario, `## ${scenario}\n\n${new Date().toISOString()}, ${describeMachine()}, load average ${load} at the start, ${seconds} s\n\n${text}`);
  }
} finally {
  stopChildren();
  rmSync(tmp, { recursive: true, force: true });
}
process.stdout.write(`\nwritten to ${keepResults(results)}\n`);
