import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

/** The backend and client of bench/bulk-peer.mjs, driven over its stdin and stdout. */
export interface BulkPeer {
  readonly child: ChildProcess;
  /** Its backend's origin. */
  readonly backend: string;
  /** Uploads or downloads `bytes` through `origin`; resolves with the count the other end saw. */
  transfer(what: 'upload' | 'download', origin: string, bytes: number): Promise<number>;
}

/** Starts bench/bulk-peer.mjs (`script`: its path) in a process of its own. */
export async function startBulkPeer(script: string): Promise<BulkPeer> {
  const child = spawn(process.execPath, [script], { stdio: ['pipe', 'pipe', 'inherit'] });
  const waiting: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => waiting.shift()?.(line));
  const next = () => new Promise<string>((resolve) => waiting.push(resolve));
  const port = Number((await next()).split(' ')[1]);
  return {
    child,
    backend: `http://127.0.0.1:${port}`,
    transfer: async (what, origin, bytes) => {
      const answer = next();
      child.stdin!.write(`${what} ${origin} ${bytes}\n`);
      const [word, count] = (await answer).split(' ');
      if (word !== 'done') throw new Error(`${what} failed: ${count}`);
      return Number(count);
    },
  };
}
