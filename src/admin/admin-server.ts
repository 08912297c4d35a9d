import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { timingSafeEqual } from 'node:crypto';
import { isIPv4 } from 'node:net';
import { formatDuration, parseDuration } from '../config/duration.js';
import type { Backend } from '../upstream/backend.js';
import type { DrainProgress } from '../observe/drain-progress.js';
import type { Logger } from '../observe/log.js';
import type { LiveFigures } from '../observe/live-figures.js';
import { STATUS_PAGE_HTML } from './status-page.js';

/** What the admin API reads and changes in the running proxy. */
export interface AdminTarget {
  backends(): readonly Backend[];
  sessionsByBackend(): Map<Backend, number>;
  /** What each backend is doing: in flight, tunnels, and totals the status page turns into rates. */
  live(backend: Backend): LiveFigures;
  /** Drains (with a deadline in ms from now, or none) or undrains a backend; undefined for an unknown id. */
  setDraining(id: string, draining: boolean, deadline: number | null): Backend | undefined;
  /** Live clients and whether each draining backend is drained. */
  drainProgress(): Map<Backend, DrainProgress>;
  /** The weight each backend has for new clients now (0 when it takes none, ramping after slow start). */
  effectiveWeight(backend: Backend): number;
  metricsContentType(): string;
  metrics(): Promise<string>;
}

export interface BackendView {
  id: string;
  url: string;
  weight: number;
  /** The weight it has for new clients now: 0 when it takes none, below `weight` while slow start ramps it. */
  effectiveWeight: number;
  /** The dns or srv entry that found it ("dns:app.internal:3000"); null when the file lists it. */
  source: string | null;
  state: 'up' | 'down' | 'draining';
  /** When a draining backend's remaining clients move (ISO time), or null. */
  drainDeadline: string | null;
  /** Draining, with no live client, no request in flight and no WebSocket left: safe to stop. */
  drained: boolean;
  sessions: number;
  /** Clients seen within affinity.rebalance.idleAfter (or sessionTtl without rebalance). */
  liveClients: number;
  inflight: number;
  websockets: number;
  requests: number;
  errors: number;
  remapsIn: number;
  lastCheck: Backend['lastCheck'];
  lastError: string | null;
}

const DRAIN_ROUTE = /^\/backends\/([^/]+)\/(drain|undrain)$/;
const BACKEND_ROUTE = /^\/backends\/([^/]+)$/;
/** The longest drain deadline: Node timers go no further. */
const MAX_DEADLINE_MS = 596 * 3_600_000;

/**
 * The admin listener: metrics, liveness and readiness, the backend list, runtime drain, and a status
 * page. Binds loopback unless configured otherwise; mutating calls need the bearer token when one is set.
 */
export class AdminServer {
  readonly server: Server;
  private token: Buffer | null;
  /** The host bound when it is not loopback; null while unbound or on loopback. */
  private exposedOn: string | null = null;

  constructor(
    private readonly target: AdminTarget,
    token: string,
    private readonly logger: Logger,
  ) {
    this.token = token === '' ? null : Buffer.from(token);
    this.server = createServer((req, res) => {
      this.route(req, res).catch((error: unknown) => {
        this.logger.error({ msg: 'admin request failed', error: String(error) });
        if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
        else res.destroy();
      });
    });
  }

  /** Called once bound: from here on, an admin port others can reach without a token is warned about. */
  listening(host: string): void {
    this.exposedOn = isLoopbackHost(host) ? null : host;
    this.warnIfUnguarded();
  }

  setToken(token: string): void {
    const hadToken = this.token !== null;
    this.token = token === '' ? null : Buffer.from(token);
    if (hadToken) this.warnIfUnguarded();
  }

  private warnIfUnguarded(): void {
    if (this.token !== null || this.exposedOn === null) return;
    this.logger.warn({
      msg: 'the admin port is reachable beyond loopback and admin.token is empty: anyone who reaches it can drain backends; set admin.token or listen on 127.0.0.1',
      host: this.exposedOn,
    });
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  backendViews(): BackendView[] {
    const sessions = this.target.sessionsByBackend();
    const progress = this.target.drainProgress();
    return this.target.backends().map((backend) => {
      const live = this.target.live(backend);
      const drain = progress.get(backend);
      const deadline = backend.drainDeadline;
      return {
        id: backend.id,
        url: backend.url,
        weight: backend.weight,
        effectiveWeight: Math.round(this.target.effectiveWeight(backend) * 1000) / 1000,
        source: backend.source,
        state: backend.status,
        drainDeadline: deadline === null ? null : new Date(deadline).toISOString(),
        drained: drain?.drained ?? false,
        sessions: sessions.get(backend) ?? 0,
        liveClients: drain?.liveClients ?? 0,
        inflight: live.inflight,
        websockets: live.websockets,
        requests: live.requests,
        errors: live.errors,
        remapsIn: live.remapsIn,
        lastCheck: backend.lastCheck,
        lastError: backend.lastError,
      };
    });
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const [path = '/', query = ''] = (req.url ?? '/').split('?', 2);
    const method = req.method ?? 'GET';
    if (path === '/metrics') {
      if (!allow(req, res, 'GET')) return;
      send(res, 200, this.target.metricsContentType(), await this.target.metrics());
      return;
    }
    if (path === '/healthz') {
      if (!allow(req, res, 'GET')) return;
      send(res, 200, 'text/plain; charset=utf-8', 'ok\n');
      return;
    }
    if (path === '/readyz') {
      if (!allow(req, res, 'GET')) return;
      // Ready once a check has found a backend up: before that nothing says one is.
      const ready = this.target.backends().some((backend) => backend.verified);
      send(res, ready ? 200 : 503, 'text/plain; charset=utf-8', ready ? 'ready\n' : 'no backend is up\n');
      return;
    }
    if (path === '/backends') {
      if (!allow(req, res, 'GET')) return;
      sendJson(res, 200, this.backendViews());
      return;
    }
    if (path === '/') {
      if (!allow(req, res, 'GET')) return;
      send(res, 200, 'text/html; charset=utf-8', STATUS_PAGE_HTML);
      return;
    }
    const one = BACKEND_ROUTE.exec(path);
    if (one !== null) {
      if (!allow(req, res, 'GET')) return;
      const id = decodeURIComponent(one[1] as string);
      const view = this.backendViews().find((candidate) => candidate.id === id);
      if (view === undefined) sendJson(res, 404, { error: `no backend with id "${id}"` });
      else sendJson(res, 200, view);
      return;
    }
    const drain = DRAIN_ROUTE.exec(path);
    if (drain !== null) {
      if (method !== 'POST') {
        this.rejected(req, path, 405);
        res.setHeader('Allow', 'POST');
        sendJson(res, 405, { error: 'use POST' });
        return;
      }
      if (!this.authorized(req)) {
        this.rejected(req, path, 401);
        res.setHeader('WWW-Authenticate', 'Bearer realm="limpet-admin"');
        sendJson(res, 401, { error: 'a valid bearer token is required' });
        return;
      }
      const id = decodeURIComponent(drain[1] as string);
      const deadline = drainDeadline(drain[2] === 'drain', query);
      if (typeof deadline === 'string') {
        sendJson(res, 400, { error: deadline });
        return;
      }
      const backend = this.target.setDraining(id, drain[2] === 'drain', deadline);
      if (backend === undefined) {
        sendJson(res, 404, { error: `no backend with id "${id}"` });
        return;
      }
      this.logger.info({ msg: `admin ${drain[2]}`, backend: id, deadline: deadline === null ? null : formatDuration(deadline), from: req.socket.remoteAddress });
      sendJson(res, 200, this.backendViews().find((view) => view.id === id));
      return;
    }
    sendJson(res, 404, { error: 'not found' });
  }

  /** A refused call on a mutating route: someone is probing, or a deploy script has the wrong token. */
  private rejected(req: IncomingMessage, path: string, status: 401 | 405): void {
    this.logger.warn({ msg: 'admin call rejected', status, method: req.method, path, from: req.socket.remoteAddress });
  }

  private authorized(req: IncomingMessage): boolean {
    if (this.token === null) return true;
    const header = req.headers.authorization ?? '';
    if (!header.startsWith('Bearer ')) return false;
    const given = Buffer.from(header.slice(7).trim());
    return given.length === this.token.length && timingSafeEqual(given, this.token);
  }
}

/** The `?deadline=` of a drain call in ms, null without one, or why the query is refused. */
function drainDeadline(draining: boolean, query: string): number | null | string {
  const params = new URLSearchParams(query);
  for (const key of params.keys()) {
    if (key !== 'deadline') return `unknown parameter "${key}": the only one is deadline, e.g. ?deadline=10m`;
    if (!draining) return 'undrain takes no deadline: it cancels the drain and its deadline';
  }
  const values = params.getAll('deadline');
  if (values.length === 0) return null;
  if (values.length > 1) return 'give deadline once';
  let ms: number;
  try {
    ms = parseDuration(values[0]);
  } catch (error) {
    return `deadline: ${(error as Error).message}`;
  }
  if (ms < 1_000) return `deadline: must be at least 1s, got ${JSON.stringify(values[0])}`;
  if (ms > MAX_DEADLINE_MS) return `deadline: must be at most ${formatDuration(MAX_DEADLINE_MS)}, got ${JSON.stringify(values[0])}`;
  return ms;
}

function allow(req: IncomingMessage, res: ServerResponse, method: 'GET'): boolean {
  if (req.method === method || (method === 'GET' && req.method === 'HEAD')) return true;
  res.setHeader('Allow', 'GET, HEAD');
  sendJson(res, 405, { error: `use ${method}` });
  return false;
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store' });
  res.end(body);
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, 'application/json; charset=utf-8', `${JSON.stringify(value)}\n`);
}

/** Loopback is reachable from this host only: 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost. */
function isLoopbackHost(host: string): boolean {
  const bare = host.toLowerCase().replace(/^::ffff:(?=\d+\.)/, '');
  return bare === 'localhost' || bare === '::1' || (isIPv4(bare) && bare.startsWith('127.'));
}
