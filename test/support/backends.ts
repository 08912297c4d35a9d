import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
}

/** A real backend on an ephemeral loopback port that records what reached it. */
export interface TestBackend {
  readonly id: string;
  readonly server: Server;
  readonly url: string;
  readonly port: number;
  /** Requests that reached it, health checks left out (they arrive whenever the proxy's timer fires). */
  readonly seen: SeenRequest[];
  close(): Promise<void>;
}

export type BackendHandler = (req: IncomingMessage, res: ServerResponse, id: string) => void;

/** Answers with its id as the body and in `x-backend`, like the demo backends. */
export const answerWithId: BackendHandler = (req, res, id) => {
  const body = `${id}\n`;
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), 'x-backend': id });
  res.end(body);
};

/** `host`: any loopback address (127.x.y.z, ::1), for backends that share a port on several addresses. */
export async function startBackend(id: string, handler: BackendHandler = answerWithId, port = 0, host = '127.0.0.1'): Promise<TestBackend> {
  const seen: SeenRequest[] = [];
  const server = createServer((req, res) => {
    if (req.url !== '/health') seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders });
    handler(req, res, id);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const actual = (server.address() as AddressInfo).port;
  return {
    id,
    server,
    url: `http://${host.includes(':') ? `[${host}]` : host}:${actual}`,
    port: actual,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export async function startBackends(count: number, handler?: BackendHandler): Promise<TestBackend[]> {
  return Promise.all(Array.from({ length: count }, (_, i) => startBackend(`app-${i + 1}`, handler)));
}

/** A YAML backends list for the given test backends. */
export function backendsYaml(backends: readonly { id: string; url: string }[], extra = ''): string {
  return ['backends:', ...backends.map((b) => `  - { id: ${b.id}, url: "${b.url}"${extra ? `, ${extra}` : ''} }`)].join('\n');
}
