// Hung backend: one of three backends is frozen (SIGSTOP) under keep-alive GET load through limpet,
// and every response the clients get is counted: how many 504s, and how long the answered ones took.
//
//   npm run build && node dist/bench/hung-backend.js
//
// Each backend is its own process (bench/backend.ts), so one can be stopped while the others serve.
// The clients keep no cookie, as wrk does: every request is a new client, placed round-robin, so a
// third of the requests in flight are on the frozen backend when it stops. limpet runs with
// `affinity: cookie`, `healthCheck: { interval: 500ms, timeout: 500ms, fall: 2 }` and
// `timeouts.response: 5s` (the checks decide well within the response timeout, as they must for
// anything to be saved).
//
// Environment: HUNG_CONNECTIONS (default 500), HUNG_SECONDS of load (default 10), HUNG_FREEZE_AT
// seconds into the load (default 2), HUNG_LIMPET_CLI (another build's dist/src/cli.js, e.g. the
// branch point's, to measure it instead).
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLIENT_CPU, intFromEnv, isSkipped, limpetTarget, SERVER_CPU, startBackends, stopChildren } from './harness.js';

const CONNECTIONS = intFromEnv('HUNG_CONNECTIONS', 500);
const SECONDS = intFromEnv('HUNG_SECONDS', 10);
const FREEZE_AT = intFromEnv('HUNG_FREEZE_AT', 2);
const RESPONSE_TIMEOUT = '5s';

interface Outcome {
  status: number;
  ms: number;
}

/** One GET on the connection's own keep-alive agent; 0 when no response came. */
function get(origin: string, agent: http.Agent): Promise<Outcome> {
  const started = performance.now();
  return new Promise((resolve) => {
    const req = http.get(`${origin}/`, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }));
      res.on('error', () => resolve({ status: 0, ms: performance.now() - started }));
    });
    req.on('error', () => resolve({ status: 0, ms: performance.now() - started }));
  });
}

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const cli = process.env.HUNG_LIMPET_CLI;
const backends = await Promise.all([1, 2, 3].map(() => startBackends(1)));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-hung-'));
try {
  const target = await limpetTarget({ pid: process.pid, origins: backends.map((b) => b.origins[0]!) }, tmp, {
    name: 'limpet',
    description: 'limpet',
    nodeArgs: [],
    affinity: 'affinity: { by: cookie, cookie: { secret: hung-backend-bench } }',
    extraYaml: ['healthCheck: { interval: 500ms, timeout: 500ms, fall: 2 }', `timeouts: { response: ${RESPONSE_TIMEOUT} }`],
    cpus: SERVER_CPU,
    ...(cli === undefined ? {} : { cli }),
  });
  if (isSkipped(target)) throw new Error(`limpet did not start: ${target.reason}`);
  if (CLIENT_CPU !== undefined) process.stdout.write(`limpet on CPU ${SERVER_CPU}; backends and clients on CPU ${CLIENT_CPU}\n`);

  const outcomes: Outcome[] = [];
  const started = Date.now();
  const stopAt = started + SECONDS * 1000;
  const victim = backends[0]!;
  const freeze = setTimeout(() => process.kill(victim.pid, 'SIGSTOP'), FREEZE_AT * 1000);
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      while (Date.now() < stopAt) outcomes.push(await get(target.origin, agent));
      agent.destroy();
    }),
  );
  clearTimeout(freeze);
  process.kill(victim.pid, 'SIGCONT');

  const byStatus = new Map<number, number>();
  for (const { status } of outcomes) byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  const answered = outcomes.filter((o) => o.status === 200).map((o) => o.ms).sort((a, b) => a - b);
  const statuses = [...byStatus].sort(([a], [b]) => a - b).map(([status, count]) => `${status || 'no response'}: ${count}`).join(', ');
  process.stdout.write([
    `limpet: ${cli ?? 'dist/src/cli.js'}`,
    `${CONNECTIONS} keep-alive connections, ${SECONDS} s of GETs, backend b1 frozen (SIGSTOP) at ${FREEZE_AT} s, timeouts.response ${RESPONSE_TIMEOUT}`,
    `responses: ${outcomes.length} (${statuses})`,
    `504: ${byStatus.get(504) ?? 0}`,
    `200 latency: p50 ${quantile(answered, 0.5).toFixed(1)} ms, p99 ${quantile(answered, 0.99).toFixed(1)} ms, max ${(answered.at(-1) ?? 0).toFixed(0)} ms; slower than 1 s: ${answered.filter((ms) => ms > 1000).length}`,
    '',
  ].join('\n'));
} finally {
  stopChildren();
  rmSync(tmp, { recursive: true, force: true });
}
