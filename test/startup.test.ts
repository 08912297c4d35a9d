import { afterEach, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:net';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCliToExit } from './support/cli.js';
import { freePort } from './support/ports.js';

/**
 * Start-up is all or nothing: when any listener cannot bind, limpet exits non-zero with one line
 * naming the address and the setting it came from — no stack trace, and no process left serving
 * half of what it was configured for.
 */
const held: Server[] = [];

afterEach(async () => {
  await Promise.all(held.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
});

/** Takes a loopback port the way another program would: bound and listening. */
async function occupy(port = 0): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  held.push(server);
  return (server.address() as { port: number }).port;
}

async function bindable(port: number): Promise<boolean> {
  const server = createServer();
  return new Promise((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

function configFile(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'limpet-startup-')), 'limpet.yaml');
  writeFileSync(file, text);
  return file;
}

describe.each([1, 2])('workers: %i, a port already taken', (workers) => {
  it.each(['listen', 'admin.listen'])('on %s: exits 1 with one line naming it, and no stack trace', async (setting) => {
    const taken = await occupy();
    const free = await freePort();
    const [port, adminPort] = setting === 'listen' ? [taken, free] : [free, taken];
    const file = configFile(
      `listen: 127.0.0.1:${port}\nworkers: ${workers}\nadmin: { listen: "127.0.0.1:${adminPort}" }\nbackends: [{ id: a, url: "http://127.0.0.1:1" }]\n`,
    );
    const run = await runCliToExit(['--config', file]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`limpet: cannot listen on 127.0.0.1:${taken} (${setting}): address already in use\n`);
  });
});

describe('limpet demo', () => {
  it('with its status page port (--port + 1010) taken, exits 1 with one line naming it, and no stack trace', async () => {
    // A demo port whose proxy ports are free and whose status page port is held by someone else.
    let port = 0;
    for (let attempt = 0; port === 0 && attempt < 20; attempt++) {
      const candidate = await freePort();
      if (candidate + 1010 > 65535 || !(await bindable(candidate + 1))) continue;
      if (await occupy(candidate + 1010).then(() => true, () => false)) port = candidate;
    }
    expect(port, 'found free demo ports').toBeGreaterThan(0);
    const run = await runCliToExit(['demo', '--port', String(port)]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`limpet: cannot listen on 127.0.0.1:${port + 1010} (the demo status page: --port + 1010): address already in use\n`);
    expect(run.stdout).toBe('');
  });
});
