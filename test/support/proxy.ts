import { Writable } from 'node:stream';
import { parseConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observe/log.js';
import { Limpet } from '../../src/limpet.js';

/** Collected JSON log lines of an in-process proxy. */
export class LogCapture extends Writable {
  readonly lines: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) this.lines.push(JSON.parse(line) as Record<string, unknown>);
    done();
  }
}

/** Starts a real proxy in this process on an ephemeral loopback port from a YAML snippet. */
export async function startProxy(yaml: string, level: 'debug' | 'info' | 'warn' | 'error' = 'warn'): Promise<{ limpet: Limpet; port: number; logs: LogCapture }> {
  const admin = /^admin:/m.test(yaml) ? '' : 'admin: { listen: "127.0.0.1:0" }\n';
  const text = `listen: 127.0.0.1:0\n${admin}${yaml}`;
  const config = parseConfig(text, 'test.yaml', {});
  const logs = new LogCapture();
  const limpet = await Limpet.start(config, { logger: createLogger(level, logs) });
  return { limpet, port: limpet.address.port, logs };
}
