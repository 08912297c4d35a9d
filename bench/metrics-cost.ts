import { pathToFileURL } from 'node:url';
import { ProxyMetrics } from '../src/observe/metrics.js';
import { Backend } from '../src/upstream/backend.js';

/** What recording one request in the metrics costs on the request path (counter + histogram). */
export function runMetricsCostBench(): { nsPerRequest: number } {
  const backends = [1, 2, 3].map((i) => new Backend({ id: `b${i}`, url: `http://127.0.0.1:${3000 + i}`, weight: 1, drain: false, drainDeadline: null, healthPath: null }, { connectTimeout: 1000, keepAliveTimeout: 1000, maxConnections: 0 }, () => {}));
  const metrics = new ProxyMetrics({ backends: () => backends, sessionsByBackend: () => new Map(), drainProgress: () => new Map(), effectiveWeight: (b) => b.weight, sharedState: () => null });
  const ops = 3_000_000;
  for (let i = 0; i < 100_000; i++) metrics.requestCompleted(backends[i % 3] as Backend, 200, 0.0012);
  const start = process.hrtime.bigint();
  for (let i = 0; i < ops; i++) metrics.requestCompleted(backends[i % 3] as Backend, i % 50 === 0 ? 502 : 200, 0.0004 + (i % 7) * 0.001);
  const nsPerRequest = Number(process.hrtime.bigint() - start) / ops;
  for (const backend of backends) void backend.dispatcher.close();
  return { nsPerRequest };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { nsPerRequest } = runMetricsCostBench();
  console.log(`metrics per request (requests_total + duration histogram): ${nsPerRequest.toFixed(0)} ns`);
}
