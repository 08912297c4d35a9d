import { afterAll, beforeAll } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { commandFrom } from './debian-packages.js';

type ContextOptions = Omit<NonNullable<Parameters<typeof chromium.launchPersistentContext>[1]>, 'executablePath' | 'headless' | 'args'>;

/**
 * Debian's chromium, headless, driven by playwright-core (no browser is ever downloaded), with a
 * fresh profile for the file's tests: started before them, closed after. Without chromium the tests
 * fail and name the apt-get command that installs it. `context()` is the browser to use.
 */
export function useChromium(options: ContextOptions = {}): { context(): BrowserContext } {
  let context: BrowserContext | undefined;
  let profile: string | undefined;
  beforeAll(async () => {
    profile = await mkdtemp(join(tmpdir(), 'limpet-chromium-'));
    // launchPersistentContext is playwright's way of passing a fresh --user-data-dir.
    context = await chromium.launchPersistentContext(profile, {
      ...options,
      executablePath: commandFrom('chromium'),
      headless: true,
      // QUIC off: the browser speaks HTTP/1.1 or HTTP/2 over TCP, as the proxy does.
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  afterAll(async () => {
    await context?.close();
    if (profile !== undefined) await rm(profile, { recursive: true, force: true });
  });
  return {
    context() {
      if (context === undefined) throw new Error('chromium has not started');
      return context;
    },
  };
}
