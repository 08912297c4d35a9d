import { afterEach } from 'vitest';

/** Anything a test starts and must end: a proxy, a backend, a CLI process, a client. */
export type Closeable = { close(): unknown } | { stop(): unknown } | { kill(): unknown };

/** What a test registered to be ended after it, whether it passed or failed. */
export interface Cleanup {
  /**
   * Ends `things` after the test, last registered first (so a proxy closes before its backends):
   * `stop()` a CLI proxy, `close()` a proxy, backend or client, `kill()` a backend process, or call
   * a function. Returns what it was given, so a test can register what it starts in one line.
   */
  add<T extends Closeable | readonly Closeable[] | (() => unknown)>(things: T): T;
}

/**
 * The one `afterEach` that ends what the file's tests started. Call it once at the top of a test
 * file (or of a describe block); every step runs even when an earlier one throws, and the first
 * error fails the test.
 */
export function useCleanup(): Cleanup {
  const steps: (() => unknown)[] = [];
  afterEach(async () => {
    const errors: unknown[] = [];
    for (const step of steps.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `${errors.length} cleanup steps failed`);
  });
  return {
    add(things) {
      if (typeof things === 'function') steps.push(things);
      else for (const thing of Array.isArray(things) ? things : [things]) steps.push(() => end(thing as Closeable));
      return things;
    },
  };
}

function end(thing: Closeable): unknown {
  if ('stop' in thing) return thing.stop();
  if ('close' in thing) return thing.close();
  return thing.kill();
}
