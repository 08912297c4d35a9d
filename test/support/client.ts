import { request as httpRequest, Agent, type IncomingHttpHeaders } from 'node:http';

export interface TestResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

export interface RequestOptions {
  method?: string;
  path?: string;
  headers?: Record<string, string | string[]>;
  body?: string | Buffer;
  /** Source address, e.g. "127.0.0.7": any 127.x.y.z is local on Linux. */
  localAddress?: string;
  agent?: Agent | false;
}

/** One real HTTP request over loopback; the body is read whole (tests keep bodies small unless streaming). */
export function request(port: number, options: RequestOptions = {}): Promise<TestResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path ?? '/',
        headers: options.headers,
        localAddress: options.localAddress,
        agent: options.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(options.body);
  });
}

/** The `name=value` part of a Set-Cookie header, ready to send back in a Cookie header. */
export function cookiePair(headers: IncomingHttpHeaders, name = 'limpet'): string | undefined {
  const lines = headers['set-cookie'] ?? [];
  const line = lines.find((l) => l.startsWith(`${name}=`));
  return line?.split(';')[0];
}

/** The real setTimeout, taken before any test can fake timers, so polling keeps running while one does. */
const pollTimer = globalThis.setTimeout;

/**
 * Polls `check` until it returns a truthy value, or fails after `timeoutMs`. A check that throws (a
 * failed expectation, a refused connection) is polled again like one that returns a falsy value; the
 * timeout error names what was awaited and what the last check threw or returned, so a check can
 * throw to say why it is not there yet.
 */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs = 10_000, what = 'condition'): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let last: string;
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
      last = `returned ${String(value)}`;
    } catch (error) {
      last = `threw ${error instanceof Error ? error.message : String(error)}`;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; the last check ${last}`);
    await new Promise((r) => pollTimer(r, 20));
  }
}
