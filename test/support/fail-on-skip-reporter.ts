import { relative } from 'node:path';
import type { Reporter, TestCase, TestModule, Vitest } from 'vitest/node';

/**
 * How a test that CI cannot run says so: it skips itself with a note that starts with this and goes
 * on to say why, e.g. `ctx.skip(`${CI_CANNOT_RUN}needs two network interfaces`)`.
 */
export const CI_CANNOT_RUN = 'CI cannot run this: ';

/**
 * Fails the run when any test did not run (it.skip, describe.skipIf, a runtime ctx.skip, it.todo,
 * or another test's .only), so a skip never leaves the suite green by accident: the only skip it
 * lets through is one whose note starts with CI_CANNOT_RUN. A run narrowed with -t leaves tests out
 * on purpose, and is not checked.
 */
export default class FailOnSkipReporter implements Reporter {
  private vitest: Vitest | undefined;

  onInit(vitest: Vitest): void {
    this.vitest = vitest;
  }

  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const vitest = this.vitest!;
    if (vitest.config.testNamePattern !== undefined) return;
    const notRun: string[] = [];
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const result = test.result();
        if (result.state !== 'skipped' || result.note?.startsWith(CI_CANNOT_RUN) || insideFailed(test)) continue;
        const how = test.options.mode === 'run' ? 'skipped itself' : test.options.mode;
        const why = result.note === undefined ? how : `${how}: ${result.note}`;
        notRun.push(`  ${relative(vitest.config.root, module.moduleId)} > ${test.fullName} (${why})`);
      }
    }
    if (notRun.length === 0) return;
    vitest.logger.error(
      `\n${notRun.length} test(s) did not run, and a skipped test fails the run unless it skips itself with a note starting "${CI_CANNOT_RUN}":\n${notRun.join('\n')}\n`,
    );
    process.exitCode = 1;
  }
}

/** A test left unrun because a hook of its suite (or its file) failed: that failure already fails the run. */
function insideFailed(test: TestCase): boolean {
  for (let parent = test.parent; ; parent = parent.parent) {
    if (parent.state() === 'failed') return true;
    if (parent.type === 'module') return false;
  }
}
