import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { backendsYaml, startBackends } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { waitFor } from './support/client.js';
import { startCli, type CliProxy } from './support/cli.js';
import { RUNTIME_FLAGS } from '../src/runtime-flags.js';

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
