import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { connect as tcpConnect, createServer, isIP, Socket, SocketAddress, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { normaliseAddress } from '../src/affinity/client-address.js';
import { ConfigError, parseConfig, type ConfigIssue } from '../src/config/load.js';
import type { Limpet } from '../src/limpet.js';
import { readProxyHeader } from '../src/runtime/proxy-protocol.js';
import { ProxyProtocolGate } from '../src/runtime/proxy-protocol-gate.js';
import { HEADER_CASES, ipv6Bytes, v1, v2 } from '../bench/proxy-headers.js';
import { backendsYaml, startBackends, type TestBackend } from './support/backends.js';
import { useCleanup } from './support/cleanup.js';
import { waitFor } from './support/client.js';
import { commandFrom } from './support/debian-packages.js';
import { refusalCount } from './support/exposition.js';
import { startProxy } from './support/proxy.js';

const cleanup = useCleanup();

// fast-check draws a fresh seed per run and prints it with any counterexample; FC_SEED replays one.
const seed = process.env.FC_SEED === undefined ? {} : { seed: Number(process.env.FC_SEED) };
const runs = (numRuns: number) => ({ numRuns, ...seed });

/** The balancer in front of the proxy under test, and a peer that is not one. */
const BALANCER = '127.0.0.10';
const STRANGER = '127.0.0.11';
const GET = 'GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n';

describe('the PROXY header reader', () => {
  it.each(HEADER_CASES)('$name', ({ bytes, limpet }) => {
    const read = readProxyHeader(Buffer.concat([bytes, Buffer.from(GET)]));
    if ('refused' in limpet) expect(read).toEqual({ kind: 'invalid', fault: limpet.refused });
    else expect(read).toEqual({ kind: 'header', length: bytes.length, source: limpet.client === 'peer' ? null : limpet.client });
  });

  it('waits for more bytes at every strict prefix of a valid header', () => {
    for (const { name, bytes, limpet } of HEADER_CASES) {
      if ('refused' in limpet) continue;
      for (let length = 0; length < bytes.length; length++) expect(readProxyHeader(bytes.subarray(0, length)), `${name}, ${length} bytes`).toEqual({ kind: 'incomplete' });
    }
  });

  it('reads any TCP4 or TCP6 source alike from v1 text and v2 bytes, whatever follows the header', () => {
    const v4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((octets) => octets.join('.'));
    const v6Groups = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 });
    const address = fc.oneof(
      v4.map((text) => ({ text, expected: text })),
      v6Groups.map((groups) => {
        const text = groups.map((g) => g.toString(16).toUpperCase().padStart(4, '0')).join(':');
        // Node's own spelling of the address, as it would give a socket's peer.
        return { text, expected: normaliseAddress(new SocketAddress({ address: text, family: 'ipv6' }).address) };
      }),
    );
    const port = fc.nat(65535);
    fc.assert(
      fc.property(address, port, port, fc.uint8Array({ maxLength: 64 }), ({ text, expected }, sourcePort, destinationPort, after) => {
        const six = text.includes(':');
        const destination = six ? '2001:db8::1' : '198.51.100.1';
        const tail = Buffer.from(after);
        const line = v1(`TCP${six ? 6 : 4} ${text} ${destination} ${sourcePort} ${destinationPort}`);
        const binary = v2({ source: six ? ipv6Text(text) : text, destination, sourcePort, destinationPort });
        expect(readProxyHeader(Buffer.concat([line, tail]))).toEqual({ kind: 'header', length: line.length, source: expected });
        expect(readProxyHeader(Buffer.concat([binary, tail]))).toEqual({ kind: 'header', length: binary.length, source: expected });
      }),
      runs(500),
    );
  });

  it('never throws on mangled headers, and never claims more bytes than it got', () => {
    const valid = HEADER_CASES.filter(({ limpet }) => !('refused' in limpet)).map(({ bytes }) => bytes);
    const mangled = fc
      .tuple(fc.constantFrom(...valid), fc.array(fc.tuple(fc.nat(), fc.nat(255)), { maxLength: 4 }), fc.nat(), fc.uint8Array({ maxLength: 40 }))
      .map(([bytes, flips, cut, extra]) => {
        const copy = Buffer.from(bytes);
        for (const [at, value] of flips) copy[at % copy.length] = value;
        return Buffer.concat([copy.subarray(0, cut % (copy.length + 1)), Buffer.from(extra)]);
      });
    fc.assert(
      fc.property(mangled, (bytes) => {
        const read = readProxyHeader(bytes);
        if (read.kind === 'header') {
          expect(read.length).toBeLessThanOrEqual(bytes.length);
          if (read.source !== null) expect(isIP(read.source)).not.toBe(0);
        } else expect(['incomplete', 'invalid']).toContain(read.kind);
      }),
      runs(3000),
    );
  });
});

/** "0001:00AB:…" as a lower-case IPv6 address the v2 builder expands itself. */
function ipv6Text(expanded: string): string {
  const bytes = ipv6Bytes(expanded.toLowerCase());
  return Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16)).join(':');
}

/**
 * Opens a connection from `from`, writes `parts` one after another (each once the one before has
 * left), half-closes when `end`, and resolves with every byte the proxy sent once it closed the
 * connection. A reset is one way for the proxy to close: writes it cuts short end the same way.
 */
function talk(port: number, from: string, parts: readonly (string | Buffer)[], end = false): Promise<string> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ port, host: '127.0.0.1', localAddress: from });
    const received: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', () => {});
    socket.on('close', () => resolve(Buffer.concat(received).toString('latin1')));
    socket.on('connect', async () => {
      for (const part of parts) {
        const written = await new Promise<boolean>((done) => socket.write(part, (error) => done(error === undefined || error === null)));
        if (!written) return;
      }
      if (end) socket.end();
    });
  });
}

async function refusals(limpet: Limpet, reason: string): Promise<number> {
  return refusalCount(await limpet.metrics.exposition(), reason);
}

function forwardedFor(backends: readonly TestBackend[]): string[] {
  return backends.flatMap((backend) => backend.seen.map((seen) => seen.headers['x-forwarded-for'] as string));
}

/** For each client address the backends were told, the ids of the backends that served it. */
function backendsByClient(backends: readonly TestBackend[]): Map<string, Set<string>> {
  const served = new Map<string, Set<string>>();
  for (const backend of backends) {
    for (const seen of backend.seen) {
      const client = seen.headers['x-forwarded-for'] as string;
      served.set(client, (served.get(client) ?? new Set()).add(backend.id));
    }
  }
  return served;
}

/** Every client on exactly one backend, and the clients spread over more than one. */
function expectPinnedAndSpread(served: Map<string, Set<string>>, clients: number): void {
  expect(served.size).toBe(clients);
  for (const [client, ids] of served) expect([...ids], client).toHaveLength(1);
  expect(new Set([...served.values()].flatMap((ids) => [...ids])).size).toBeGreaterThan(1);
}

async function proxyBehindBalancer(extra = '', count = 1): Promise<{ limpet: Limpet; port: number; backends: TestBackend[]; logs: { lines: Record<string, unknown>[] } }> {
  const backends = cleanup.add(await startBackends(count));
  const started = await startProxy(`proxyProtocol: { from: ["${BALANCER}"] }\n${extra}\n${backendsYaml(backends)}`);
  cleanup.add(started.limpet);
  return { ...started, backends };
}

describe('proxyProtocol.from: a listed peer', () => {
  it.each(HEADER_CASES)('$name', async ({ bytes, limpet: outcome }) => {
    const { limpet, port, backends } = await proxyBehindBalancer('affinity: { by: ip }');
    const reply = await talk(port, BALANCER, [bytes, GET]);
    if ('refused' in outcome) {
      expect(reply).toBe('');
      expect(backends[0]!.seen).toEqual([]);
      expect(await refusals(limpet, outcome.refused)).toBe(1);
    } else {
      expect(reply).toMatch(/^HTTP\/1\.1 200 /);
      expect(forwardedFor(backends)).toEqual([outcome.client === 'peer' ? BALANCER : outcome.client]);
    }
  });

  it('pins each claimed address to one backend by: ip, over keep-alive and new connections, and spreads them', async () => {
    const { port, backends, limpet } = await proxyBehindBalancer('affinity: { by: ip }', 3);
    const keepAlive = 'GET / HTTP/1.1\r\nHost: app.test\r\n\r\n';
    for (let i = 0; i < 30; i++) {
      const client = `198.51.100.${i + 1}`;
      const header = i % 2 === 0 ? v1(`TCP4 ${client} 203.0.113.1 ${40000 + i} 443`) : v2({ source: client });
      for (let connection = 0; connection < 3; connection++) {
        const reply = await talk(port, BALANCER, [header, keepAlive, GET]);
        expect(reply.match(/HTTP\/1\.1 200 /g)).toHaveLength(2);
      }
    }
    expectPinnedAndSpread(backendsByClient(backends), 30);
    expect(forwardedFor(backends)).toHaveLength(30 * 6);
    expect(await refusals(limpet, 'missing')).toBe(0);
  });

  it('keys header mode by the claimed address when a request has no header', async () => {
    const { port, backends } = await proxyBehindBalancer('affinity: { by: header, header: X-Session }', 3);
    for (let i = 0; i < 20; i++) {
      for (let connection = 0; connection < 3; connection++) await talk(port, BALANCER, [v2({ source: `2001:db8::${i + 1}` }), GET]);
    }
    expectPinnedAndSpread(backendsByClient(backends), 20);
  });

  it('takes the claimed address as the socket peer that trustedProxies are checked against', async () => {
    const { port, backends } = await proxyBehindBalancer('affinity: { by: ip }\ntrustedProxies: ["10.9.0.0/16"]');
    const withForwardedFor = (xff: string) => `GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: ${xff}\r\nConnection: close\r\n\r\n`;
    await talk(port, BALANCER, [v1('TCP4 10.9.1.1 10.0.0.1 40000 443'), withForwardedFor('192.0.2.7')]);
    await talk(port, BALANCER, [v1('TCP4 192.0.2.8 10.0.0.1 40000 443'), withForwardedFor('6.6.6.6')]);
    expect(forwardedFor(backends)).toEqual(['192.0.2.7, 10.9.1.1', '192.0.2.8']);
  });

  it('names the claimed client in the access log', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`proxyProtocol: { from: ["${BALANCER}"] }\nlog: { access: true }\n${backendsYaml(backends)}`, 'info');
    cleanup.add(started.limpet);
    await talk(started.port, BALANCER, [v2({ source: '2001:db8::7' }), GET]);
    expect(started.logs.lines.filter((line) => line.msg === 'request').map((line) => line.client)).toEqual(['2001:db8::7']);
  });

  it('reads a header that arrives a byte at a time, with the request in the same segment as its last byte', async () => {
    const { port, backends } = await proxyBehindBalancer();
    const header = v2({ source: '192.0.2.99', tlvs: [{ type: 0xe0, value: Buffer.from('tag') }] });
    const bytes = [...header.subarray(0, -1)].map((byte) => Buffer.from([byte]));
    const reply = await talk(port, BALANCER, [...bytes, Buffer.concat([header.subarray(-1), Buffer.from(GET)])]);
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(forwardedFor(backends)).toEqual(['192.0.2.99']);
  });

  it('answers a client that half-closes after its request', async () => {
    const { port, backends } = await proxyBehindBalancer();
    const reply = await talk(port, BALANCER, [Buffer.concat([v1('TCP4 192.0.2.5 10.0.0.1 1 2'), Buffer.from(GET)])], true);
    expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    expect(forwardedFor(backends)).toEqual(['192.0.2.5']);
  });

  it('reads the header before the TLS ClientHello on an HTTPS listener', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'limpet-pp-tls-'));
    const [cert, key] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
    execFileSync(commandFrom('openssl'), ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost'], { stdio: 'ignore' });
    const { port, backends, limpet } = await proxyBehindBalancer(`tls: { cert: "${cert}", key: "${key}" }`);
    for (const header of [v1('TCP4 192.0.2.21 10.0.0.1 1 443'), v2({ source: '192.0.2.22' })]) {
      const raw = tcpConnect({ port, host: '127.0.0.1', localAddress: BALANCER });
      await new Promise((resolve) => raw.on('connect', resolve));
      // Corked: the header and the ClientHello leave in one segment, as HAProxy sends them.
      raw.cork();
      raw.write(header);
      const secure = tlsConnect({ socket: raw, rejectUnauthorized: false }, () => secure.write(GET));
      process.nextTick(() => raw.uncork());
      let reply = '';
      secure.on('data', (chunk: Buffer) => (reply += chunk.toString('latin1')));
      await new Promise((resolve) => secure.on('close', resolve));
      expect(reply).toMatch(/^HTTP\/1\.1 200 /);
    }
    expect(forwardedFor(backends)).toEqual(['192.0.2.21', '192.0.2.22']);
    expect(backends[0]!.seen.map((seen) => seen.headers['x-forwarded-proto'])).toEqual(['https', 'https']);
    expect(await refusals(limpet, 'missing')).toBe(0);
  });
});

describe('proxyProtocol.from: closed before a byte reaches a backend', () => {
  it('a peer that is not listed: served as itself without a header, closed with one', async () => {
    const { limpet, port, backends } = await proxyBehindBalancer();
    expect(await talk(port, STRANGER, [GET])).toMatch(/^HTTP\/1\.1 200 /);
    expect(await talk(port, STRANGER, [v1('TCP4 192.0.2.10 10.0.0.1 1 2'), GET])).toBe('');
    expect(await talk(port, STRANGER, [v2(), GET])).toBe('');
    // The signature split over two segments is still seen.
    expect(await talk(port, STRANGER, ['PRO', 'XY TCP4 192.0.2.10 10.0.0.1 1 2\r\n', GET])).toBe('');
    expect(forwardedFor(backends)).toEqual([STRANGER]);
    expect(await refusals(limpet, 'unlisted')).toBe(3);
  });

  it('a header cut short by the peer closing; a bare connect and close counts nothing', async () => {
    const { limpet, port, backends } = await proxyBehindBalancer();
    await talk(port, BALANCER, [v1('TCP4 192.0.2.10 10.0.0.1 1 2').subarray(0, 20)], true);
    await talk(port, BALANCER, [v2().subarray(0, 20)], true);
    await talk(port, BALANCER, [], true);
    expect(backends[0]!.seen).toEqual([]);
    expect(await refusals(limpet, 'truncated')).toBe(2);
    expect(await refusals(limpet, 'missing')).toBe(0);
  });

  it('a header slower than timeouts.clientHeaders, and a silent peer', async () => {
    const { limpet, port, backends } = await proxyBehindBalancer('timeouts: { clientHeaders: 300ms }');
    const slow = await talk(port, BALANCER, ['PROXY TCP4 192.0.2.10 ']);
    const silent = await talk(port, STRANGER, []);
    expect([slow, silent]).toEqual(['', '']);
    expect(backends[0]!.seen).toEqual([]);
    expect(await refusals(limpet, 'timeout')).toBe(2);
  });
});

describe('ProxyProtocolGate', () => {
  it('holds a claimed address while its connection is open, and forgets it when it closes', async () => {
    const gate = new ProxyProtocolGate({ from: [BALANCER], headerTimeout: 5_000 }, () => {});
    const accepted: Socket[] = [];
    const server = createServer((socket) => accepted.push(socket));
    gate.guard(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanup.add(server);
    const client = tcpConnect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', localAddress: BALANCER });
    client.write(v2({ source: '192.0.2.44' }));
    const socket = await waitFor(() => accepted[0], 5_000, 'the connection past the gate');
    expect(gate.of(socket)).toBe('192.0.2.44');
    client.destroy();
    await waitFor(() => socket.destroyed && gate.of(socket) === undefined, 5_000, 'the claim to be forgotten');
  });
});

describe('ProxyProtocolGate and a connection reset before it is read', () => {
  it('closes it without counting it: with no peer address there is no list to check it against', async () => {
    const refused: string[] = [];
    const gate = new ProxyProtocolGate({ from: [BALANCER], headerTimeout: 5_000 }, (reason) => refused.push(reason));
    const server = createServer(() => {
      throw new Error('handed on');
    });
    gate.guard(server);
    // What the listener is given for a connection the peer reset before the first event: no address.
    const gone = new Socket();
    server.emit('connection', gone);
    expect(gone.destroyed).toBe(true);
    expect(refused).toEqual([]);
  });
});

describe('proxyProtocol over a proxy\'s life', () => {
  it('a graceful stop closes connections still waiting for their header, without counting them', async () => {
    const backends = cleanup.add(await startBackends(1));
    const started = await startProxy(`proxyProtocol: { from: ["${BALANCER}"] }\ntimeouts: { clientHeaders: 10m }\n${backendsYaml(backends)}`);
    const waiting = talk(started.port, BALANCER, ['PROXY TCP4 192.0.2.1']);
    const metrics = started.limpet.metrics;
    await waitFor(() => metrics.clientConnections === 1, 5_000, 'the connection to be accepted');
    // The stop must not wait out clientHeaders.
    await started.limpet.close();
    expect(await waiting).toBe('');
    expect(refusalCount(await metrics.exposition(), 'timeout')).toBe(0);
  });

  it('applies a new list to new connections', async () => {
    const backends = cleanup.add(await startBackends(1));
    const yaml = (pp: string) => parseConfig(`listen: 127.0.0.1:0\nadmin: { listen: "127.0.0.1:0" }\n${pp}\n${backendsYaml(backends)}`, 'test.yaml', {});
    const started = await startProxy(backendsYaml(backends));
    cleanup.add(started.limpet);
    // Off: a PROXY line is no method HTTP knows, so Node answers 400 and nothing is forwarded.
    expect(await talk(started.port, BALANCER, [v1('TCP4 192.0.2.1 10.0.0.1 1 2'), GET])).toMatch(/^HTTP\/1\.1 400 /);
    expect(started.limpet.reload(yaml(`proxyProtocol: { from: ["${BALANCER}"] }`))).toEqual([]);
    await talk(started.port, BALANCER, [v1('TCP4 192.0.2.1 10.0.0.1 1 2'), GET]);
    started.limpet.reload(yaml(`proxyProtocol: { from: ["${STRANGER}"] }`));
    await talk(started.port, STRANGER, [v2({ source: '192.0.2.2' }), GET]);
    await talk(started.port, BALANCER, [GET]);
    expect(forwardedFor(backends)).toEqual(['192.0.2.1', '192.0.2.2', BALANCER]);
  });
});

function configIssues(text: string): Omit<ConfigIssue, 'file'>[] {
  try {
    parseConfig(text, 'f.yaml', {});
  } catch (error) {
    if (error instanceof ConfigError) return error.issues.map(({ file: _file, ...issue }) => issue);
    throw error;
  }
  throw new Error('expected a ConfigError');
}

describe('proxyProtocol config', () => {
  const backends = 'backends: [{ id: a, url: "http://127.0.0.1:3001" }]\n';

  it('reads the list, and is off when absent', () => {
    expect(parseConfig(`${backends}proxyProtocol:\n  from: [10.0.0.0/8, "fd00::/8", 192.0.2.1]\n`, 'f.yaml', {}).proxyProtocol).toEqual({ from: ['10.0.0.0/8', 'fd00::/8', '192.0.2.1'] });
    expect(parseConfig(backends, 'f.yaml', {}).proxyProtocol).toBeNull();
  });

  it.each([
    [`${backends}proxyProtocol:\n  from: [10.0.0.0/8, 10.0.0.0/33]\n`, { line: 3, column: 22, path: 'proxyProtocol.from[1]', message: 'expected a prefix length from 0 to 32 after "/", got "10.0.0.0/33"' }],
    [`${backends}proxyProtocol:\n  from:\n    - nlb.internal\n`, { line: 4, column: 7, path: 'proxyProtocol.from[0]', message: 'expected an IP address or CIDR like "10.0.0.0/8" or "::1/128", got "nlb.internal"' }],
    [`${backends}proxyProtocol: { from: [] }\n`, { line: 2, column: 24, path: 'proxyProtocol.from', message: 'expected at least one address or CIDR (leave proxyProtocol out to turn it off)' }],
    [`${backends}proxyProtocol: true\n`, { line: 2, column: 16, path: 'proxyProtocol', message: 'expected a map with from, got true' }],
  ])('refuses %j with file:line', (text, issue) => {
    expect(configIssues(text)).toEqual([issue]);
  });

  it('names a misspelt key and the missing one', () => {
    expect(configIssues(`${backends}proxyProtocol: { form: [10.0.0.1] }\n`)).toEqual([
      { line: 2, column: 16, path: 'proxyProtocol.from', message: 'missing required key "from": expected a list of addresses or CIDRs' },
      { line: 2, column: 18, path: 'proxyProtocol.form', message: 'unknown key "form" (did you mean "from"?)' },
    ]);
  });
});
