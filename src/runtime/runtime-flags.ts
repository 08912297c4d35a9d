/**
 * V8 flags every limpet process runs with: the `limpet` command, `npm start`, the container and
 * cluster workers pass them; a process started without them says so at start-up.
 *
 * `--no-memory-reducer`: after about a minute without traffic V8's memory reducer shrinks the heap
 * and leaves the old generation's limit just above the live data. Under load again, every few MB
 * of promoted response buffers then triggers a full mark-compact (57 in 2 s against 3 when warm),
 * and 100 KB responses ran at 55–60 % of their warm rate for as long as it was measured (16 s of
 * load after a 60 s pause). A proxy's heap is a few tens of MB; keeping it is the cheaper side.
 */
export const RUNTIME_FLAGS: readonly string[] = ['--no-memory-reducer'];

/** `execArgv` plus whichever runtime flags it lacks, for processes limpet starts itself. */
export function withRuntimeFlags(execArgv: readonly string[]): string[] {
  return [...execArgv, ...missingRuntimeFlags(execArgv)];
}

/** The runtime flags a process was started without. */
export function missingRuntimeFlags(execArgv: readonly string[] = process.execArgv): string[] {
  return RUNTIME_FLAGS.filter((flag) => !execArgv.includes(flag));
}
