import { spawn, type ChildProcess } from 'node:child_process';
import { RUNTIME_FLAGS } from '../../src/runtime/runtime-flags.js';
import { mkdtempSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './ports.js';
import { request, waitFor } from './client.js';

/** The real `limpet` CLI in a child process, with its config in a temp folder the test may rewrite. */
export interface CliProxy {
  child: ChildProcess;
  port: number;
  adminPort: number;
  file: string;
  logs: Record<string, unknown>[];
  exited: Promise<number | null>;
  /** Replaces the config the way editors and ConfigMaps do: write a temp file, rename it over. */
  writeConfig(body: string): void;
  /** Rewrites the config in place, like `sed -i`-less tools and `>` redirection. */
  overwriteConfig(body: string): void;
  /** The whole config text for `body`: the ports this proxy listens on, then `body`. */
  render(body: string): string;
  stop(): Promise<void>;
  /** SIGKILL, as a crash or an OOM kill: nothing is closed or written on the way out. Resolves once it is gone. */
  kill(): Promise<void>;
  /** Starts limpet again on the same config file and ports, once this one has exited. */
  restart(): Promise<CliProxy>;
}

/**
 * How limpet is started and which path it reads: by default node itself, given the file the test
 * writes. `launch` wraps that, e.g. to show limpet the file through a bind mount at another path.
 */
export type CliLaunch = (file: string) => { command: string[]; config: string };

/** `nodeArgs`: flags for node before the script; by default limpet's runtime flags, as the `limpet` command passes them. */
export async function startCli(
  body: (ports: { port: number; adminPort: number }) => string,
  nodeArgs: readonly string[] = RUNTIME_FLAGS,
  launch: CliLaunch = (file) => ({ command: [], config: file }),
): Promise<CliProxy> {
  const port = await freePort();
  const adminPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'limpet-cli-'));
  const file = join(dir, 'limpet.yaml');
  const text = body({ port, adminPort });
  const header = `listen: 127.0.0.1:${port}\nadmin: { listen: "127.0.0.1:${adminPort}" }\n${/^log:/m.test(text) ? '' : 'log: { level: info }\n'}`;
  writeFileSync(file, header + text);
  return launchCli({ port, adminPort, dir, file, header }, nodeArgs, launch);
}

/** Where a CLI proxy lives: its ports and its config file, the same across restarts. */
interface CliPlace {
  port: number;
  adminPort: number;
  dir: string;
  file: string;
  header: string;
}

async function launchCli(place: CliPlace, nodeArgs: readonly string[], launch: CliLaunch): Promise<CliProxy> {
  const { port, adminPort, dir, file, header } = place;
  const { command, config } = launch(file);
  const [program, ...args] = [...command, process.execPath, ...nodeArgs, 'dist/src/cli.js', '--config', config];
  const child = spawn(program!, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const logs: Record<string, unknown>[] = [];
  let partial = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    partial += chunk.toString('utf8');
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  try {
    await waitFor(async () => (await request(adminPort, { path: '/healthz' })).status === 200, 15_000, 'limpet to start');
    // With workers the primary answers the admin port first; wait until the proxy port serves too.
    await waitFor(() => request(port, { path: '/', headers: { 'x-limpet-probe': '1' } }), 15_000, 'the proxy port');
  } catch (error) {
    // Not returned, so no test can stop it: it must not outlive the failure (its workers follow it).
    child.kill('SIGKILL');
    throw error;
  }
  let version = 0;
  return {
    child,
    port,
    adminPort,
    file,
    logs,
    exited,
    writeConfig(next: string) {
      const temp = join(dir, `.limpet.yaml.${version++}`);
      writeFileSync(temp, header + next);
      renameSync(temp, file);
    },
    overwriteConfig(next: string) {
      writeFileSync(file, header + next);
    },
    render(next: string) {
      return header + next;
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
    async restart() {
      await exited;
      return launchCli(place, nodeArgs, launch);
    },
  };
}

/** What a `limpet` run that ends by itself (a failed start, `--check`) left behind. */
export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs the real CLI with `args` until it exits. A run still going after `timeoutMs` is killed and
 * the wait fails: the cases this serves end on their own, and hanging is the bug they look for.
 */
export async function runCliToExit(args: readonly string[], timeoutMs = 20_000): Promise<CliRun> {
  const child = spawn(process.execPath, [...RUNTIME_FLAGS, 'dist/src/cli.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  let code: number | null | undefined;
  child.on('close', (exitCode) => (code = exitCode));
  try {
    await waitFor(() => code !== undefined, timeoutMs, `limpet ${args.join(' ')} to exit`);
  } finally {
    // Workers of a killed primary see it disconnect and stop by themselves.
    if (code === undefined) child.kill('SIGKILL');
  }
  return { code: code ?? null, stdout, stderr };
}
