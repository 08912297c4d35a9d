import { execFile } from 'node:child_process';
import { connect, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { commandFrom } from './debian-packages.js';

export interface H2Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** Interim (1xx) responses before the final one. */
  interim: IncomingHttpHeaders[];
}

/** An HTTP/2 session (node:http2's client) to a TLS listener on loopback; the test certificate is self-signed. */
export function h2Connect(port: number): Promise<ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const session = connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    session.once('connect', () => {
      session.off('error', reject);
      // A session the proxy closes (GOAWAY, a flood) errors its streams, which the tests read there.
      session.on('error', () => {});
      resolve(session);
    });
    session.once('error', reject);
  });
}

/** One request on `session`; the whole response, interim responses included. */
export function h2Request(session: ClientHttp2Session, headers: OutgoingHttpHeaders, body?: string | Buffer): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': '/', ...headers }, { endStream: body === undefined });
    const interim: IncomingHttpHeaders[] = [];
    let final: IncomingHttpHeaders | undefined;
    const chunks: Buffer[] = [];
    stream.on('headers', (head) => interim.push(head));
    stream.on('response', (head) => (final = head));
    stream.on('data', (chunk: Buffer) => chunks.push(chunk));
    stream.on('end', () => {
      if (final === undefined) return reject(new Error(`stream ended without a response (code ${stream.rstCode})`));
      resolve({ status: Number(final[':status']), headers: final, body: Buffer.concat(chunks).toString('utf8'), interim });
    });
    stream.on('error', reject);
    if (body !== undefined) stream.end(body);
  });
}

/** What curl said: the protocol and status of the final response, its headers (lower-case names) and body. */
export interface CurlResponse {
  httpVersion: string;
  status: number;
  headers: [string, string][];
  body: string;
}

/** Runs Debian's curl against the proxy (`--insecure`: self-signed) with `args`, and reads its answer. */
export function curl(url: string, args: string[]): Promise<CurlResponse> {
  return new Promise((resolve, reject) => {
    execFile(commandFrom('curl'), ['--silent', '--show-error', '--insecure', '--include', ...args, url], { encoding: 'latin1' }, (error, stdout, stderr) => {
      if (error !== null) return reject(new Error(`curl failed: ${error.message} ${stderr}`));
      // --include puts every head before the body, interim ones first: the last is the final response's.
      let rest = stdout;
      let head = '';
      while (rest.startsWith('HTTP/')) {
        const end = rest.indexOf('\r\n\r\n');
        head = rest.slice(0, end);
        rest = rest.slice(end + 4);
      }
      const lines = head.split('\r\n');
      const [, httpVersion = '', status = '0'] = /^HTTP\/(\S+) (\d+)/.exec(lines[0] ?? '') ?? [];
      const headers = lines.slice(1).map((line): [string, string] => {
        const colon = line.indexOf(':');
        return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()];
      });
      resolve({ httpVersion, status: Number(status), headers, body: rest });
    });
  });
}
