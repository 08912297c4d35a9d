import cluster, { type Worker } from 'node:cluster';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import type { LimpetConfig } from './config/load.js';
import { ConfigReloader } from './config-reloader.js';
import { backendState, Limpet, type BackendStateUpdate, type LiveFigures } from './limpet.js';
import { withRuntimeFlags } from './runtime-flags.js';
import { createLogger, type Logger } from './log.js';

type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** Primary → worker. */
type ToWorker =
  | { t: 'init'; config: LimpetConfig; states: BackendStateUpdate[]; pins: [string, string][] }
  | { t: 'state'; update: BackendStateUpdate }
  | { t: 'pins'; pins: [string, string][] }
  | { t: 'reload'; config: LimpetConfig }
  | { t: 'metrics'; id: number }
  | { t: 'stop' };

/** Worker → primary. */
type ToPrimary =
  | { t: 'hello' }
  | { t: 'ready' }
  | { t: 'failed'; id: string; message: string }
  | { t: 'pins'; pins: [string, string][] }
  | { t: 'metrics'; id: number; json: MetricsJson }
  | { t: 'live'; figures: Record<string, LiveFigures> };

/** How often workers send their pins (batched) and their live figures. */
const PIN_FLUSH_MS = 20;
const LIVE_EVERY_MS = 1000;

export function workerCount(config: LimpetConfig): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers;
}

/**
 * The primary of a multi-worker proxy. It serves no traffic: it runs the health checks and passive
 * ejection (one health view), the admin port with metrics aggregated over all workers, and the
 * config reloader, and relays every pin a worker makes to the others, so all workers place every
 * client alike. A worker that dies is replaced and given the current state.
 */
export async function runPrimary(configFromFile: LimpetConfig, file: string, text: string, logger: Logger): Promise<void> {
  // Without a configured secret every worker must still share one, or a cookie one worker set
  // would be refused by the next: the primary makes it, once, for the life of the process.
  const generatedSecret = randomBytes(32).toString('hex');
  const withSecret = (c: LimpetConfig): LimpetConfig =>
    c.affinity.cookie.secret !== '' ? c : { ...c, affinity: { ...c.affinity, cookie: { ...c.affinity.cookie, secret: generatedSecret } } };
  if (configFromFile.affinity.by === 'cookie' && configFromFile.affinity.cookie.secret === '') {
    logger.warn({
      msg: 'affinity.cookie.secret is not set: using a random secret shared by the workers, so affinity cookies will not survive a restart and are not shared with other replicas',
    });
  }
  const config = withSecret(configFromFile);
  const workers = new Set<Worker>();
  const live = new Map<Worker, Record<string, LiveFigures>>();
  const pendingMetrics = new Map<number, { waiting: Set<Worker>; results: MetricsJson[]; done: (r: MetricsJson[]) => void }>();
  let nextMetricsId = 1;
  let stopping = false;

  const send = (worker: Worker, message: ToWorker) => {
    if (worker.isConnected()) worker.send(message);
  };
  const broadcast = (message: ToWorker, except?: Worker) => {
    for (const worker of workers) if (worker !== except) send(worker, message);
  };

  const limpet = await Limpet.start(config, {
    logger,
    role: {
      kind: 'primary',
      broadcastState: (backend) => broadcast({ t: 'state', update: backendState(backend) }),
      workerMetrics: () =>
        new Promise<MetricsJson[]>((resolve) => {
          const id = nextMetricsId++;
          const waiting = new Set([...workers].filter((w) => w.isConnected()));
          if (waiting.size === 0) return resolve([]);
          const entry = { waiting, results: [] as MetricsJson[], done: resolve };
          pendingMetrics.set(id, entry);
          for (const worker of waiting) send(worker, { t: 'metrics', id });
          // A worker that does not answer in time is left out rather than stalling the scrape.
          setTimeout(() => {
            if (pendingMetrics.delete(id)) resolve(entry.results);
          }, 2000).unref();
        }),
      workerLive: (id) => {
        const sum: LiveFigures = { inflight: 0, websockets: 0, requests: 0, errors: 0, remapsIn: 0 };
        for (const figures of live.values()) {
          const f = figures[id];
          if (f === undefined) continue;
          sum.inflight += f.inflight;
          sum.websockets += f.websockets;
          sum.requests += f.requests;
          sum.errors += f.errors;
          sum.remapsIn += f.remapsIn;
        }
        return sum;
      },
    },
  });

  const onMessage = (worker: Worker, message: ToPrimary) => {
    switch (message.t) {
      case 'hello':
        // The worker's handlers are in place (an ESM entry loads asynchronously): now it can be told.
        send(worker, { t: 'init', config: limpet.currentConfig, states: limpet.backendStates(), pins: limpet.pinSnapshot() });
        return;
      case 'ready':
        return;
      case 'failed':
        limpet.recordFailure(message.id, message.message);
        return;
      case 'pins':
        for (const [key, id] of message.pins) limpet.applyPin(key, id);
        broadcast({ t: 'pins', pins: message.pins }, worker);
        return;
      case 'metrics': {
        const entry = pendingMetrics.get(message.id);
        if (entry === undefined) return;
        entry.results.push(message.json);
        entry.waiting.delete(worker);
        if (entry.waiting.size === 0) {
          pendingMetrics.delete(message.id);
          entry.done(entry.results);
        }
        return;
      }
      case 'live':
        live.set(worker, message.figures);
        return;
    }
  };

  const fork = () => {
    const worker = cluster.fork();
    workers.add(worker);
    worker.on('message', (message: ToPrimary) => onMessage(worker, message));
    worker.once('exit', (code, signal) => {
      workers.delete(worker);
      live.delete(worker);
      if (stopping) return;
      logger.error({ msg: 'worker exited; starting a replacement', pid: worker.process.pid, code, signal });
      fork();
    });
  };
  const count = workerCount(config);
  // Set before the first fork; the primary's hand-off is what makes round-robin even, and costly.
  cluster.schedulingPolicy = config.workerBalance === 'kernel' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  // Workers serve the traffic: they get limpet's V8 flags however the primary was started. (After
  // the policy: setupPrimary freezes it.)
  cluster.setupPrimary({ execArgv: withRuntimeFlags(process.execArgv) });
  for (let i = 0; i < count; i++) fork();
  logger.info({ msg: 'workers started', workers: count });

  const reloader = new ConfigReloader(
    file,
    {
      reload: (next) => {
        const needsRestart = limpet.reload(withSecret(next));
        broadcast({ t: 'reload', config: limpet.currentConfig });
        return needsRestart;
      },
    },
    logger,
    limpet.metrics.configReloads,
  );
  reloader.start(text);
  process.on('SIGHUP', () => void reloader.reload('signal'));

  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ msg: 'shutting down', signal, workers: workers.size });
    reloader.stop();
    broadcast({ t: 'stop' });
    const deadline = setTimeout(() => {
      logger.warn({ msg: 'shutdown timeout reached; stopping remaining workers' });
      for (const worker of workers) worker.kill('SIGKILL');
    }, limpet.currentConfig.timeouts.shutdown + 1000);
    deadline.unref();
    const allExited = Promise.all([...workers].map((w) => new Promise((resolve) => (w.isDead() ? resolve(null) : w.once('exit', resolve)))));
    void allExited
      .then(() => limpet.close())
      .then(() => {
        logger.info({ msg: 'stopped' });
        process.exit(0);
      });
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
}

/** A worker: waits for the primary's config and state, then serves traffic until told to stop. */
export function runWorker(): void {
  const toPrimary = (message: ToPrimary) => {
    if (process.connected) process.send?.(message);
  };
  let limpet: Limpet | null = null;
  let pinBatch: [string, string][] = [];
  let flushTimer: NodeJS.Timeout | null = null;
  const flushPins = () => {
    flushTimer = null;
    const pins = pinBatch;
    pinBatch = [];
    toPrimary({ t: 'pins', pins });
  };
  // Signals reach the whole process group; the primary decides when workers stop.
  process.on('SIGINT', () => {});
  process.on('SIGHUP', () => {});
  process.on('message', (message: ToWorker) => {
    void handle(message);
  });
  process.on('disconnect', () => {
    // The primary is gone: finish in-flight work and leave.
    void (limpet?.close() ?? Promise.resolve()).then(() => process.exit(0));
  });
  toPrimary({ t: 'hello' });

  let logger: Logger | null = null;
  async function handle(message: ToWorker): Promise<void> {
    switch (message.t) {
      case 'init': {
        logger = createLogger(message.config.log.level);
        limpet = await Limpet.start(message.config, {
          logger,
          role: {
            kind: 'worker',
            reportFailure: (id, text) => toPrimary({ t: 'failed', id, message: text }),
            reportPin: (key, id) => {
              pinBatch.push([key, id]);
              flushTimer ??= setTimeout(flushPins, PIN_FLUSH_MS);
            },
          },
        });
        for (const update of message.states) limpet.applyBackendState(update);
        for (const [key, id] of message.pins) limpet.applyPin(key, id);
        const current = limpet;
        setInterval(() => toPrimary({ t: 'live', figures: current.liveFigures() }), LIVE_EVERY_MS).unref();
        toPrimary({ t: 'ready' });
        return;
      }
      case 'state':
        limpet?.applyBackendState(message.update);
        return;
      case 'pins':
        if (limpet !== null) for (const [key, id] of message.pins) limpet.applyPin(key, id);
        return;
      case 'reload': {
        const needsRestart = limpet?.reload(message.config);
        logger?.debug({ msg: 'config applied in worker', needsRestart });
        return;
      }
      case 'metrics':
        if (limpet !== null) toPrimary({ t: 'metrics', id: message.id, json: await limpet.metrics.registry.getMetricsAsJSON() });
        return;
      case 'stop':
        if (limpet !== null) {
          const deadline = setTimeout(() => limpet?.closeAllConnections(), limpet.currentConfig.timeouts.shutdown);
          deadline.unref();
          await limpet.close();
        }
        process.exit(0);
    }
  }
}
