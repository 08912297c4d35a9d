// Native peers for bench/compare.ts: nginx and HAProxy as sticky proxies in front of the benchmark
// backends. Their configs are generated into a temp directory and they run in the foreground as the
// current user; nothing is installed — a missing binary makes the target "skipped".
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { findExecutable, freePort, startServerTarget, type Backends, type Skipped, type Target } from './harness.js';

export interface PeerStart {
  prepared: Target | Skipped;
  /** The generated config, kept with the results so a run can be reproduced. */
  config?: string;
  /** The peer's own version line (`nginx -v`, `haproxy -v`). */
  version?: string;
}

function versionOf(binary: string): string | undefined {
  const result = spawnSync(binary, ['-v'], { encoding: 'utf8', timeout: 5000 });
  return `${result.stderr ?? ''}\n${result.stdout ?? ''}`.split('\n').find((line) => /version/i.test(line))?.trim();
}

const hostPort = (origin: string) => new URL(origin).host;

/** A peer serving HTTPS with HTTP/2 (ALPN h2, http/1.1): the PEM files, and both in one for HAProxy's `crt`. */
export interface PeerTls {
  cert: string;
  key: string;
  combined: string;
}

const scheme = (tls: PeerTls | undefined) => (tls === undefined ? 'http' : 'https');

/** Whether this process runs as root (nginx then needs to be told to keep its workers as root too). */
const runningAsRoot = () => process.getuid?.() === 0;

/** What a benchmark changes in a peer's common config (bench/replicas.ts: quicker failure detection, a runtime API, stick tables). */
export interface PeerTuning {
  /** nginx: parameters after each server's address (`max_fails=1 fail_timeout=1s`); HAProxy: instead of `check inter 2s`. */
  server?: string;
  /** HAProxy: lines added to `global` (a stats socket) and to the backend (a stick table). */
  global?: string[];
  backend?: string[];
}

export function nginxConfig(dir: string, port: number, backends: Backends, workerProcesses: '1' | 'auto', tls?: PeerTls, tuning: PeerTuning = {}): string {
  const temp = (name: string) => path.join(dir, name);
  return [
    `worker_processes ${workerProcesses};`,
    // As root, nginx would switch its workers to "nobody"; the peers run as the current user.
    ...(runningAsRoot() ? [`user ${os.userInfo().username};`] : []),
    `pid ${temp('nginx.pid')};`,
    'error_log stderr warn;',
    'events { worker_connections 4096; }',
    'http {',
    '  access_log off;',
    `  client_body_temp_path ${temp('client_body')};`,
    `  proxy_temp_path ${temp('proxy')};`,
    `  fastcgi_temp_path ${temp('fastcgi')};`,
    `  uwsgi_temp_path ${temp('uwsgi')};`,
    `  scgi_temp_path ${temp('scgi')};`,
    // nginx closes a client keep-alive connection after 1000 requests by default; the other
    // targets never do, and wrk would count the reconnects against nginx.
    '  keepalive_requests 1000000;',
    '  upstream backends {',
    '    hash $remote_addr consistent;',
    ...backends.origins.map((origin) => `    server ${hostPort(origin)}${tuning.server === undefined ? '' : ` ${tuning.server}`};`),
    // Idle upstream connections kept per worker: more than the 500 client connections of the
    // largest scenario, so no upstream connection is closed after use.
    '    keepalive 1024;',
    '    keepalive_requests 1000000;',
    '  }',
    '  server {',
    // nginx 1.22 turns HTTP/2 on in the listen directive (ALPN h2, http/1.1).
    `    listen 127.0.0.1:${port}${tls === undefined ? '' : ' ssl http2'};`,
    ...(tls === undefined ? [] : [`    ssl_certificate ${tls.cert};`, `    ssl_certificate_key ${tls.key};`]),
    '    location / {',
    '      proxy_pass http://backends;',
    '      proxy_http_version 1.1;',
    '      proxy_set_header Connection "";',
    '      proxy_set_header Host $http_host;',
    '      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    // Buffer in memory only: none of the other targets spools responses to disk.
    '      proxy_max_temp_file_size 0;',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}

export type HaproxyStickiness = 'source' | 'cookie';

/** `threads` undefined = HAProxy's default, one thread per CPU it may run on. */
export function haproxyConfig(port: number, backends: Backends, stickiness: HaproxyStickiness, threads: number | undefined, tls?: PeerTls, tuning: PeerTuning = {}): string {
  const servers = backends.origins.map((origin, i) => {
    const id = `b${i + 1}`;
    return `    server ${id} ${hostPort(origin)}${stickiness === 'cookie' ? ` cookie ${id}` : ''} ${tuning.server ?? 'check inter 2s'}`;
  });
  return [
    'global',
    ...(threads === undefined ? [] : [`    nbthread ${threads}`]),
    ...(tuning.global ?? []).map((line) => `    ${line}`),
    '    maxconn 4096',
    'defaults',
    '    mode http',
    '    option http-keep-alive',
    // The default (safe) sends the first request of every client connection over a new server
    // connection: two TCP connects per request in the reconnect scenarios. `always` reuses idle
    // server connections like nginx's upstream keepalive and the Node proxies' pools do.
    '    http-reuse always',
    '    option forwardfor',
    '    maxconn 4096',
    '    timeout connect 2s',
    '    timeout client 60s',
    '    timeout server 30s',
    '    timeout http-keep-alive 60s',
    'frontend fe',
    `    bind 127.0.0.1:${port}${tls === undefined ? '' : ` ssl crt ${tls.combined} alpn h2,http/1.1`}`,
    '    default_backend backends',
    'backend backends',
    ...(stickiness === 'source'
      ? ['    balance source', '    hash-type consistent']
      // New clients round-robin; the inserted cookie names their server from then on.
      : ['    balance roundrobin', '    cookie SRV insert indirect nocache']),
    // Active checks like limpet's (GET /health every 2 s).
    '    option httpchk GET /health',
    ...(tuning.backend ?? []).map((line) => `    ${line}`),
    ...servers,
    '',
  ].join('\n');
}

export async function startNginx(
  name: string,
  description: string,
  backends: Backends,
  tmp: string,
  workerProcesses: '1' | 'auto',
  cpus: string | undefined,
  tls?: PeerTls,
  tuning: PeerTuning = {},
): Promise<PeerStart> {
  const binary = findExecutable('nginx');
  if (binary === undefined) return { prepared: { name, description, reason: 'nginx not found (on PATH or in /usr/sbin, /usr/local/sbin)' } };
  const dir = path.join(tmp, name);
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const config = nginxConfig(dir, port, backends, workerProcesses, tls, tuning);
  writeFileSync(path.join(dir, 'nginx.conf'), config);
  // -e: the error log before the config is read (the packaged default may be an unwritable file).
  const argv = [binary, '-p', `${dir}/`, '-e', 'stderr', '-c', 'nginx.conf', '-g', 'daemon off;'];
  return { prepared: await startServerTarget(name, description, argv, cpus, `${scheme(tls)}://127.0.0.1:${port}`), config, version: versionOf(binary) };
}

export async function startHaproxy(
  name: string,
  description: string,
  backends: Backends,
  tmp: string,
  stickiness: HaproxyStickiness,
  threads: number | undefined,
  cpus: string | undefined,
  tls?: PeerTls,
  tuning: PeerTuning = {},
): Promise<PeerStart> {
  const binary = findExecutable('haproxy');
  if (binary === undefined) return { prepared: { name, description, reason: 'haproxy not found (on PATH or in /usr/sbin, /usr/local/sbin)' } };
  const port = await freePort();
  const config = haproxyConfig(port, backends, stickiness, threads, tls, tuning);
  const file = path.join(tmp, `${name}.cfg`);
  writeFileSync(file, config);
  // -db: foreground, no daemon.
  const prepared = await startServerTarget(name, description, [binary, '-f', file, '-db'], cpus, `${scheme(tls)}://127.0.0.1:${port}`);
  return { prepared, config, version: versionOf(binary) };
}
