/**
 * stateFile: one proxy keeps its pins and the drains made through its admin API across a restart,
 * a crash (SIGKILL) included. The format on its own, then the real CLI over real backends.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import type { DurableState, PinRecord } from '../src/state/durable-state.js';
import { decodeState, encodeState, StateFileCorruptError, StateFileVersionError, type KeptState } from '../src/state/state-file-format.js';
import { backendsYaml, startBackend, startBackends, type TestBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { startCli, type CliProxy } from './support/cli.js';
import { startProxy } from './support/proxy.js';
import { seededRandom, seedFrom } from './support/random.js';

const cleanup = useCleanup();

const CONFIG = parseConfig(
  'affinity: { by: ip }\nbackends:\n  - { id: app-1, url: "http://127.0.0.1:3001" }\n  - { id: app-2, url: "http://127.0.0.1:3002", drain: { deadline: 1h } }\n',
  'f.yaml',
  {},
);

const encoded = (state: DurableState) => [...encodeState(state, CONFIG)].join('');

describe('the state file format', () => {
  it('gives back every pin and runtime drain it was given, whatever the keys hold', () => {
    const seed = seedFrom('STATE_FILE_SEED');
    console.log(`state file round trip: seed ${seed} (replay with STATE_FILE_SEED=${seed})`);
    const random = seededRandom(seed);
    const alphabet = [...'abcXYZ019 .:-_"\'\\\t\n\r\u0000\u001f\u007f\u00e9\u00ff\u20ac'];
    const now = Math.floor(Date.now() / 1000);
    const pins: PinRecord[] = Array.from({ length: 5000 }, (_, i) => {
      const length = Math.floor(random() * 12);
      const key = `${i}:${Array.from({ length }, () => alphabet[Math.floor(random() * alphabet.length)]).join('')}`;
      return [random() < 0.1 ? `"${key}` : key, `app-${1 + Math.floor(random() * 2)}`, now - Math.floor(random() * 4000)];
    });
    pins.push(['10.0.0.7', 'app-1', now], ['2001:db8::7', 'app-2', now - 1]);
    const state: DurableState = {
      pins,
      drains: [
        { id: 'app-1', draining: true, deadlineAt: Date.now() + 600_000 },
        { id: 'app-2', draining: false, deadlineAt: null },
      ],
    };
    const kept = decodeState(encoded(state));
    expect(kept.affinity).toBe('ip');
    expect(kept.pins).toEqual(pins);
    expect(kept.drains).toEqual([
      { ...state.drains[0], fileDrain: { draining: false, deadline: null } },
      { ...state.drains[1], fileDrain: { draining: true, deadline: 3_600_000 } },
    ]);
  });

  it('refuses a file cut short anywhere, one with a line gone, and one that is not a state file', () => {
    const now = Math.floor(Date.now() / 1000);
    const text = encoded({ pins: Array.from({ length: 50 }, (_, i): PinRecord => [`10.0.0.${i}`, 'app-1', now - i]), drains: [{ id: 'app-2', draining: false, deadlineAt: null }] });
    // Every cut that loses the end line, in the middle of a line or between two.
    for (let cut = 0; cut < text.length - 1; cut += 7) expect(() => decodeState(text.slice(0, cut)), `cut at ${cut}`).toThrow(StateFileCorruptError);
    // Pin i is line 6 + i (after the version, written, affinity, drain and first backend lines).
    expect(() => decodeState(text.replace(/\n\d+ 0 10\.0\.0\.5\n/, '\n'))).toThrow('line 55: the end line says "1 50", but 1 drains and 49 pins came before it');
    expect(() => decodeState(text.replace(/\n\d+ 0 10\.0\.0\.5\n/, '\n5 7 10.0.0.5\n'))).toThrow('line 11: expected "<seconds since seen> <backend index> <key>"');
    expect(() => decodeState(`${text}junk\n`)).toThrow('text after the end line');
    expect(() => decodeState('{"pins": []}\n')).toThrow('not a limpet state file');
    expect(() => decodeState('')).toThrow(StateFileCorruptError);
  });

  it('names a version it does not read', () => {
    expect(() => decodeState('limpet-state 2\nwhatever comes in version 2\n')).toThrow(StateFileVersionError);
    expect(() => decodeState('limpet-state 2\n')).toThrow('format version "2"; this limpet reads version 1');
  });
});

// --- the real CLI --------------------------------------------------------------------------------

const CLIENTS = 60;
const address = (i: number) => `127.0.31.${i + 2}`;
// Quick to see a backend die and come back, slow to call a live one dead on a busy machine.
const HEALTH = 'healthCheck: { interval: 100ms, timeout: 1s, rise: 1, fall: 3 }\npassive: { cooldown: 100ms }\n';

/** The backend each client is served by, one new connection per request (so, with workers, they take turns). */
async function servedBy(port: number, clients = CLIENTS, from = 0): Promise<string[]> {
  const served: string[] = [];
  for (let start = from; start < from + clients; start += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, from + clients - start) }, async (_, j) => {
        const res = await request(port, { localAddress: address(start + j) });
        expect(res.status).toBe(200);
        return res.headers['x-backend'] as string;
      }),
    );
    served.push(...batch);
  }
  return served;
}

/** The state file as it is now, or null while there is none that reads. */
function kept(file: string): KeptState | null {
  try {
    return decodeState(readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
}

/** Waits until the file holds every client on the backend it is served by now: what a crash would keep. */
async function fileHolds(file: string, served: readonly string[]): Promise<void> {
  await waitFor(() => {
    const pins = new Map(kept(file)?.pins.map(([key, id]) => [key, id]));
    const missing = served.filter((id, i) => pins.get(address(i)) !== id).length;
    if (missing > 0) throw new Error(`${missing} clients not yet where they are served`);
    return true;
  }, 10_000, 'the state file to hold every client');
}

async function backendView(cli: CliProxy, id: string): Promise<{ state: string; drainDeadline: string | null }> {
  return JSON.parse((await request(cli.adminPort, { path: `/backends/${id}` })).body) as { state: string; drainDeadline: string | null };
}

async function admin(cli: CliProxy, path: string): Promise<{ state: string; drainDeadline: string | null }> {
  const res = await request(cli.adminPort, { path, method: 'POST' });
  expect(res.status).toBe(200);
  return JSON.parse(res.body) as { state: string; drainDeadline: string | null };
}

const keptDrain = (file: string, id: string) => kept(file)?.drains.find((drain) => drain.id === id);

function stateDir(): string {
  return mkdtempSync(join(tmpdir(), 'limpet-state-'));
}

/**
 * Kills a backend so its clients move, brings it back on the same port (`onRecovery: stay` keeps
 * them where they moved), and returns who serves whom then, once the state file holds it.
 */
async function moveClientsAndRecover(cli: CliProxy, backends: TestBackend[], file: string): Promise<{ moved: number[]; served: string[] }> {
  const before = await servedBy(cli.port);
  const victim = backends[0] as TestBackend;
  const moved = before.flatMap((id, i) => (id === victim.id ? [i] : []));
  expect(moved.length, 'clients on the backend that is killed').toBeGreaterThan(10);
  await victim.close();
  const away = await servedBy(cli.port);
  for (const i of moved) expect(away[i]).not.toBe(victim.id);
  const back = cleanup.add(await startBackend(victim.id, undefined, victim.port));
  backends[0] = back;
  await waitFor(async () => (await backendView(cli, victim.id)).state === 'up', 10_000, `${victim.id} up again`);
  const served = await servedBy(cli.port);
  expect(served, 'with onRecovery: stay, moved clients stay').toEqual(away);
  await fileHolds(file, served);
  return { moved, served };
}

describe('stateFile with the real CLI', () => {
  it('ip mode with onRecovery: stay: clients moved off a failed backend are still where they moved after a kill -9 and restart', async () => {
    const backends = cleanup.add(await startBackends(3));
    const file = join(stateDir(), 'limpet.state');
    let cli = cleanup.add(await startCli(() => `affinity: { by: ip, onRecovery: stay }\nstateFile: ${file}\n${HEALTH}${backendsYaml(backends)}\n`));
    expect(cli.logs.some((l) => l.msg === 'no state file yet; starting with no kept pins or drains' && l.file === file)).toBe(true);
    const { moved, served } = await moveClientsAndRecover(cli, backends, file);
    // Pins are client addresses: only limpet's user may read them.
    expect(statSync(file).mode & 0o777).toBe(0o600);

    await cli.kill();
    cli = cleanup.add(await cli.restart());
    const restored = cli.logs.find((l) => l.msg === 'state restored');
    expect(restored).toMatchObject({ file, pinsLeftOut: 0 });
    expect(restored?.pins as number).toBeGreaterThanOrEqual(CLIENTS);
    const after = await servedBy(cli.port);
    const wentBack = moved.filter((i) => after[i] === backends[0]!.id).length;
    console.log(`kill -9 and restart: ${wentBack} of ${moved.length} moved clients went back to ${backends[0]!.id}`);
    expect(after).toEqual(served);
  });

  it('a drain with a deadline made through the admin API survives a kill -9 with its deadline, and so does an undrain', async () => {
    const backends = cleanup.add(await startBackends(3));
    const file = join(stateDir(), 'limpet.state');
    // app-3 is drained by the file; the admin API undrains it below.
    const yaml = `affinity: { by: ip }\nstateFile: ${file}\n${HEALTH}backends:\n  - { id: app-1, url: "${backends[0]!.url}" }\n  - { id: app-2, url: "${backends[1]!.url}" }\n  - { id: app-3, url: "${backends[2]!.url}", drain: true }\n`;
    let cli = cleanup.add(await startCli(() => yaml));
    const drained = await admin(cli, '/backends/app-2/drain?deadline=10m');
    expect(drained.state).toBe('draining');
    const deadline = drained.drainDeadline as string;
    const madeAt = Date.now();
    await waitFor(() => keptDrain(file, 'app-2')?.deadlineAt === Date.parse(deadline), 5_000, 'the drain in the state file');
    console.log(`the drain was in the state file ${Date.now() - madeAt} ms after the admin call`);
    await cli.kill();

    cli = cleanup.add(await cli.restart());
    expect(await backendView(cli, 'app-2')).toMatchObject({ state: 'draining', drainDeadline: deadline });
    expect(await backendView(cli, 'app-3')).toMatchObject({ state: 'draining', drainDeadline: null });
    // New clients avoid both.
    expect(new Set(await servedBy(cli.port, 40, 100))).toEqual(new Set(['app-1']));

    await admin(cli, '/backends/app-2/undrain');
    await admin(cli, '/backends/app-3/undrain');
    await waitFor(() => keptDrain(file, 'app-2')?.draining === false && keptDrain(file, 'app-3')?.draining === false, 5_000, 'both undrains in the state file');
    await cli.kill();

    cli = cleanup.add(await cli.restart());
    expect(await backendView(cli, 'app-2')).toMatchObject({ state: 'up', drainDeadline: null });
    // The file still says drain: true for app-3, but the undrain made through the admin API stands until the file changes it.
    expect(await backendView(cli, 'app-3')).toMatchObject({ state: 'up', drainDeadline: null });
  });

  it("a change of that backend's drain in the YAML overrides the kept runtime drain, made live or while limpet was stopped", async () => {
    const backends = cleanup.add(await startBackends(3));
    const file = join(stateDir(), 'limpet.state');
    const yaml = (app2: string) =>
      `affinity: { by: ip }\nstateFile: ${file}\n${HEALTH}backends:\n  - { id: app-1, url: "${backends[0]!.url}" }\n  - { id: app-2, url: "${backends[1]!.url}"${app2} }\n  - { id: app-3, url: "${backends[2]!.url}" }\n`;
    let cli = cleanup.add(await startCli(() => yaml('')));
    const reloads = () => cli.logs.filter((l) => l.msg === 'config reloaded').length;
    const { drainDeadline } = await admin(cli, '/backends/app-2/drain?deadline=10m');
    await waitFor(() => keptDrain(file, 'app-2')?.draining, 5_000, 'the drain in the state file');

    // Another change to that backend leaves the runtime drain be.
    cli.writeConfig(yaml(', weight: 2'));
    await waitFor(() => reloads() === 1, 10_000, 'the weight change applied');
    expect(await backendView(cli, 'app-2')).toMatchObject({ state: 'draining', drainDeadline });

    // A change of its drain: the file rules again, here and in the state file.
    cli.writeConfig(yaml(', weight: 2, drain: true'));
    await waitFor(() => reloads() === 2, 10_000, 'the drain change applied');
    expect(await backendView(cli, 'app-2')).toMatchObject({ state: 'draining', drainDeadline: null });
    await waitFor(() => kept(file) !== null && keptDrain(file, 'app-2') === undefined, 5_000, 'the runtime drain gone from the state file');

    // An undrain kept in the state file, then the YAML edited while limpet is down: the YAML wins.
    await admin(cli, '/backends/app-2/undrain');
    await waitFor(() => keptDrain(file, 'app-2')?.draining === false, 5_000, 'the undrain in the state file');
    await cli.kill();
    cli.writeConfig(yaml(', weight: 2, drain: { deadline: 1h }'));
    cli = cleanup.add(await cli.restart());
    const view = await backendView(cli, 'app-2');
    expect(view.state).toBe('draining');
    expect(Date.parse(view.drainDeadline as string)).toBeGreaterThan(Date.now() + 3_500_000);
    expect(cli.logs.find((l) => l.msg === 'state restored')).toMatchObject({ drains: [], drainsLeftOut: ['app-2'] });
  });

  it('a graceful stop writes what is pending; pins kept in another affinity mode are left out', async () => {
    const backends = cleanup.add(await startBackends(3));
    const file = join(stateDir(), 'limpet.state');
    let cli = cleanup.add(await startCli(() => `affinity: { by: ip }\nstateFile: ${file}\n${backendsYaml(backends)}\n`));
    const served = await servedBy(cli.port, 40);
    await cli.stop();
    const pins = new Map(kept(file)?.pins.map(([key, id]) => [key, id]));
    expect(served.map((_, i) => pins.get(address(i)))).toEqual(served);

    cli.writeConfig(`affinity: { by: cookie }\nstateFile: ${file}\n${backendsYaml(backends)}\n`);
    cli = cleanup.add(await cli.restart());
    expect(cli.logs.find((l) => l.msg === 'state restored')).toMatchObject({ pins: 0, pinsLeftOut: pins.size, affinityChanged: 'ip → cookie' });
  });
});

describe('stateFile trouble is logged and never stops the proxy', () => {
  /** One warning naming the file and why it was ignored; the proxy serves, and its next write replaces the file. */
  async function ignoredThenReplaced(logs: Record<string, unknown>[], port: number, file: string, msg: string, reason: string): Promise<void> {
    expect(logs.filter((l) => l.level === 'warn' && String(l.msg).startsWith('state file'))).toEqual([expect.objectContaining({ msg, file, reason })]);
    await fileHolds(file, await servedBy(port, 20));
  }

  it('a corrupt file: one warning with the reason, the proxy serves, and the file is replaced by a good one', async () => {
    const backends = cleanup.add(await startBackends(2));
    const file = join(stateDir(), 'limpet.state');
    writeFileSync(file, 'hello, not a state file\n');
    const cli = cleanup.add(await startCli(() => `affinity: { by: ip }\nstateFile: ${file}\n${backendsYaml(backends)}\n`));
    await ignoredThenReplaced(cli.logs, cli.port, file, 'state file ignored: it is corrupt', 'not a limpet state file (it does not start with "limpet-state")');
  });

  // The same start-up path as above, in process (a proxy start costs a fraction of the CLI's).
  it.each([
    ['a file cut short', 'limpet-state 1\nwritten 1767225600\naffinity ip\nbackend app-1\n5 0 10.0.0.1\n5 0 10.0', 'state file ignored: it is corrupt', 'cut short: no end line after 6 lines'],
    ['a file of another version', 'limpet-state 7\nwritten 1767225600\n', 'state file ignored: written in another format version', 'format version "7"; this limpet reads version 1'],
  ])('%s: the same', async (_name, content, msg, reason) => {
    const backends = cleanup.add(await startBackends(2));
    const file = join(stateDir(), 'limpet.state');
    writeFileSync(file, content);
    const { limpet, port, logs } = await startProxy(`affinity: { by: ip }\nstateFile: ${file}\n${backendsYaml(backends)}\n`, 'info');
    cleanup.add(limpet);
    await ignoredThenReplaced(logs.lines, port, file, msg, reason);
  });

  it('a folder that cannot take the file: the failed read and the failed writes are each logged once, requests never fail for it, and writes work again once it can', async () => {
    const backends = cleanup.add(await startBackends(2));
    const folder = join(stateDir(), 'state');
    // A file stands where the folder should be: the state file can be neither read nor written.
    writeFileSync(folder, '');
    const file = join(folder, 'limpet.state');
    const cli = cleanup.add(await startCli(() => `affinity: { by: ip }\nstateFile: ${file}\n${backendsYaml(backends)}\n`));
    expect(cli.logs.find((l) => l.msg === 'state file ignored: it cannot be read')).toMatchObject({ level: 'warn', file, reason: expect.stringContaining('ENOTDIR') });
    const failed = () => cli.logs.filter((l) => l.msg === 'state file cannot be written; retrying, pins and drains are kept in memory meanwhile');
    const served = await servedBy(cli.port, 20);
    await waitFor(() => failed().length === 1, 10_000, 'the failed write logged');
    expect(failed()[0]).toMatchObject({ level: 'warn', file, reason: expect.stringContaining('ENOTDIR') });
    // More changes and more failed tries (one every 2 s): still the one line.
    served.push(...(await servedBy(cli.port, 20, 20)));
    await admin(cli, '/backends/app-1/drain');
    rmSync(folder);
    mkdirSync(folder);
    await waitFor(() => cli.logs.some((l) => l.msg === 'state file written again'), 10_000, 'the write to work again');
    expect(failed()).toHaveLength(1);
    expect(keptDrain(file, 'app-1')).toMatchObject({ draining: true });
    await fileHolds(file, served);
  });
});

describe('stateFile with workers: 2', () => {
  it('the primary writes and restores it, and both workers route the restored clients alike', async () => {
    const backends = cleanup.add(await startBackends(3));
    const file = join(stateDir(), 'limpet.state');
    let cli = cleanup.add(
      await startCli(() => `workers: 2\nlog: { level: info, access: true }\naffinity: { by: ip, onRecovery: stay }\nstateFile: ${file}\n${HEALTH}${backendsYaml(backends)}\n`),
    );
    const { served } = await moveClientsAndRecover(cli, backends, file);
    await cli.kill();

    cli = cleanup.add(await cli.restart());
    expect(cli.logs.find((l) => l.msg === 'state restored')?.pins as number).toBeGreaterThanOrEqual(CLIENTS);
    const requestsBefore = cli.logs.filter((l) => l.msg === 'request').length;
    const workers = () => new Set(cli.logs.filter((l) => l.msg === 'request').slice(requestsBefore).map((l) => l.pid));
    // Each client served again and again, each time on a new connection, until both workers have
    // served (a loaded machine may start one later): every round routes them as before the kill.
    await waitFor(async () => {
      expect(await servedBy(cli.port)).toEqual(served);
      return workers().size === 2;
    }, 20_000, 'both workers to serve the restored clients');
  });
});
