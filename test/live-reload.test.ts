import { describe, expect, it } from 'vitest';
import { answerWithId, backendsYaml, startBackend, startBackends, type TestBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { request, waitFor } from './support/client.js';
import { spawnSync } from 'node:child_process';
import { linkSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCli, type CliLaunch } from './support/cli.js';
import { CI_CANNOT_RUN } from './support/fail-on-skip-reporter.js';
import { parseExposition, sample } from './support/exposition.js';

const cleanup = useCleanup();

const HEALTH = 'healthCheck: { interval: 100ms, timeout: 200ms, rise: 1, fall: 2 }\naffinity: { by: ip }\n';

function sourceAddress(i: number): string {
  return `127.0.9.${i + 2}`;
}

async function backendIds(adminPort: number): Promise<{ id: string; state: string; weight: number }[]> {
  return JSON.parse((await request(adminPort, { path: '/backends' })).body) as { id: string; state: string; weight: number }[];
}

async function reloads(adminPort: number, result: 'success' | 'failure'): Promise<number> {
  return sample(parseExposition((await request(adminPort, { path: '/metrics' })).body), 'limpet_config_reloads_total', { result });
}

/** Steady light load from 40 clients until stopped; records every status and who served whom. */
function lightLoad(port: number) {
  const statuses: number[] = [];
  const servedBy = new Map<number, string[]>();
  let running = true;
  const done = (async () => {
    for (let round = 0; running; round++) {
      await Promise.all(
        Array.from({ length: 40 }, async (_, i) => {
          const res = await request(port, { localAddress: sourceAddress(i) }).catch(() => ({ status: 0, headers: {} as Record<string, unknown> }));
          statuses.push(res.status);
          const list = servedBy.get(i) ?? [];
          list.push(String(res.headers['x-backend']));
          servedBy.set(i, list);
        }),
      );
    }
  })();
  return {
    statuses,
    servedBy,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

describe('hot reload', () => {
  it('adds, removes and reweights backends under load with zero failed requests, keeping pins', async () => {
    const backends = cleanup.add(await startBackends(3));
    const [a, b, c] = backends as [TestBackend, TestBackend, TestBackend];
    const cli = cleanup.add(await startCli(() => `${HEALTH}${backendsYaml([a, b])}\n`));
    const load = lightLoad(cli.port);
    await waitFor(() => load.statuses.length > 200, 20_000, 'some traffic');

    cli.writeConfig(`${HEALTH}${backendsYaml([a, b, c])}\n`); // add, by rename
    await waitFor(async () => (await backendIds(cli.adminPort)).some((x) => x.id === 'app-3' && x.state === 'up'), 10_000, 'app-3 added and up');
    const afterAdd = load.statuses.length;
    await waitFor(() => load.statuses.length > afterAdd + 200, 20_000, 'traffic after the add');

    cli.overwriteConfig(`${HEALTH}backends:\n  - { id: app-2, url: "${b.url}", weight: 3 }\n  - { id: app-3, url: "${c.url}" }\n`); // remove app-1 and reweight, in place
    await waitFor(async () => {
      const list = await backendIds(cli.adminPort);
      return list.length === 2 && list[0]!.id === 'app-2' && list[0]!.weight === 3;
    }, 10_000, 'app-1 removed and app-2 reweighted');
    const afterRemove = load.statuses.length;
    await waitFor(() => load.statuses.length > afterRemove + 200, 20_000, 'traffic after the removal');
    await load.stop();

    expect(load.statuses.filter((s) => s !== 200)).toEqual([]);
    expect(await reloads(cli.adminPort, 'success')).toBe(2);
    // Clients pinned to app-2 before any reload never moved; app-1's clients moved once, to a survivor.
    for (const [, served] of load.servedBy) {
      const first = served[0]!;
      if (first === 'app-2') expect(new Set(served)).toEqual(new Set(['app-2']));
      if (first === 'app-1') expect(served.at(-1)).not.toBe('app-1');
      // adding app-3 moved no remembered client
      if (first !== 'app-1') expect(served.includes('app-3') && first !== 'app-3').toBe(false);
    }
  });

  it('rejects an invalid file written mid-traffic, keeps serving the old config and counts the failure', async () => {
    const backends = cleanup.add(await startBackends(2));
    const cli = cleanup.add(await startCli(() => `${HEALTH}${backendsYaml(backends)}\n`));
    const load = lightLoad(cli.port);
    cli.writeConfig(`${HEALTH}backends:\n  - { id: app-1, url: "${backends[0]!.url}" }\n  - { id: app-1, url: "not a url" }\ntimeouts: { connect: forever }\n`);
    await waitFor(async () => (await reloads(cli.adminPort, 'failure')) === 1, 10_000, 'the failed reload to be counted');
    const before = load.statuses.length;
    await waitFor(() => load.statuses.length > before + 100, 20_000, 'traffic after the bad write');
    await load.stop();
    expect(load.statuses.filter((s) => s !== 200)).toEqual([]);
    expect((await backendIds(cli.adminPort)).map((x) => x.id)).toEqual(['app-1', 'app-2']);
    const logged = cli.logs.find((l) => l.msg === 'config reload rejected; the previous config keeps serving');
    expect(logged).toBeDefined();
    const errors = (logged!.errors as string[]).join('\n');
    expect(errors).toMatch(/limpet\.yaml:\d+:\d+: backends\[1\]\.url: /);
    expect(errors).toMatch(/limpet\.yaml:\d+:\d+: timeouts\.connect: /);
    expect(await reloads(cli.adminPort, 'success')).toBe(0);
  });

  it('reloads on SIGHUP and reports keys that need a restart', async () => {
    const backends = cleanup.add(await startBackends(2));
    const cli = cleanup.add(await startCli(() => `${HEALTH}${backendsYaml(backends)}\n`));
    cli.child.kill('SIGHUP');
    await waitFor(async () => (await reloads(cli.adminPort, 'success')) === 1, 10_000, 'SIGHUP reload');
    cli.writeConfig(`${HEALTH}workers: 2\n${backendsYaml(backends, 'weight: 5')}\n`);
    await waitFor(async () => (await backendIds(cli.adminPort)).every((x) => x.weight === 5), 10_000, 'weights applied');
    await waitFor(() => cli.logs.some((l) => l.msg === 'config changes that need a restart were not applied' && (l.keys as string[]).includes('workers')), 10_000, 'restart warning');
    expect((await request(cli.port)).status).toBe(200);
  });
});

/** Whether this host lets a test bind-mount a file in a private mount namespace (root, or CAP_SYS_ADMIN). */
const canBindMount = (() => {
  const dir = mkdtempSync(join(tmpdir(), 'limpet-mount-'));
  writeFileSync(join(dir, 'a'), 'a');
  writeFileSync(join(dir, 'b'), 'b');
  const probe = spawnSync('unshare', ['--mount', 'sh', '-c', 'mount --bind "$0/a" "$0/b" && cat "$0/b"', dir], { encoding: 'utf8' });
  return probe.status === 0 && probe.stdout === 'a';
})();

const hasPython = spawnSync('python3', ['--version']).status === 0;

/**
 * Ways a container can be shown one config file, each with the path the test writes (the host's)
 * and the path limpet reads. The content of one inode changes without an event in the folder
 * limpet watches: a folder watch alone never notices.
 */
const SINGLE_FILE_MOUNTS: { name: string; available: boolean; launch: CliLaunch }[] = [
  {
    // `docker run -v ./limpet.yaml:/etc/limpet/limpet.yaml`: the same, in a private mount namespace.
    name: 'a real bind mount of the file (docker -v file:file)',
    available: canBindMount,
    launch: (file) => {
      const seen = join(mkdtempSync(join(tmpdir(), 'limpet-container-')), 'limpet.yaml');
      writeFileSync(seen, '');
      return { command: ['unshare', '--mount', 'sh', '-c', 'mount --bind "$0" "$1" && shift && exec "$@"', file, seen], config: seen };
    },
  },
  {
    // A hard link is the same inode under a parent folder of its own, which is what inotify sees of
    // a bind-mounted file: a write through the host's path is reported to the host's folder only.
    name: 'a hard link in another folder (what inotify sees of a bind mount)',
    available: true,
    launch: (file) => {
      const seen = join(mkdtempSync(join(tmpdir(), 'limpet-container-')), 'limpet.yaml');
      linkSync(file, seen);
      return { command: [], config: seen };
    },
  },
];

describe('hot reload where the folder sees no event', () => {
  for (const mount of SINGLE_FILE_MOUNTS) {
    it(`applies a host write to ${mount.name}`, async (ctx) => {
      // CI runs as root, where unshare --mount works; a developer's machine may not allow it.
      if (!mount.available) ctx.skip(`${CI_CANNOT_RUN}no bind mounts without root (unshare --mount); the hard-link case covers the same event gap`);
      const backends = cleanup.add(await startBackends(2));
      const cli = cleanup.add(await startCli(() => `${HEALTH}${backendsYaml(backends.slice(0, 1))}\n`, undefined, mount.launch));
      // Written in place from the host: `cat > limpet.yaml`, or an editor that keeps the inode.
      cli.overwriteConfig(`${HEALTH}${backendsYaml(backends)}\n`);
      await waitFor(async () => (await backendIds(cli.adminPort)).length === 2, 10_000, 'the added backend in /backends');
      await waitFor(() => cli.logs.some((l) => l.msg === 'config reloaded' && l.reason === 'file'), 10_000, 'the reload logged');
    });
  }

  it('applies a change that raises no file event at all (written through mmap, as on a network filesystem), from the periodic stat', async () => {
    expect(hasPython, 'python3 writes the file through mmap: apt-get install -y python3').toBe(true);
    const backends = cleanup.add(await startBackends(2));
    const cli = cleanup.add(await startCli(() => `${HEALTH}backends:\n  - { id: app-1, url: "${backends[0]!.url}" }\n  - { id: app-2, url: "${backends[1]!.url}" }\n`));
    // Same length, as mmap cannot grow a file; neither the folder nor the file watch hears of it.
    const edit = 'import mmap, sys\nwith open(sys.argv[1], "r+b") as f, mmap.mmap(f.fileno(), 0) as m:\n    at = m.find(b"id: app-2")\n    m[at:at + 9] = b"id: app-9"\n    m.flush()\n';
    expect(spawnSync('python3', ['-c', edit, cli.file]).status).toBe(0);
    expect(readFileSync(cli.file, 'utf8')).toContain('id: app-9');
    await waitFor(async () => (await backendIds(cli.adminPort)).some((b) => b.id === 'app-9'), 10_000, 'app-9 in /backends');
  });

  it('follows a Kubernetes ConfigMap through two symlink swaps', async () => {
    const backends = cleanup.add(await startBackends(3));
    const dir = mkdtempSync(join(tmpdir(), 'limpet-configmap-'));
    // The kubelet's layout: limpet.yaml → ..data/limpet.yaml, ..data → ..<timestamp>, swapped by a rename.
    let version = 0;
    const publish = (text: string) => {
      const data = `..v${++version}`;
      mkdirSync(join(dir, data));
      writeFileSync(join(dir, data, 'limpet.yaml'), text);
      symlinkSync(data, join(dir, '..data_tmp'));
      renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
      if (version > 1) rmSync(join(dir, `..v${version - 1}`), { recursive: true });
    };
    const cli = cleanup.add(await startCli(() => `${HEALTH}${backendsYaml(backends.slice(0, 1))}\n`, undefined, (file) => {
      publish(readFileSync(file, 'utf8'));
      symlinkSync('..data/limpet.yaml', join(dir, 'limpet.yaml'));
      return { command: [], config: join(dir, 'limpet.yaml') };
    }));
    publish(cli.render(`${HEALTH}${backendsYaml(backends.slice(0, 2))}\n`));
    await waitFor(async () => (await backendIds(cli.adminPort)).length === 2, 10_000, 'the first swap applied');
    publish(cli.render(`${HEALTH}${backendsYaml(backends)}\n`));
    await waitFor(async () => (await backendIds(cli.adminPort)).length === 3, 10_000, 'the second swap applied');
  });

  it('says once that the file is gone and once that it is back, keeps serving meanwhile, and applies it when it returns', async () => {
    const backends = cleanup.add(await startBackends(2));
    const cli = cleanup.add(await startCli(() => `${HEALTH}${backendsYaml(backends.slice(0, 1))}\n`));
    const said = (msg: string) => cli.logs.filter((l) => l.msg === msg);
    rmSync(cli.file);
    await waitFor(() => said('config file is gone; the running config stays until it is back').length > 0, 10_000, 'the file to be missed');
    // Another look while it is missing (SIGHUP reads it, and fails) says nothing new about it.
    cli.child.kill('SIGHUP');
    await waitFor(() => said('config reload rejected; the previous config keeps serving').length > 0, 10_000, 'the SIGHUP reload to fail');
    expect((await request(cli.port)).status).toBe(200);
    cli.overwriteConfig(`${HEALTH}${backendsYaml(backends)}\n`);
    await waitFor(async () => (await backendIds(cli.adminPort)).length === 2, 10_000, 'the returned file applied');
    expect(said('config file is gone; the running config stays until it is back')).toHaveLength(1);
    expect(said('config file is back')).toHaveLength(1);
  });
});

describe('graceful shutdown', () => {
  it('lets slow in-flight requests finish on SIGTERM, refuses new connections, and exits 0', async () => {
    let arrived = 0;
    const backends = cleanup.add([
      await startBackend('slow', (req, res, id) => {
        if (req.url === '/health' || req.headers['x-limpet-probe']) return void res.end('ok');
        arrived++;
        setTimeout(() => answerWithId(req, res, id), 1500);
      }),
    ]);
    const cli = cleanup.add(await startCli(() => `${HEALTH}timeouts: { shutdown: 20s }\n${backendsYaml(backends)}\n`));
    const port = cli.port;
    const inflight = Array.from({ length: 5 }, (_, i) => request(port, { localAddress: sourceAddress(i) }));
    await waitFor(() => arrived === 5, 10_000, 'requests to reach the backend');
    cli.child.kill('SIGTERM');
    await waitFor(
      () =>
        request(port).then(
          (res) => Promise.reject(new Error(`a new connection was still answered ${res.status}`)),
          (error: NodeJS.ErrnoException) => error.code === 'ECONNREFUSED' || Promise.reject(error),
        ),
      10_000,
      'new connections to be refused',
    );
    const results = await Promise.all(inflight);
    expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(await cli.exited).toBe(0);
  });
});
