import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { backendsYaml, startBackends } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { waitFor } from './support/client.js';
import { startCli, type CliProxy } from './support/cli.js';
import { startProxy } from './support/proxy.js';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';

const cleanup = useCleanup();

/** The arguments a running process was started with. */
function commandLine(pid: number): string[] {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((arg) => arg !== '');
}

function childPids(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).flatMap((task) =>
    readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number));
}

const warning = (p: CliProxy) => p.logs.find((line) => String(line.msg).startsWith('started without'));

describe('runtime flags (--no-memory-reducer)', () => {
  it('every launcher passes them: the limpet command, npm start and demo, and the container', () => {
    const flags = RUNTIME_FLAGS.join(' ');
    expect(readFileSync('src/cli.ts', 'utf8').split('\n', 1)[0]).toBe(`#!/usr/bin/env -S node ${flags}`);
    const scripts = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts;
    expect(scripts.start).toContain(`node ${flags} dist/src/cli.js`);
    expect(scripts.demo).toContain(`node ${flags} dist/src/cli.js`);
    expect(readFileSync('Dockerfile', 'utf8')).toContain(`ENTRYPOINT ["node", ${RUNTIME_FLAGS.map((f) => `"${f}"`).join(', ')}, "dist/src/cli.js"]`);
  });

  it('a single process started without them says so, and one started with them does not', async () => {
    const backends = cleanup.add(await startBackends(1));
    const without = cleanup.add(await startCli(() => `${backendsYaml(backends)}\n`, []));
    const said = await waitFor(() => warning(without), 10_000, 'the warning');
    expect(said.level).toBe('warn');
    expect(String(said.msg)).toContain('--no-memory-reducer');
    await without.stop();

    const withFlags = cleanup.add(await startCli(() => `${backendsYaml(backends)}\n`));
    expect(commandLine(withFlags.child.pid!)).toContain('--no-memory-reducer');
    expect(warning(withFlags)).toBeUndefined();
  });

  it('cluster workers get them even when the primary was started without', async () => {
    const backends = cleanup.add(await startBackends(1));
    const proxy = cleanup.add(await startCli(() => `workers: 2\n${backendsYaml(backends)}\n`, []));
    const workers = await waitFor(() => {
      const pids = childPids(proxy.child.pid!);
      return pids.length === 2 ? pids : undefined;
    }, 10_000, 'two workers');
    for (const pid of workers) expect(commandLine(pid)).toContain('--no-memory-reducer');
    expect(commandLine(proxy.child.pid!)).not.toContain('--no-memory-reducer');
  });
});

describe('the container', () => {
  /** The HEALTHCHECK's command, read from the Dockerfile as docker reads it (exec form, a JSON array). */
  function healthCheckCommand(): string[] {
    const dockerfile = readFileSync('Dockerfile', 'utf8').replace(/\\\n\s*/g, '');
    const line = dockerfile.split('\n').find((l) => l.startsWith('HEALTHCHECK '));
    expect(line, 'a HEALTHCHECK instruction').toBeDefined();
    const command = /\sCMD (\[.*\])$/.exec(line!)?.[1];
    expect(command, 'HEALTHCHECK ... CMD [exec form]').toBeDefined();
    return JSON.parse(command!) as string[];
  }

  it('checks itself with node alone (no curl in the slim image): GET /healthz on the admin port, LIMPET_ADMIN_PORT or 9090', async () => {
    const [program, flag, code] = healthCheckCommand();
    expect([program, flag]).toEqual(['node', '-e']);
    expect(code).toContain("'/healthz'");
    expect(code).toContain('process.env.LIMPET_ADMIN_PORT || 9090');
    // Run as docker would, from a folder whose package.json says "type": "module", like /app.
    // Not spawnSync: the admin server answering it runs in this process.
    const check = (adminPort: number) =>
      new Promise<number | null>((resolve) => spawn(process.execPath, ['-e', code!], { env: { ...process.env, LIMPET_ADMIN_PORT: String(adminPort) } }).on('exit', resolve));
    const backends = cleanup.add(await startBackends(1));
    const { limpet } = await startProxy(backendsYaml(backends));
    const adminPort = limpet.adminAddress.port;
    try {
      expect(await check(adminPort)).toBe(0);
    } finally {
      await limpet.close();
    }
    expect(await check(adminPort)).toBe(1);
  });
});
