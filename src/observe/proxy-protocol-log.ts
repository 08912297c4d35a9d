import type { Logger } from './log.js';

/** How often, at most, limpet says it closed connections for their PROXY protocol header. */
const LOG_EVERY_MS = 10_000;

/**
 * Says that connections were closed for their PROXY protocol header: the first at once, with its
 * reason and peer, then at most every few seconds with how many there were since, by reason. A
 * balancer that sends no header, or a peer that sends one unlisted, is a mistake an operator must
 * hear of, but a flood of them must not flood the log.
 */
export class ProxyProtocolRefusalLog {
  private lastAt = 0;
  private since = new Map<string, number>();

  constructor(private readonly logger: Logger) {}

  seen(reason: string, peer: string): void {
    this.since.set(reason, (this.since.get(reason) ?? 0) + 1);
    const now = Date.now();
    if (now - this.lastAt < LOG_EVERY_MS) return;
    this.logger.warn({ msg: 'connections closed for their PROXY protocol header', reason, peer, count: Object.fromEntries(this.since) });
    this.lastAt = now;
    this.since = new Map();
  }
}
