import { ListenError } from '../errors.js';
import { Limpet } from '../limpet.js';
import { createLogger } from '../observe/log.js';
import type { ProcessRole } from '../runtime/roles.js';
import { workerCount } from '../runtime/settings.js';
import { shutDown } from '../runtime/shutdown.js';
import type { ToPrimary, ToWorker } from './messages.js';

/** How often workers send their pins (batched) and their live figures. */
const PIN_FLUSH_MS = 20;
const LIVE_EVERY_MS = 1000;

function toPrimary(message: ToPrimary): void {
  if (process.connected) process.send?.(message);
}

/** A worker's part: traffic; health comes from the primary, and what the traffic teaches goes to it. */
function workerRole(): ProcessRole {
  let pinBatch: [string, string][] = [];
  let flushTimer: NodeJS.Timeout | null = null;
  const flushPins = () => {
    flushTimer = null;
    const pins = pinBatch;
    pinBatch = [];
    toPrimary({ t: 'pins', pins });
  };
  return {
    servesTraffic: true,
    decidesHealth: false,
    behaviour: (local) => ({
      failureSeen: (backend, failure) => toPrimary({ t: 'failed', id: backend.id, message: failure.message }),
      backendChanged: () => {},
      backendsApplied: () => {},
      pinWritten: (key, backend) => {
        pinBatch.push([key, backend.id]);
        flushTimer ??= setTimeout(flushPins, PIN_FLUSH_MS);
      },
      // Only the primary takes pins from elsewhere.
      pinsLearnt: () => {},
      live: (backend) => local.metrics.live(backend),
      exposition: () => local.metrics.exposition(),
      movesPerSecond: (config) => (config.affinity.rebalance?.maxMovesPerSecond ?? 0) / workerCount(config),
    }),
  };
}

/** A worker: waits for the primary's config and state, then serves traffic until told to stop. */
export function runWorker(): void {
  let limpet: Limpet | null = null;
  const stop = () =>
    shutDown(
      {
        deadline: limpet?.currentConfig.timeouts.shutdown ?? 0,
        atDeadline: () => limpet?.closeAllConnections(),
        stop: () => limpet?.close() ?? Promise.resolve(),
      },
      null,
    );
  // Signals reach the whole process group; the primary decides when workers stop.
  process.on('SIGINT', () => {});
  process.on('SIGHUP', () => {});
  process.on('message', (message: ToWorker) => void handle(message));
  // The primary is gone: finish in-flight work and leave.
  process.on('disconnect', () => void stop());
  toPrimary({ t: 'hello' });

  async function handle(message: ToWorker): Promise<void> {
    switch (message.t) {
      case 'init': {
        let started: Limpet;
        try {
          started = await Limpet.start(message.config, { logger: createLogger(message.config.log.level), role: workerRole(), backends: message.backends });
        } catch (error) {
          if (!(error instanceof ListenError)) throw error;
          // The primary ends this worker, and during start-up the whole proxy: a replacement would fail alike.
          const cause = error.cause as NodeJS.ErrnoException;
          toPrimary({ t: 'listenFailed', host: error.host, port: error.port, setting: error.setting, code: cause.code ?? '', reason: cause.message });
          return;
        }
        for (const update of message.states) started.adoptHealth(update);
        for (const [key, id] of message.pins) started.adoptPin(key, id);
        setInterval(() => toPrimary({ t: 'live', figures: started.liveFigures() }), LIVE_EVERY_MS).unref();
        limpet = started;
        toPrimary({ t: 'ready' });
        return;
      }
      case 'state':
        limpet?.adoptHealth(message.update);
        return;
      case 'pins':
        if (limpet !== null) for (const [key, id] of message.pins) limpet.adoptPin(key, id);
        return;
      case 'reload':
        limpet?.reload(message.config, message.backends);
        return;
      case 'backends':
        limpet?.adoptBackends(message.backends);
        return;
      case 'metrics':
        if (limpet !== null) toPrimary({ t: 'metrics', id: message.id, json: await limpet.metrics.registry.getMetricsAsJSON() });
        return;
      case 'stop':
        await stop();
    }
  }
}
