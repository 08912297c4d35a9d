// The same PROXY protocol bytes sent to limpet, HAProxy and nginx: each case of
// bench/proxy-headers.ts, followed by a GET, from one listed peer, and a table of what each made of
// it — the client address its backend was told, the status it answered itself, or a closed
// connection. Not a load test (test/proxy-protocol.test.ts holds what limpet must do).
//
//   npm run build && node dist/bench/proxy-protocol-peers.js
//
// limpet: `proxyProtocol: { from: [127.0.0.2] }`. HAProxy: `bind … accept-proxy`, mode http,
// `option forwardfor`. nginx: `listen … proxy_protocol`, `set_real_ip_from 127.0.0.0/8`,
// `real_ip_header proxy_protocol`, X-Forwarded-For $remote_addr. Each forwards to one backend in
// this process. A missing nginx or HAProxy is reported as skipped.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { RUNTIME_FLAGS } from '../src/runtime/runtime-flags.js';
import { distRoot, findExecutable, freePort, startChild, stopChildren, writeResult } from './harness.js';
import { acceptsConnections } from './haproxy-relay.js';
import { HEADER_CASES } from './proxy-headers.js';

const PEER = '127.0.0.2';
const WAIT_MS = 2000;

/** What each request told the backend, by case number. */
const told = new Map<number, string>();
const backend = http.createServer((req, res) => {
  const index = Number(/[?&]case=(\d+)/.exec(req.url ?? '')?.[1]);
  if (Number.isInteger(index)) told.set(index, String(req.headers['x-forwarded-for'] ?? '(none)'));
  res.end('ok\n');
});
await new Promise<void>((resolve) => backend.listen(0, '127.0.0.1', resolve));
const backendPort = (backend.address() as AddressInfo).port;

interface Server {
  name: string;
  port: number;
}

const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-pp-peers-'));
const servers: Server[] = [];
const skipped: string[] = [];
try {
  const admin = await freePort();
  servers.push(await start('limpet', process.execPath, (port) => {
    const file = path.join(tmp, 'limpet.yaml');
    writeFileSync(file, `listen: 127.0.0.1:${port}\nadmin: { listen: "127.0.0.1:${admin}" }\nlog: { level: error }\nproxyProtocol: { from: ["${PEER}"] }\nhealthCheck: { path: / }\nbackends: [{ id: b, url: "http://127.0.0.1:${backendPort}" }]\n`);
    return [...RUNTIME_FLAGS, path.join(distRoot, 'src', 'cli.js'), '--config', file];
  }));
  const haproxy = findExecutable('haproxy');
  if (haproxy === undefined) skipped.push('HAProxy (not found)');
  else {
    servers.push(await start(version(haproxy, /HAProxy version (\S+)/, 'HAProxy'), haproxy, (port) => {
      const file = path.join(tmp, 'haproxy.cfg');
      writeFileSync(file, [
        'defaults', '    mode http', '    timeout connect 2s', '    timeout client 10s', '    timeout server 10s',
        'frontend fe', `    bind 127.0.0.1:${port} accept-proxy`, '    option forwardfor', '    default_backend be',
        'backend be', `    server b 127.0.0.1:${backendPort}`, '',
      ].join('\n'));
      return ['-f', file, '-db'];
    }));
  }
  const nginx = findExecutable('nginx');
  if (nginx === undefined) skipped.push('nginx (not found)');
  else {
    servers.push(await start(version(nginx, /nginx\/(\S+)/, 'nginx'), nginx, (port) => {
      const dir = path.join(tmp, 'nginx');
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, 'nginx.conf'), [
        'worker_processes 1;', ...(process.getuid?.() === 0 ? [`user ${os.userInfo().username};`] : []), `pid ${dir}/nginx.pid;`,
        'error_log stderr crit;', 'events { worker_connections 256; }', 'http {', '  access_log off;',
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((name) => `  ${name}_temp_path ${dir}/${name};`),
        '  server {', `    listen 127.0.0.1:${port} proxy_protocol;`, '    set_real_ip_from 127.0.0.0/8;', '    real_ip_header proxy_protocol;',
        `    location / { proxy_pass http://127.0.0.1:${backendPort}; proxy_set_header X-Forwarded-For $remote_addr; }`, '  }', '}', '',
      ].join('\n'));
      return ['-p', `${dir}/`, '-e', 'stderr', '-c', 'nginx.conf', '-g', 'daemon off;'];
    }));
  }

  const rows: string[] = [];
  for (const [index, { name, bytes }] of HEADER_CASES.entries()) {
    const cells: string[] = [];
    for (const server of servers) {
      told.delete(index);
      const reply = await send(server.port, Buffer.concat([bytes, Buffer.from(`GET /?case=${index} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n`)]));
      cells.push(told.has(index) ? `forwarded as ${told.get(index)}` : reply);
    }
    rows.push(`| ${name} | ${cells.join(' | ')} |`);
    console.log(`${name}: ${cells.join('; ')}`);
  }
  const markdown = [
    `Each case followed by \`GET /\`, sent by a listed peer (${PEER}); ${new Date().toISOString().slice(0, 10)}${skipped.length > 0 ? `; skipped: ${skipped.join(', ')}` : ''}.`,
    '',
    `| case | ${servers.map((server) => server.name).join(' | ')} |`,
    `|---|${servers.map(() => '---').join('|')}|`,
    ...rows,
    '',
  ].join('\n');
  console.log(`\n${markdown}`);
  console.log(`written ${writeResult('proxy-protocol-peers-latest.md', markdown)}`);
} finally {
  stopChildren();
  backend.close();
  rmSync(tmp, { recursive: true, force: true });
}

function version(binary: string, pattern: RegExp, name: string): string {
  const result = spawnSync(binary, ['-v'], { encoding: 'utf8' });
  const found = pattern.exec(`${result.stdout}${result.stderr}`)?.[1];
  return found === undefined ? name : `${name} ${found}`;
}

/** Starts a server with the args `configure` writes for its port; resolves once the port accepts connections. */
async function start(name: string, binary: string, configure: (port: number) => string[]): Promise<Server> {
  const port = await freePort();
  const child = startChild([binary, ...configure(port)], undefined);
  let output = '';
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
  const deadline = Date.now() + 10_000;
  while (!(await acceptsConnections(port))) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${name} did not start: ${output.trim()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { name, port };
}

/** Sends `bytes` from the listed peer; what came back: a status line, "closed", or "no answer" after WAIT_MS. */
function send(port: number, bytes: Buffer): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress: PEER });
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(reply === '' ? `no answer in ${WAIT_MS / 1000} s` : status(reply));
    }, WAIT_MS);
    socket.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(reply === '' ? 'closed' : status(reply));
    });
    socket.write(bytes);
  });
}

function status(reply: string): string {
  const line = /^HTTP\/1\.[01] (\d{3})/.exec(reply);
  return line === null ? `sent ${JSON.stringify(reply.slice(0, 20))}` : line[1]!;
}
