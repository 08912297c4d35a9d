import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import type { LimpetConfig } from '../config/schema.js';
import { ListenError } from '../errors.js';
import { Limpet } from '../limpet.js';
import { addLiveFigures, emptyLiveFigures, type LiveFigures } from '../observe/live-figures.js';
import type { Logger } from '../observe/log.js';
import type { ProxyMetrics } from '../observe/metrics.js';
import type { ProcessRole } from '../runtime/roles.js';
import { workerCount } from '../runtime/settings.js';
import { withRuntimeFlags } from '../runtime/runtime-flags.js';
import { supervise } from '../runtime/supervise.js';
import type { MetricsJson, ToPrimary, ToWorker } from './messages.js';

/** A worker that does not answer a metrics request in time is left out rather than stalling the scrape. */
const METRICS_WAIT_MS = 2000;


/**
 * The workers as the primary sees them: it talks to them, relays what one learns to the others,
 * and answers for them on the admin port (their metrics, their live figures).
 */
class Workers {
  private readonly all = new Set<Worker>();
  private readonly live = new Map<Worker, Record<string, LiveFigures>>();
  private readonly pendingMetrics = new Map<number, { waiting: Set<Worker>; results: MetricsJson[]; done: (r: MetricsJson[]) => void }>();
  private nextMetricsId = 1;

  get size(): number {
    return this.all.size;
  }

  add(worker: Worker): void {
    this.all.add(worker);
  }

  remove(worker: Worker): void {
    this.all.delete(worker);
    this.live.delete(worker);
  }

  send(worker: Worker, message: ToWorker): void {
    if (worker.isConnected()) worker.send(message);
  }

  broadcast(message: ToWorker, except?: Worker): void {
    for (const worker of this.all) if (worker !== except) this.send(worker, message);
  }

  /** Live figures of one backend summed over the workers. */
  liveOf(id: string): LiveFigures {
    const sum = emptyLiveFigures();
    for (const figures of this.live.values()) {
      const own = figures[id];
      if (own !== undefined) addLiveFigures(sum, own);
    }
    return sum;
  }

  setLive(worker: Worker, figures: Record<string, LiveFigures>): void {
    this.live.set(worker, figures);
  }

  /** Every worker's metrics, for one aggregated /metrics. */
  metrics(): Promise<MetricsJson[]> {
    return new Promise<MetricsJson[]>((resolve) => {
      const id = this.nextMetricsId++;
      const waiting = new Set([...this.all].filter((w) => w.isConnected()));
      if (waiting.size === 0) return resolve([]);
      const entry = { waiting, results: [] as MetricsJson[], done: resolve };
      this.pendingMetrics.set(id, entry);
      for (const worker of waiting) this.send(worker, { t: 'metrics', id });
      setTimeout(() => {
        if (this.pendingMetrics.delete(id)) resolve(entry.results);
      }, METRICS_WAIT_MS).unref();
    });
  }

  metricsArrived(worker: Worker, id: number, json: MetricsJson): void {
    const entry = this.pendingMetrics.get(id);
    if (entry === undefined) return;
    entry.results.push(json);
    entry.waiting.delete(worker);
    if (entry.waiting.size > 0) return;
    this.pendingMetrics.delete(id);
    entry.done(entry.results);
  }

  /** Resolves when every worker has exited. */
  exited(): Promise<unknown> {
    return Promise.all([...this.all].map((w) => new Promise((resolve) => (w.isDead() ? resolve(null) : w.once('exit', resolve)))));
  }

  kill(): void {
    for (const worker of this.all) worker.kill('SIGKILL');
  }
}

/** The primary's part: the one health view and the admin port; no traffic. */
function primaryRole(workers: Workers): ProcessRole {
  return {
    servesTraffic: false,
    decidesHealth: true,
    behaviour: (local) => ({
      // Workers report their failures (failureReported); the primary sees no traffic of its own.
      failureSeen: (backend) => local.passive.recordFailure(backend, Date.now()),
      backendChanged: (backend, change) => {
        // Workers retire removed backends by applying the same reload.
        if (change !== 'retired') workers.broadcast({ t: 'state', update: { id: backend.id, ...backend.health } });
      },
      // The primary resolves for all: workers apply what it found, so every worker has the same set.
      backendsApplied: (backends) => workers.broadcast({ t: 'backends', backends }),
      pinWritten: null,
      pinsLearnt: (pins) => workers.broadcast({ t: 'pins', pins }),
      live: (backend) => workers.liveOf(backend.id),
      exposition: () => aggregateMetrics(local.metrics, workers),
      movesPerSecond: () => 0,
    }),
  };
}

async function aggregateMetrics(own: ProxyMetrics, workers: Workers): Promise<string> {
  const mine = await own.registry.getMetricsAsJSON();
  return AggregatorRegistry.aggregate([mine, ...(await workers.metrics())]).metrics();
}

/**
 * The primary of a multi-worker proxy. It serves no traffic: it runs the health checks and passive
 * ejection (one health view), the admin port with metrics aggregated over all workers, and the
 * config reloader, and relays every pin a worker makes to the others, so all workers place every
 * client alike. A worker that dies once serving is replaced and given the current state. One that
 * cannot start (its port is taken) stops the whole proxy during start-up, which resolves only once
 * every worker serves; later, it is not replaced, so a broken start cannot fork in a loop.
 */
export async function runPrimary(configFromFile: LimpetConfig, file: string, text: string, logger: Logger): Promise<void> {
  const workers = new Workers();
  let stopping = false;
  // Its config carries the secret the primary drew when none is configured, so every worker shares
  // it: otherwise a cookie one worker set would be refused by the next.
  const limpet = await Limpet.start(configFromFile, { logger, role: primaryRole(workers) });
  const count = workerCount(limpet.currentConfig);

  // All or nothing: start-up ends when every worker serves, or fails when one cannot start (its
  // port is taken), since a replacement would fail alike and the primary would fork forever.
  const serving = new Set<Worker>();
  /** Why a worker that never served could not start, when it said so (a ListenError). */
  const startErrors = new Map<Worker, Error>();
  let startedUp = false;
  let startup!: { resolve(): void; reject(error: Error): void };
  const allServing = new Promise<void>((resolve, reject) => (startup = { resolve, reject }));

  const onMessage = (worker: Worker, message: ToPrimary) => {
    switch (message.t) {
      case 'ready':
        serving.add(worker);
        if (serving.size === count) startup.resolve();
        return;
      case 'listenFailed':
        startErrors.set(worker, new ListenError(message.host, message.port, message.setting, Object.assign(new Error(message.reason), { code: message.code })));
        worker.kill();
        return;
      case 'hello':
        // The worker's handlers are in place (an ESM entry loads asynchronously): now it can be told.
        workers.send(worker, { t: 'init', config: limpet.currentConfig, backends: limpet.backendSettings, states: limpet.healthUpdates(), pins: limpet.pinSnapshot() });
        return;
      case 'failed':
        limpet.failureReported(message.id, message.message);
        return;
      case 'pins':
        for (const [key, id] of message.pins) limpet.adoptPin(key, id);
        workers.broadcast({ t: 'pins', pins: message.pins }, worker);
        return;
      case 'metrics':
        workers.metricsArrived(worker, message.id, message.json);
        return;
      case 'live':
        workers.setLive(worker, message.figures);
        return;
    }
  };

  const fork = () => {
    const worker = cluster.fork();
    workers.add(worker);
    worker.on('message', (message: ToPrimary) => onMessage(worker, message));
    worker.once('exit', (code, signal) => {
      workers.remove(worker);
      const served = serving.delete(worker);
      if (stopping) return;
      if (served) {
        logger.error({ msg: 'worker exited; starting a replacement', pid: worker.process.pid, code, signal });
        return fork();
      }
      const error = startErrors.get(worker) ?? new Error(`a worker exited while starting (code ${code}, signal ${signal})`);
      startErrors.delete(worker);
      if (startedUp) {
        // The others serve on; replacing a worker that cannot start would only fork in a loop.
        logger.error({ msg: 'a replacement worker could not start; not replacing it', error: error.message });
        return;
      }
      stopping = true;
      workers.kill();
      startup.reject(error);
    });
  };
  // Set before the first fork; the primary's hand-off is what makes round-robin even, and costly.
  cluster.schedulingPolicy = limpet.currentConfig.workerBalance === 'kernel' ? cluster.SCHED_NONE : cluster.SCHED_RR;
  // Workers serve the traffic: they get limpet's V8 flags however the primary was started. (After
  // the policy: setupPrimary freezes it.)
  cluster.setupPrimary({ execArgv: withRuntimeFlags(process.execArgv) });
  for (let i = 0; i < count; i++) fork();
  try {
    await allServing;
  } catch (error) {
    await workers.exited();
    await limpet.close();
    throw error;
  }
  startedUp = true;
  logger.info({ msg: 'workers started', workers: count });

  supervise(file, text, logger, limpet.metrics.configReloads, {
    reload: (next) => {
      const needsRestart = limpet.reload(next);
      workers.broadcast({ t: 'reload', config: limpet.currentConfig, backends: limpet.backendSettings });
      return needsRestart;
    },
    stopFields: () => ({ workers: workers.size }),
    stopPlan: () => {
      stopping = true;
      workers.broadcast({ t: 'stop' });
      return {
        // Workers have the shutdown timeout themselves; past it and a second more they are killed.
        deadline: limpet.currentConfig.timeouts.shutdown + 1000,
        atDeadline: () => workers.kill(),
        stop: () => workers.exited().then(() => limpet.close()),
      };
    },
  });
}
