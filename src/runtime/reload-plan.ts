import type { LimpetConfig } from '../config/schema.js';
import { listedBackends } from '../discovery/backend-discovery.js';
import type { DrainSetting } from '../upstream/backend.js';

/** What a validated new config changes in a running proxy. */
export interface ReloadPlan {
  /** The config to run: the new one, with what cannot change live kept at its old value. */
  applied: LimpetConfig;
  /** Keys whose change needs a restart (reported, not applied). */
  needsRestart: string[];
  /** Backends whose drain (flag or deadline) the file itself changed: id → the file's drain. */
  drain: Map<string, DrainSetting>;
  /** Whether the TLS certificate and key must be read again. */
  reloadTls: boolean;
}

/**
 * The pure difference between the running config and a new one. Listener addresses, process
 * layout, the header-size limit, HTTP/2 on the TLS listener and the state file are fixed at start;
 * a drain set through the admin API stays until the file itself changes that backend's drain.
 */
export function planReload(old: LimpetConfig, next: LimpetConfig): ReloadPlan {
  const needsRestart: string[] = [];
  if (!sameHostPort(old.listen, next.listen)) needsRestart.push('listen');
  if (!sameHostPort(old.admin.listen, next.admin.listen)) needsRestart.push('admin.listen');
  if (old.workers !== next.workers) needsRestart.push('workers');
  if (old.workerBalance !== next.workerBalance) needsRestart.push('workerBalance');
  if (old.limits.maxHeaderSize !== next.limits.maxHeaderSize) needsRestart.push('limits.maxHeaderSize');
  if (JSON.stringify(old.sharedState) !== JSON.stringify(next.sharedState)) needsRestart.push('sharedState');
  const tlsSwitch = (old.tls === null) !== (next.tls === null);
  if (tlsSwitch) needsRestart.push('tls (switching between HTTP and HTTPS)');
  if (old.stateFile !== next.stateFile) needsRestart.push('stateFile');
  if (old.tls !== null && next.tls !== null && old.tls.http2 !== next.tls.http2) needsRestart.push('tls.http2');
  const applied: LimpetConfig = {
    ...next,
    listen: old.listen,
    admin: { ...next.admin, listen: old.admin.listen },
    workers: old.workers,
    workerBalance: old.workerBalance,
    limits: { ...next.limits, maxHeaderSize: old.limits.maxHeaderSize },
    tls: tlsSwitch ? old.tls : sameHttp2(old.tls, next.tls),
    sharedState: old.sharedState,
    stateFile: old.stateFile,
  };
  const drainBefore = new Map(listedBackends(old.backends).map((entry) => [entry.id, entry]));
  const drain = new Map<string, DrainSetting>();
  for (const entry of listedBackends(next.backends)) {
    const before = drainBefore.get(entry.id);
    if (before !== undefined && (before.drain !== entry.drain || before.drainDeadline !== entry.drainDeadline)) {
      drain.set(entry.id, { draining: entry.drain, deadline: entry.drainDeadline });
    }
  }
  return { applied, needsRestart, drain, reloadTls: !tlsSwitch && next.tls !== null };
}

/** The new TLS settings with HTTP/2 as it runs: the listener offers its protocols (ALPN) when it is created. */
function sameHttp2(old: LimpetConfig['tls'], next: LimpetConfig['tls']): LimpetConfig['tls'] {
  return old === null || next === null ? next : { ...next, http2: old.http2 };
}

function sameHostPort(a: { host: string; port: number }, b: { host: string; port: number }): boolean {
  return a.host === b.host && a.port === b.port;
}
