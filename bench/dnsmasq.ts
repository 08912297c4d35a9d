import { spawn, type ChildProcess } from 'node:child_process';
import { Resolver } from 'node:dns/promises';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './free-port.js';

/** One SRV record: `name` points at `target`:`port`. */
export interface SrvRecord {
  name: string;
  target: string;
  port: number;
  priority: number;
  weight: number;
}

/** What the server answers: addresses by name (A and AAAA alike), and SRV records. */
export interface DnsRecords {
  hosts: Record<string, readonly string[]>;
  srv?: readonly SrvRecord[];
}

/**
 * A real DNS server (Debian's dnsmasq) on a loopback ephemeral port, answering only from the records
 * it is given: names under `domain` that it does not know get NXDOMAIN, as from an authoritative
 * server. Changes to addresses are a rewritten hosts file and SIGHUP; changes to SRV records (which
 * dnsmasq reads only at start) a restart on the same port. Every change resolves once the server
 * answers with it.
 */
export interface DnsmasqServer {
  /** "127.0.0.1:port", for `discovery.servers`. */
  readonly address: string;
  readonly port: number;
  /** Replaces every record and waits until the server answers with the new ones. */
  set(records: DnsRecords): Promise<void>;
  /** The server stops answering (SIGSTOP): queries time out. */
  freeze(): void;
  thaw(): void;
  /** Stops the server (queries are refused); `set` starts it again on the same port. */
  kill(): Promise<void>;
  close(): Promise<void>;
}

/** How long a server waits for dnsmasq to answer its first query or a change. */
const READY_MS = 10_000;

export async function startDnsmasq(command: string, records: DnsRecords, domain = 'limpet.test'): Promise<DnsmasqServer> {
  const dir = mkdtempSync(join(tmpdir(), 'limpet-dns-'));
  const hostsFile = join(dir, 'hosts');
  const confFile = join(dir, 'dnsmasq.conf');
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const resolver = new Resolver({ timeout: 300, tries: 1 });
  resolver.setServers([address]);
  let child: ChildProcess | null = null;
  let current: DnsRecords = { hosts: {} };
  let srvNamesBefore: string[] = [];

  const writeHosts = (hosts: DnsRecords['hosts']) =>
    writeFileSync(hostsFile, Object.entries(hosts).flatMap(([name, addresses]) => addresses.map((a) => `${a} ${name}\n`)).join(''));

  const writeConf = (srv: readonly SrvRecord[]) =>
    writeFileSync(
      confFile,
      [
        `port=${port}`,
        'listen-address=127.0.0.1',
        'bind-interfaces',
        // Only the given records: no upstream servers, no /etc/hosts, unknown names of the domain are NXDOMAIN.
        'no-resolv',
        'no-hosts',
        `addn-hosts=${hostsFile}`,
        `local=/${domain}/`,
        // dnsmasq drops to "nobody" by default, who cannot read this temp folder.
        `user=${userInfo().username}`,
        `pid-file=${join(dir, 'pid')}`,
        'log-facility=-',
        ...srv.map((r) => `srv-host=${r.name},${r.target},${r.port},${r.priority},${r.weight}`),
        '',
      ].join('\n'),
    );

  const launch = async () => {
    const started = spawn(command, ['--keep-in-foreground', `--conf-file=${confFile}`], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    started.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise<never>((_, reject) => started.once('exit', (code) => reject(new Error(`dnsmasq exited (${code}): ${stderr}`))));
    exited.catch(() => {});
    child = started;
    await Promise.race([exited, poll(async () => (await ask(`ready.${domain}`, 'A')) !== 'refused', 'dnsmasq to answer')]);
  };

  /** What the server says about a name right now, as comparable text. */
  const ask = async (name: string, type: 'A' | 'AAAA' | 'SRV'): Promise<string> => {
    try {
      if (type === 'SRV') return (await resolver.resolveSrv(name)).map((r) => `${r.name}:${r.port}:${r.priority}:${r.weight}`).sort().join(',');
      return (type === 'A' ? await resolver.resolve4(name) : await resolver.resolve6(name)).sort().join(',');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      return code === 'ENOTFOUND' || code === 'ENODATA' ? '' : code === 'ECONNREFUSED' || code === 'ETIMEOUT' ? 'refused' : String(code);
    }
  };

  /** Whether the server answers with `records` for every name they or the previous records have. */
  const answersWith = async (records: DnsRecords): Promise<boolean> => {
    const names = new Set([...Object.keys(current.hosts), ...Object.keys(records.hosts)]);
    for (const name of names) {
      const addresses = records.hosts[name] ?? [];
      if ((await ask(name, 'A')) !== addresses.filter((a) => !a.includes(':')).sort().join(',')) return false;
      if ((await ask(name, 'AAAA')) !== addresses.filter((a) => a.includes(':')).sort().join(',')) return false;
    }
    const srv = records.srv ?? [];
    for (const name of new Set([...srvNamesBefore, ...srv.map((r) => r.name)])) {
      const expected = srv.filter((r) => r.name === name).map((r) => `${r.target}:${r.port}:${r.priority}:${r.weight}`).sort().join(',');
      if ((await ask(name, 'SRV')) !== expected) return false;
    }
    return true;
  };

  const stop = async () => {
    const running = child;
    child = null;
    if (running === null || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise((resolve) => running.once('exit', resolve));
    running.kill('SIGCONT');
    running.kill('SIGKILL');
    await exited;
  };

  const server: DnsmasqServer = {
    address,
    port,
    async set(records) {
      writeHosts(records.hosts);
      const srvChanged = JSON.stringify(records.srv ?? []) !== JSON.stringify(current.srv ?? []);
      if (srvChanged || child === null) {
        writeConf(records.srv ?? []);
        await stop();
        await launch();
      } else child.kill('SIGHUP');
      await poll(() => answersWith(records), 'dnsmasq to answer with the new records');
      current = records;
      srvNamesBefore = [...new Set((records.srv ?? []).map((r) => r.name))];
    },
    freeze() {
      child?.kill('SIGSTOP');
    },
    thaw() {
      child?.kill('SIGCONT');
    },
    kill: stop,
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await server.set(records);
  return server;
}

async function poll(check: () => Promise<boolean>, what: string): Promise<true> {
  const deadline = Date.now() + READY_MS;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${READY_MS} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return true;
}
