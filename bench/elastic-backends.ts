// The backends of bench/elastic.ts as a process of their own:
//   node dist/bench/elastic-backends.js [count]
// Prints one line {"backends":[{"id":"b1","origin":"http://127.0.0.1:…"},…]} once all listen; exits
// when stdin closes (the benchmark holds the other end) or on SIGTERM.
import { serveFleetBackends } from './elastic-fleet.js';

const count = Number(process.argv[2] ?? 5);
if (!Number.isInteger(count) || count < 1) {
  process.stderr.write(`elastic-backends: count must be a positive integer, got "${process.argv[2]}"\n`);
  process.exit(2);
}
const backends = await serveFleetBackends(count);
process.stdout.write(`${JSON.stringify({ backends })}\n`);
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.resume();
