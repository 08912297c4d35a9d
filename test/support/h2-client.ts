import { execFile } from 'node:child_process';
import { connect, type ClientHttp2Session, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http2';
import { connect as tlsConnect } from 'node:tls';
import { waitFor } from './client.js';
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

/** HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2), for names and values under 128 bytes. */
function literalField(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00, name.length]), Buffer.from(name, 'latin1'), Buffer.from([value.length]), Buffer.from(value, 'latin1')]);
}

/**
 * Sends `GET /` with `fields` on stream 1 of a hand-made HTTP/2 connection — what node:http2 and
 * curl refuse to send, such as connection-specific fields — and tells what came back on stream 1:
 * `status 200` for a response head, `end` for the end of the stream, `reset <code>` for RST_STREAM.
 */
export async function rawHttp2Request(port: number, fields: [string, string][]): Promise<string[]> {
  const socket = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['h2'] });
  try {
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    const seen: string[] = [];
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 9 && buffered.length >= 9 + buffered.readUIntBE(0, 3)) {
        const length = buffered.readUIntBE(0, 3);
        const [type, flags, stream] = [buffered[3], buffered[4]!, buffered.readUInt32BE(5) & 0x7fffffff];
        const payload = buffered.subarray(9, 9 + length);
        // A response head: its first field is :status from the static table (index 8 is 200, 12 is 400).
        if (stream === 1 && type === 0x1) seen.push(`status ${({ 0x88: 200, 0x8c: 400 } as Record<number, number>)[payload[0]!] ?? 'other'}`);
        if (stream === 1 && (type === 0x0 || type === 0x1) && (flags & 0x1) !== 0) seen.push('end');
        if (stream === 1 && type === 0x3) seen.push(`reset ${payload.readUInt32BE(0)}`);
        buffered = buffered.subarray(9 + length);
      }
    });
    // :method GET, :path /, :scheme https (static table 2, 4, 7); :authority (name index 1) 127.0.0.1.
    const block = Buffer.concat([Buffer.from([0x82, 0x84, 0x87, 0x41, 9]), Buffer.from('127.0.0.1'), ...fields.map(([name, value]) => literalField(name, value))]);
    const head = Buffer.alloc(9);
    head.writeUIntBE(block.length, 0, 3);
    head[3] = 0x1; // HEADERS
    head[4] = 0x5; // END_STREAM | END_HEADERS
    head.writeUInt32BE(1, 5);
    socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]), head, block]));
    await waitFor(() => seen.at(-1) === 'end' || seen.at(-1)?.startsWith('reset'), 5_000, 'the end of stream 1');
    return seen;
  } finally {
    socket.destroy();
  }
}
