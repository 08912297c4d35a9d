import { spawn, type ChildProcess } from 'node:child_process';
import { RUNTIME_FLAGS } from '../../src/runtime-flags.js';
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
  stop(): Promise<void>;
}

/** `nodeArgs`: flags for node before the script; by default limpet's runtime flags, as the `limpet` command passes them. */
export async function startCli(
  body: (ports: { port: number; adminPort: number }) => string,
  nodeArgs: readonly string[] = RUNTIME_FLAGS,
): Promise<CliProxy> {
  const port = await freePort();
  const adminPort = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'limpet-cli-'));
  const file = join(dir, 'limpet.yaml');
  const text = body({ port, adminPort });
  const header = `listen: 127.0.0.1:${port}\nadmin: { listen: "127.0.0.1:${adminPort}" }\n${/^log:/m.test(text) ? '' : 'log: { level: info }\n'}`;
  writeFileSync(file, header + text);
  const child = spawn(process.execPath, [...nodeArgs, 'dist/src/cli.js', '--config', file], { stdio: ['ignore', 'pipe', 'inherit'] });
  const logs: Record<string, unknown>[] = [];
  let partial = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    partial += chunk.toString('utf8');
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) if (line.trim()) logs.push(JSON.parse(line) as Record<string, unknown>);
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  await waitFor(async () => (await request(adminPort, { path: '/healthz' })).status === 200, 15_000, 'limpet to start');
  // With workers the primary answers the admin port first; wait until the proxy port serves too.
  await waitFor(() => request(port, { path: '/', headers: { 'x-limpet-probe': '1' } }), 15_000, 'the proxy port');
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
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}
