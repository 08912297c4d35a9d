// Preload for the bench's "metrics off" variant (node --import): per-request metrics recording
// becomes a no-op, so the bench can show what metrics cost on the request path.
import { ProxyMetrics } from '../src/observe/metrics.js';

ProxyMetrics.prototype.requestCompleted = function requestCompleted(): void {};
