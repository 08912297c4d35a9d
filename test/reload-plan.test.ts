import { describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import { planReload } from '../src/runtime/reload-plan.js';

const base = `listen: 127.0.0.1:8080
admin: { listen: "127.0.0.1:9090" }
backends:
  - { id: a, url: "http://127.0.0.1:3001" }
  - { id: b, url: "http://127.0.0.1:3002", drain: true }
`;
const config = (text: string) => parseConfig(text, 'test.yaml', {});

describe('planReload: the pure difference between the running config and a new one', () => {
  it('applies an unchanged config as it is, with nothing needing a restart', () => {
    const plan = planReload(config(base), config(base));
    expect(plan.needsRestart).toEqual([]);
    expect(plan.drain.size).toBe(0);
    expect(plan.applied).toEqual(config(base));
  });

  it('keeps listener addresses, process layout and the header limit, and names each', () => {
    const next = config(base.replace('8080', '8081').replace('9090', '9091') + 'workers: 2\nworkerBalance: kernel\nlimits: { maxHeaderSize: 32KB, maxBodySize: 1MB }\n');
    const plan = planReload(config(base), next);
    expect(plan.needsRestart).toEqual(['listen', 'admin.listen', 'workers', 'workerBalance', 'limits.maxHeaderSize']);
    expect(plan.applied.listen).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(plan.applied.admin.listen).toEqual({ host: '127.0.0.1', port: 9090 });
    expect(plan.applied.workers).toBe(1);
    expect(plan.applied.workerBalance).toBe(config(base).workerBalance);
    expect(plan.applied.limits.maxHeaderSize).toBe(16 * 1024);
    // What can change live does.
    expect(plan.applied.limits.maxBodySize).toBe(1024 * 1024);
  });

  it('keeps the state file it started with: turning it on, off or moving it needs a restart', () => {
    for (const [before, after] of [['', 'stateFile: /var/lib/limpet/state\n'], ['stateFile: /var/lib/limpet/state\n', ''], ['stateFile: /a/state\n', 'stateFile: /b/state\n']] as const) {
      const plan = planReload(config(base + before), config(base + after));
      expect(plan.needsRestart).toEqual(['stateFile']);
      expect(plan.applied.stateFile).toBe(config(base + before).stateFile);
    }
  });

  it('reports a drain change only for backends whose drain the file itself changed', () => {
    const next = config(base.replace('drain: true', 'drain: false').replace('3001" }', '3001", drain: true }') + '  - { id: c, url: "http://127.0.0.1:3003", drain: true }\n');
    const plan = planReload(config(base), next);
    expect([...plan.drain]).toEqual([
      ['a', { draining: true, deadline: null }],
      ['b', { draining: false, deadline: null }],
    ]);
    // A backend new to the config takes its drain flag from its entry, not from the plan.
    expect(plan.drain.has('c')).toBe(false);
  });

  it('keeps HTTP when the new file switches to HTTPS, and re-reads certificates only while TLS stays on', () => {
    const plan = planReload(config(base), { ...config(base), tls: { cert: '/x/cert.pem', key: '/x/key.pem' } } as ReturnType<typeof config>);
    expect(plan.needsRestart).toEqual(['tls (switching between HTTP and HTTPS)']);
    expect(plan.applied.tls).toBeNull();
    expect(plan.reloadTls).toBe(false);
    const withTls = { ...config(base), tls: { cert: '/x/cert.pem', key: '/x/key.pem', http2: true } } as ReturnType<typeof config>;
    expect(planReload(withTls, withTls).reloadTls).toBe(true);
  });

  it('keeps HTTP/2 on or off until a restart (the listener offers its protocols when it is created), and still re-reads the certificate', () => {
    const withTls = (http2: boolean) => ({ ...config(base), tls: { cert: '/x/cert.pem', key: '/x/key.pem', http2 } }) as ReturnType<typeof config>;
    const next = { ...withTls(false), tls: { cert: '/y/cert.pem', key: '/y/key.pem', http2: false } };
    const plan = planReload(withTls(true), next);
    expect(plan.needsRestart).toEqual(['tls.http2']);
    expect(plan.applied.tls).toEqual({ cert: '/y/cert.pem', key: '/y/key.pem', http2: true });
    expect(plan.reloadTls).toBe(true);
  });
});
