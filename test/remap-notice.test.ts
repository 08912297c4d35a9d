import { afterEach, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config/load.js';
import type { Limpet } from '../src/limpet.js';
import { backendsYaml, startBackends, type TestBackend } from './support/backends.js';
import { request, waitFor } from './support/client.js';
import { parseExposition } from './support/exposition.js';
import { startProxy } from './support/proxy.js';

let backends: TestBackend[] = [];
let proxy: Limpet | null = null;
afterEach(async () => {
  await proxy?.close();
  proxy = null;
  await Promise.all(backends.map((b) => b.close()));
  backends = [];
});

const remaps = async (limpet: Limpet) =>
  parseExposition((await request(limpet.adminAddress.port, { path: '/metrics' })).body).samples.filter((s) => s.name === 'limpet_session_remaps_total' && s.value > 0);

describe('the remap notice says only what happened', () => {
  it('a backend removed and added again by reload keeps its clients with no remap notice and no remap counted', async () => {
    backends = await startBackends(2);
    const yaml = `affinity: { by: ip }\n${backendsYaml(backends)}`;
    const started = await startProxy(yaml);
    proxy = started.limpet;
    const first = await request(started.port, { path: '/before', localAddress: '127.0.0.9' });
    const home = first.body.trim();
    const kept = backends.find((b) => b.id !== home)!;
    const text = (body: string) => parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n${body}`, 'test.yaml', {});
    proxy.reload(text(`affinity: { by: ip }\n${backendsYaml([kept])}`));
    proxy.reload(text(yaml));
    // Added by reload, the backend takes clients once its first check passes.
    await waitFor(() => proxy!.backend(home)?.available === true || undefined, 10_000, `${home} to pass its first check`);
    const before = backends.find((b) => b.id === home)!.seen.length;
    const again = await request(started.port, { path: '/after', localAddress: '127.0.0.9' });
    expect(again.body.trim()).toBe(home);
    const seen = backends.find((b) => b.id === home)!.seen.slice(before);
    expect(seen.map((r) => [r.url, r.headers['x-limpet-remapped-from'] ?? null])).toEqual([['/after', null]]);
    expect(await remaps(proxy)).toEqual([]);
  });
});
