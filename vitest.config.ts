import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Real servers and sockets: give slow CI machines room; tests wait on conditions, not on time.
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Tests bind many loopback ports and some spawn processes; two files at a time suit 2 cores.
    maxWorkers: 2,
    // A test that did not run fails the run (see the reporter for the one exception).
    reporters: ['default', './test/support/fail-on-skip-reporter.ts'],
  },
});
