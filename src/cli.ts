#!/usr/bin/env -S node --no-memory-reducer
import { parseArgs } from 'node:util';
import { readFileSync } from 'node:fs';
import cluster from 'node:cluster';
import { ConfigError, configWarningsLog, formatConfigIssues, readConfigFile } from './config/load.js';
import { runPrimary } from './cluster/primary.js';
import { workerCount } from './runtime/settings.js';
import { runWorker } from './cluster/worker.js';
import { createLogger } from './observe/log.js';
import { Limpet } from './limpet.js';
import { runDemo } from './demo.js';
import { LimpetError } from './errors.js';
import { missingRuntimeFlags } from './runtime/runtime-flags.js';
import { supervise } from './runtime/supervise.js';

const USAGE = `Usage:
  limpet [--config FILE]          run the proxy (default config: config/limpet.yaml)
  limpet --check [--config FILE]  validate a config file: exit 0, or 1 with every error listed
  limpet demo [--port PORT]       three demo backends behind the proxy, with commands to try
  limpet --help | --version`;

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c', default: 'config/limpet.yaml' },
        check: { type: 'boolean', default: false },
        port: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
        version: { type: 'boolean', short: 'v', default: false },
      },
    });
  } catch (error) {
    process.stderr.write(`limpet: ${(error as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (values.version) {
    process.stdout.write(`${packageVersion()}\n`);
    return 0;
  }
  if (positionals[0] === 'demo') {
    const port = values.port === undefined ? 8080 : Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      process.stderr.write(`limpet: --port must be a port number, got "${values.port}"\n`);
      return 2;
    }
    await runDemo(port);
    return -1;
  }
  if (positionals.length > 0) {
    process.stderr.write(`limpet: unknown command "${positionals[0]}"\n${USAGE}\n`);
    return 2;
  }
  const file = values.config as string;
  let config;
  let text;
  let warnings;
  try {
    ({ config, text, warnings } = await readConfigFile(file));
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    process.stderr.write(`${formatConfigIssues(error.issues)}\n`);
    process.stderr.write(`limpet: ${file}: ${error.issues.length} error${error.issues.length === 1 ? '' : 's'}\n`);
    return 1;
  }
  if (values.check) {
    if (warnings.length > 0) process.stderr.write(`${formatConfigIssues(warnings, 'warning')}\n`);
    const warned = warnings.length === 0 ? '' : `; ${warnings.length} warning${warnings.length === 1 ? '' : 's'}`;
    const listed = config.backends.filter((entry) => 'id' in entry).length;
    const names = config.backends.length - listed;
    const resolved = names === 0 ? '' : ` and ${names} DNS name${names === 1 ? '' : 's'}`;
    process.stdout.write(`limpet: ${file}: ok (${listed} backend${listed === 1 ? '' : 's'}${resolved}, affinity by ${config.affinity.by}${warned})\n`);
    return 0;
  }
  const logger = createLogger(config.log.level);
  if (warnings.length > 0) logger.warn(configWarningsLog(file, warnings));
  const workers = workerCount(config);
  // Cluster workers get the flags from the primary (runPrimary); a single process has only its own.
  const missing = missingRuntimeFlags();
  if (missing.length > 0 && workers === 1) {
    logger.warn({
      msg: `started without ${missing.join(' ')}: throughput can halve after an idle minute; start with the limpet command, or node ${missing.join(' ')} dist/src/cli.js`,
    });
  }
  if (workers > 1) {
    await runPrimary(config, file, text, logger);
    return -1;
  }
  const limpet = await Limpet.start(config, { logger });
  supervise(file, text, logger, limpet.metrics.configReloads, {
    reload: (next) => limpet.reload(next),
    stopFields: () => ({ inflight: limpet.backends.reduce((n, b) => n + b.inflight, 0) }),
    stopPlan: () => ({ deadline: limpet.currentConfig.timeouts.shutdown, atDeadline: () => limpet.closeAllConnections(), stop: () => limpet.close() }),
  });
  return -1;
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

if (cluster.isWorker) runWorker();
else main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (error: unknown) => {
    // limpet's own errors (a port in use) are one line meant for the operator; anything else is a bug, with its stack.
    const text = error instanceof LimpetError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error);
    process.stderr.write(`limpet: ${text}\n`);
    process.exitCode = 1;
  },
);
