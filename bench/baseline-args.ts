import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';

/** The command line the baseline proxies share: `--listen HOST:PORT --backends URL[,URL...]`. */
export function baselineArgs(program: string): { host: string; port: number; backends: string[] } {
  const { values } = parseArgs({ options: { listen: { type: 'string' }, backends: { type: 'string' } } });
  if (values.listen === undefined || values.backends === undefined) {
    process.stderr.write(`usage: ${program} --listen HOST:PORT --backends URL[,URL...]\n`);
    process.exit(2);
  }
  const separator = values.listen.lastIndexOf(':');
  return {
    host: values.listen.slice(0, separator),
    port: Number(values.listen.slice(separator + 1)),
    backends: values.backends.split(',').map((url) => url.trim()).filter((url) => url !== ''),
  };
}

/** Listens, then prints `listening http://HOST:PORT`, the line the harness waits for. */
export function listenAndAnnounce(server: Server, host: string, port: number): void {
  server.listen(port, host, () => {
    const address = server.address() as AddressInfo;
    process.stdout.write(`listening http://${address.address}:${address.port}\n`);
  });
}

/** The harness stops baselines with SIGTERM (or the operator with Ctrl-C): exit at once. */
export function exitOnStopSignals(): void {
  const stop = () => process.exit(0);
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
