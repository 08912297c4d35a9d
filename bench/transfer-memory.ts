// Memory on big transfers: how much limpet's RSS grows for one 20 MiB upload and one 20 MiB
// download through it, after a warm-up.
//
//   npm run build && node dist/bench/transfer-memory.js
//
// limpet runs as a child process (as the `limpet` command starts it, with its runtime flags); its
// RSS and peak RSS (VmRSS, VmHWM) are read from /proc. The backend and the client are
// bench/bulk-peer.mjs, a process of their own: the backend reads uploads and streams downloads in
// 64 KiB writes, honouring backpressure; the client sends and reads as fast as loopback allows.
// The warm-up (small GETs, 1 MiB uploads and downloads) runs every code path once, so what grows
// afterwards is what the big transfers themselves cost, not first-use compilation and pool set-up.
//
// Environment: TRANSFER_MIB (default 20), TRANSFER_ROUNDS (default 3: the big pair runs this many
// times, each measured from the RSS just before it), TRANSFER_LIMPET_CLI (another build's
// dist/src/cli.js, e.g. the branch point's, to measure it instead), TRANSFER_NODE_ARGS (extra
// node flags for limpet, e.g. --trace-gc).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startBulkPeer } from './bulk-transfers.js';
import { intFromEnv, isSkipped, limpetTarget, repoRoot, stopChildren } from './harness.js';

const MIB = 1024 * 1024;
const SIZE = intFromEnv('TRANSFER_MIB', 20) * MIB;
const ROUNDS = intFromEnv('TRANSFER_ROUNDS', 3);

/** VmRSS and VmHWM of a process, in MB. */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]);
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
}

function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

const mb = (value: number) => `${value.toFixed(1)} MB`;

const cli = process.env.TRANSFER_LIMPET_CLI;
const nodeArgs = (process.env.TRANSFER_NODE_ARGS ?? '').split(' ').filter(Boolean);
const peer = await startBulkPeer(path.join(repoRoot, 'bench', 'bulk-peer.mjs'));
const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-transfer-'));
try {
  const target = await limpetTarget({ pid: peer.child.pid!, origins: [peer.backend] }, tmp, {
    name: 'limpet',
    description: 'limpet',
    nodeArgs,
    extraYaml: [],
    cpus: undefined,
    ...(cli === undefined ? {} : { cli }),
  });
  if (isSkipped(target)) throw new Error(`limpet did not start: ${target.reason}`);
  const pid = target.serverPid;

  for (let i = 0; i < 200; i++) await peer.transfer('download', target.origin, 3);
  for (let i = 0; i < 3; i++) {
    await peer.transfer('upload', target.origin, MIB);
    await peer.transfer('download', target.origin, MIB);
  }
  const settled = memory(pid);
  process.stdout.write(`limpet: ${cli ?? 'dist/src/cli.js'}${nodeArgs.length > 0 ? ` (node ${nodeArgs.join(' ')})` : ''}\n`);
  process.stdout.write(`after warm-up: RSS ${mb(settled.rss)}\n`);
  const growth: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const before = memory(pid);
    const peakKnown = resetPeak(pid);
    const sent = await peer.transfer('upload', target.origin, SIZE);
    const received = await peer.transfer('download', target.origin, SIZE);
    if (sent !== SIZE || received !== SIZE) throw new Error(`transfer incomplete: uploaded ${sent}, downloaded ${received} of ${SIZE}`);
    const after = memory(pid);
    growth.push(after.rss - before.rss);
    process.stdout.write(
      `round ${round}: ${SIZE / MIB} MiB up + ${SIZE / MIB} MiB down: RSS ${mb(before.rss)} → ${mb(after.rss)} (+${mb(after.rss - before.rss)})` +
        `${peakKnown ? `, peak ${mb(after.peak)} (+${mb(after.peak - before.rss)})` : ''}\n`,
    );
  }
  const total = memory(pid).rss - settled.rss;
  process.stdout.write(`RSS growth over warm-up: first round +${mb(growth[0]!)}, after ${ROUNDS} rounds +${mb(total)}\n`);
} finally {
  peer.child.kill();
  stopChildren();
  rmSync(tmp, { recursive: true, force: true });
}
