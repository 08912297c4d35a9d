import { parseArgs } from 'node:util';

/** The command line both baseline proxies share: `--listen HOST:PORT --backends URL[,URL...]`. */
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
