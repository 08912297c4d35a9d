import { describe, expect, it } from 'vitest';
import { request as httpsRequest } from 'node:https';
import { backendsYaml, startBackends } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { startProxy } from './support/proxy.js';
import { selfSignedCertificate } from './support/tls.js';

const cleanup = useCleanup();

describe('TLS listener', () => {
  it('serves HTTPS, sets a Secure cookie by default and tells the backend the scheme', async () => {
    const { cert, key } = selfSignedCertificate();
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`tls: { cert: "${cert}", key: "${key}" }\naffinity: { by: cookie, cookie: { secret: s } }\n${backendsYaml(backends)}`);
    cleanup.add(started.limpet);
    const res = await new Promise<{ status: number; setCookie: string[] }>((resolve, reject) => {
      httpsRequest({ host: '127.0.0.1', port: started.port, path: '/', rejectUnauthorized: false }, (r) => {
        r.resume();
        r.on('end', () => resolve({ status: r.statusCode ?? 0, setCookie: r.headers['set-cookie'] ?? [] }));
      })
        .on('error', reject)
        .end();
    });
    expect(res.status).toBe(200);
    expect(res.setCookie[0]).toMatch(/; Secure; SameSite=Lax$/);
    expect(backends[0]!.seen[0]!.headers['x-forwarded-proto']).toBe('https');
  });
});
