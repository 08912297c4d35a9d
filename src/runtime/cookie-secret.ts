import { randomSecret } from '../affinity/cookie.js';
import type { LimpetConfig } from '../config/schema.js';
import type { Logger } from '../observe/log.js';

/**
 * The cookie-secret policy: the configured secret, or one random secret for the life of the process
 * (so reloads keep cookies valid, and every worker of the process shares it). Using the random one
 * for cookie affinity is warned about once each time cookie mode starts without a secret.
 */
export class CookieSecret {
  private generated: string | null = null;
  private warned = false;

  constructor(private readonly logger: Logger) {}

  /** The config with its secret filled in. */
  fill(config: LimpetConfig): LimpetConfig {
    const { cookie } = config.affinity;
    const usesRandom = cookie.secret === '';
    if (usesRandom && config.affinity.by === 'cookie' && !this.warned) {
      this.logger.warn({
        msg: 'affinity.cookie.secret is not set: using a random secret, so affinity cookies will not survive a restart and are not shared with other replicas',
      });
    }
    this.warned = usesRandom && config.affinity.by === 'cookie';
    if (!usesRandom) return config;
    this.generated ??= randomSecret();
    return { ...config, affinity: { ...config.affinity, cookie: { ...cookie, secret: this.generated } } };
  }
}
