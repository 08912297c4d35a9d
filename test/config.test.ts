import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseDuration } from '../src/config/duration.js';
import { ConfigError, formatConfigIssues, loadConfigFile, parseConfig, parseConfigWithWarnings, type ConfigIssue } from '../src/config/load.js';
import { startBackend } from './support/backends.js';
import { waitFor } from './support/client.js';
import { runCliToExit, startCli } from './support/cli.js';
import { configJsonSchemaText } from '../src/config/write-json-schema.js';

const MINIMAL = 'backends: [{ id: a, url: "http://127.0.0.1:3001" }]\n';

function issuesOf(text: string, env: NodeJS.ProcessEnv = {}, file = 'f.yaml'): ConfigIssue[] {
  try {
    parseConfig(text, file, env);
  } catch (error) {
    if (error instanceof ConfigError) return error.issues;
    throw error;
  }
  throw new Error('expected a ConfigError');
}

/** The single issue of a file with one mistake, without the file name. */
function onlyIssue(text: string, env: NodeJS.ProcessEnv = {}): Omit<ConfigIssue, 'file'> {
  const issues = issuesOf(text, env);
  expect(issues).toHaveLength(1);
  const { file, ...rest } = issues[0] as ConfigIssue;
  expect(file).toBe('f.yaml');
  return rest;
}

describe('parseDuration', () => {
  it.each([
    ['250ms', 250],
    ['2s', 2_000],
    ['1.5s', 1_500],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1m30s', 90_000],
    ['1h0m0.5s', 3_600_500],
    [0, 0],
    [1500, 1500],
  ])('%j is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['2 sec', '', 's', '-1s', '1d', '1.s', 1.5, -3, null, true])('rejects %j', (bad) => {
    expect(() => parseDuration(bad)).toThrow(/^expected a duration like "250ms", "2s", "5m" or integer milliseconds, got /);
  });

  it('suggests a unit for a quoted bare number', () => {
    expect(() => parseDuration('2000')).toThrow('expected a duration like "250ms", "2s", "5m" or integer milliseconds, got "2000" (add a unit, e.g. "2000ms")');
  });
});

describe('config values', () => {
  it('fills every default from a minimal file', () => {
    expect(parseConfig(MINIMAL, 'f.yaml', {})).toEqual({
      listen: { host: '0.0.0.0', port: 8080 },
      workers: 1,
      log: { level: 'info', access: false, accessQuery: false },
      tls: null,
      stateFile: null,
      admin: { listen: { host: '127.0.0.1', port: 9090 }, token: '' },
      affinity: {
        by: 'cookie',
        cookie: { name: 'limpet', secret: '', maxAge: null, path: '/', domain: null, httpOnly: true, secure: null, sameSite: 'lax' },
        header: 'X-Session-Id',
        sessionTtl: 1_800_000,
        maxSessions: 100_000,
        onRecovery: 'stay',
        rebalance: null,
      },
      balance: { slowStart: 0, maxLoadFactor: null },
      trustedProxies: [],
      proxyProtocol: null,
      healthCheck: { path: '/health', interval: 2_000, timeout: 1_000, rise: 2, fall: 3, expectStatus: { min: 200, max: 399 } },
      passive: { maxFails: 3, window: 10_000, cooldown: 10_000 },
      workerBalance: 'roundRobin',
      timeouts: { connect: 2_000, response: 30_000, clientIdle: 60_000, clientHeaders: 10_000, clientRequest: 300_000, clientSend: 60_000, tunnel: 3_600_000, shutdown: 10_000 },
      limits: { maxHeaderSize: 16_384, maxHeaderCount: 100, maxUrlLength: 8_192, maxBodySize: 0, maxConnections: 0, allowUnderscoreHeaders: false, maxConcurrentStreams: 100, maxBackendConnections: 0 },
      retries: 2,
      discovery: { interval: 5_000, servers: [], drainDeadline: 30_000 },
      backends: [{ id: 'a', url: 'http://127.0.0.1:3001', weight: 1, drain: false, drainDeadline: null, healthPath: null }],
      sharedState: null,
    });
  });

  it('treats an empty section as all defaults', () => {
    const config = parseConfig(`${MINIMAL}healthCheck:\npassive:\naffinity: { cookie: }\ntls:\n`, 'f.yaml', {});
    expect(config.healthCheck.interval).toBe(2_000);
    expect(config.passive.maxFails).toBe(3);
    expect(config.affinity.cookie.name).toBe('limpet');
    expect(config.tls).toBeNull();
  });

  it('reads flow style and normalises addresses, urls and status ranges', () => {
    const config = parseConfig(
      'listen: "[::1]:8443"\nworkers: auto\nadmin: { listen: ":9091" }\naffinity: { by: ip, cookie: { secret: x, maxAge: 1h } }\n' +
        'healthCheck: { expectStatus: 204 }\ntrustedProxies: [10.0.0.0/8, "::1"]\nbackends: [{ id: a, url: "HTTP://Example.com:80/" }, { id: b, url: "https://10.0.0.2" }]\n',
      'f.yaml',
      {},
    );
    expect(config.listen).toEqual({ host: '::1', port: 8443 });
    expect(config.workers).toBe('auto');
    expect(config.admin.listen).toEqual({ host: '0.0.0.0', port: 9091 });
    expect(config.affinity.by).toBe('ip');
    expect(config.affinity.cookie.secret).toBe('x');
    expect(config.affinity.cookie.maxAge).toBe(3_600_000);
    expect(config.healthCheck.expectStatus).toEqual({ min: 204, max: 204 });
    expect(config.trustedProxies).toEqual(['10.0.0.0/8', '::1']);
    expect(config.backends.map((b) => b.url)).toEqual(['http://example.com', 'https://10.0.0.2']);
  });

  it('parses the example config/limpet.yaml', async () => {
    const config = await loadConfigFile('config/limpet.yaml', {});
    expect(config.backends).toEqual([
      { id: 'app-1', url: 'http://127.0.0.1:3001', weight: 1, drain: false, drainDeadline: null, healthPath: null },
      { id: 'app-2', url: 'http://127.0.0.1:3002', weight: 1, drain: false, drainDeadline: null, healthPath: null },
      { id: 'app-3', url: 'http://127.0.0.1:3003', weight: 1, drain: false, drainDeadline: null, healthPath: null },
    ]);
    // Every key in the example is its default, so it reads like a minimal file.
    expect({ ...config, backends: [] }).toEqual({ ...parseConfig(MINIMAL, 'f.yaml', {}), backends: [] });
    expect((await loadConfigFile('config/limpet.yaml', { LIMPET_SECRET: 's3cret' })).affinity.cookie.secret).toBe('s3cret');
  });

  it('resolves tls paths against the config file directory', () => {
    const dir = mkdtempSync(join(tmpdir(), 'limpet-config-'));
    writeFileSync(join(dir, 'cert.pem'), '');
    writeFileSync(join(dir, 'key.pem'), '');
    const config = parseConfig(`${MINIMAL}tls: { cert: cert.pem, key: ./key.pem }\n`, join(dir, 'limpet.yaml'), {});
    expect(config.tls).toEqual({ cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem'), http2: true });
    expect(issuesOf(`${MINIMAL}tls: { cert: cert.pem, key: missing.pem }\n`, {}, join(dir, 'limpet.yaml'))).toEqual([
      { file: join(dir, 'limpet.yaml'), line: 2, column: 29, path: 'tls.key', message: `cannot read "${join(dir, 'missing.pem')}": no such file` },
    ]);
  });

  it('resolves a relative stateFile against the config file directory, and keeps an absolute one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'limpet-config-'));
    expect(parseConfig(`${MINIMAL}stateFile: state/limpet.state\n`, join(dir, 'limpet.yaml'), {}).stateFile).toBe(join(dir, 'state', 'limpet.state'));
    expect(parseConfig(`${MINIMAL}stateFile: /var/lib/limpet/state\n`, join(dir, 'limpet.yaml'), {}).stateFile).toBe('/var/lib/limpet/state');
  });
});

describe('environment substitution', () => {
  it('reports an unset ${VAR} at its value', () => {
    expect(onlyIssue(`${MINIMAL}affinity:\n  cookie:\n    secret: \${LIMPET_SECRET}\n`)).toEqual({
      line: 4,
      column: 13,
      path: 'affinity.cookie.secret',
      message: 'environment variable LIMPET_SECRET is not set (write ${LIMPET_SECRET:-default} to give a default)',
    });
  });

  it('substitutes ${VAR} and ${VAR:-default} inside values, and $${ is a literal ${', () => {
    const text = `${MINIMAL}affinity:\n  cookie:\n    secret: "pre-\${S}-post"\n    name: \${NAME:-sid}\n    domain: \${EMPTY:-example.com}\nadmin:\n  token: "$\${literal} $$ costs"\n`;
    const config = parseConfig(text, 'f.yaml', { S: 'xyz', EMPTY: '' });
    expect(config.affinity.cookie.secret).toBe('pre-xyz-post');
    expect(config.affinity.cookie.name).toBe('sid');
    expect(config.affinity.cookie.domain).toBe('example.com');
    expect(config.admin.token).toBe('${literal} $$ costs');
  });

  it('never re-reads substituted text as YAML or as another placeholder', () => {
    const config = parseConfig(`${MINIMAL}admin: { token: "\${T}" }\n`, 'f.yaml', { T: '${OTHER}\nretries: 9' });
    expect(config.admin.token).toBe('${OTHER}\nretries: 9');
    expect(config.retries).toBe(2);
  });

  it('types a substituted value as a number or boolean only where text is not accepted', () => {
    const text = `${MINIMAL}workers: \${W}\nretries: \${R}\nlog: { access: "\${A}" }\nhealthCheck: { interval: "\${I}" }\naffinity: { cookie: { secret: "\${S}" } }\n`;
    const config = parseConfig(text, 'f.yaml', { W: '4', R: '3', A: 'true', I: '1500', S: '1234' });
    expect([config.workers, config.retries, config.log.access, config.healthCheck.interval]).toEqual([4, 3, true, 1500]);
    expect(config.affinity.cookie.secret).toBe('1234');
    expect(onlyIssue(`${MINIMAL}retries: \${R}\n`, { R: '12' })).toEqual({ line: 2, column: 10, path: 'retries', message: 'expected an integer from 0 to 10, got 12' });
  });

  it('rejects a malformed placeholder', () => {
    expect(onlyIssue(`${MINIMAL}admin: { token: "\${1A}" }\n`)).toEqual({
      line: 2,
      column: 17,
      path: 'admin.token',
      message: 'expected ${NAME} or ${NAME:-default} with NAME made of letters, digits and "_", got "${1A}"',
    });
  });
});

describe('config mistakes, each located exactly', () => {
  it.each<[string, string, Omit<ConfigIssue, 'file'>]>([
    [
      'YAML syntax error',
      'backends:\n  - { id: a, url: "http://x:1"\n',
      { line: 3, column: 1, path: '', message: 'Flow map in block collection must be sufficiently indented and end with a }' },
    ],
    ['duplicate YAML key', `${MINIMAL}retries: 1\nretries: 2\n`, { line: 3, column: 1, path: '', message: 'Map keys must be unique' }],
    ['unknown top-level key', `${MINIMAL}listn: 1.2.3.4:80\n`, { line: 2, column: 1, path: 'listn', message: 'unknown key "listn" (did you mean "listen"?)' }],
    [
      'unknown nested key',
      `${MINIMAL}healthCheck:\n  interval: 2s\n  intervall: 3s\n`,
      { line: 4, column: 3, path: 'healthCheck.intervall', message: 'unknown key "intervall" (did you mean "interval"?)' },
    ],
    ['unknown key, nothing close', `${MINIMAL}frobnicate: 1\n`, { line: 2, column: 1, path: 'frobnicate', message: 'unknown key "frobnicate"' }],
    ['wrong type: integer', `${MINIMAL}retries: lots\n`, { line: 2, column: 10, path: 'retries', message: 'expected an integer from 0 to 10, got "lots"' }],
    ['wrong type: boolean', `${MINIMAL}log: { access: yes }\n`, { line: 2, column: 16, path: 'log.access', message: 'expected true or false, got "yes"' }],
    ['wrong type: section', `${MINIMAL}passive: 3\n`, { line: 2, column: 10, path: 'passive', message: 'expected a map of keys, got 3' }],
    [
      'enum value',
      `${MINIMAL}affinity: { by: session }\n`,
      { line: 2, column: 17, path: 'affinity.by', message: 'expected "ip", "cookie" or "header", got "session"' },
    ],
    [
      'bad duration',
      `${MINIMAL}timeouts:\n  connect: 2 sec\n`,
      { line: 3, column: 12, path: 'timeouts.connect', message: 'expected a duration like "250ms", "2s", "5m" or integer milliseconds, got "2 sec"' },
    ],
    ['duration below its minimum', `${MINIMAL}affinity:\n  sessionTtl: 500ms\n`, { line: 3, column: 15, path: 'affinity.sessionTtl', message: 'must be at least 1s, got "500ms"' }],
    ['duration above the timer limit', `${MINIMAL}timeouts: { tunnel: 1000h }\n`, { line: 2, column: 21, path: 'timeouts.tunnel', message: 'must be at most 596h, got "1000h"' }],
    [
      'bad URL scheme',
      'backends:\n  - id: a\n    url: ftp://host\n',
      { line: 3, column: 10, path: 'backends[0].url', message: 'expected an http:// or https:// origin like "http://10.0.0.11:3000", got "ftp://host"' },
    ],
    [
      'URL with a path',
      'backends:\n  - id: a\n    url: http://host:1/app\n',
      {
        line: 3,
        column: 10,
        path: 'backends[0].url',
        message: 'expected an http:// or https:// origin like "http://10.0.0.11:3000" with no path, query or credentials, got "http://host:1/app"',
      },
    ],
    [
      'duplicate backend id',
      'backends:\n  - { id: a, url: "http://h:1" }\n  - { id: a, url: "http://h:2" }\n',
      { line: 3, column: 11, path: 'backends[1].id', message: 'duplicate backend id "a" (also used by backends[0])' },
    ],
    [
      'bad id characters',
      'backends:\n  - { id: "a/b", url: "http://h:1" }\n',
      { line: 2, column: 11, path: 'backends[0].id', message: 'expected an id of letters, digits, ".", "_" or "-", starting with a letter or digit, at most 64 long, got "a/b"' },
    ],
    [
      'backend without url',
      'backends:\n  - id: a\n    weight: 2\n',
      { line: 2, column: 5, path: 'backends[0].url', message: 'missing required key "url": expected an http:// or https:// origin like "http://10.0.0.11:3000"' },
    ],
    ['empty backends', 'backends: []\n', { line: 1, column: 11, path: 'backends', message: 'expected at least one backend' }],
    ['no backends key', 'listen: ":80"\n', { line: 1, column: 1, path: 'backends', message: 'missing required key "backends": expected a list of backends' }],
    ['empty file', '', { line: 1, column: 1, path: 'backends', message: 'missing required key "backends": expected a list of backends' }],
    [
      'bad CIDR prefix',
      `${MINIMAL}trustedProxies: ["10.0.0.0/8", "10.0.0.0/33"]\n`,
      { line: 2, column: 32, path: 'trustedProxies[1]', message: 'expected a prefix length from 0 to 32 after "/", got "10.0.0.0/33"' },
    ],
    [
      'bad trusted proxy address',
      `${MINIMAL}trustedProxies:\n  - 10.0.0.300\n`,
      { line: 3, column: 5, path: 'trustedProxies[0]', message: 'expected an IP address or CIDR like "10.0.0.0/8" or "::1/128", got "10.0.0.300"' },
    ],
    ['listen port out of range', `${MINIMAL}listen: "0.0.0.0:99999"\n`, { line: 2, column: 9, path: 'listen', message: 'port must be from 0 to 65535, got "0.0.0.0:99999"' }],
    [
      'listen without host:port',
      `${MINIMAL}admin:\n  listen: 9090\n`,
      { line: 3, column: 11, path: 'admin.listen', message: 'expected an address like "0.0.0.0:8080", "[::1]:9090" or ":8080", got 9090 (write ":9090" to listen on every address)' },
    ],
    [
      'IPv6 listen without brackets',
      `${MINIMAL}listen: "::1:80"\n`,
      {
        line: 2,
        column: 9,
        path: 'listen',
        message: 'expected an address like "0.0.0.0:8080", "[::1]:9090" or ":8080", got "::1:80" (put IPv6 addresses in brackets, e.g. "[::1]:9090")',
      },
    ],
    ['stateFile not a path', `${MINIMAL}stateFile: 5\n`, { line: 2, column: 12, path: 'stateFile', message: 'expected a file path, got 5' }],
    ['stateFile empty', `${MINIMAL}stateFile: ""\n`, { line: 2, column: 12, path: 'stateFile', message: 'expected a file path, got ""' }],
    ['stateFile a list', `${MINIMAL}stateFile: [a, b]\n`, { line: 2, column: 12, path: 'stateFile', message: 'expected a file path, got a list' }],
    [
      'stateFile naming a directory',
      `${MINIMAL}stateFile: /var/lib/limpet/\n`,
      { line: 2, column: 12, path: 'stateFile', message: 'expected a file path, not a directory, got "/var/lib/limpet/"' },
    ],
    [
      'expectStatus range out of order',
      `${MINIMAL}healthCheck: { expectStatus: "399-200" }\n`,
      { line: 2, column: 30, path: 'healthCheck.expectStatus', message: 'status range "399-200" is out of order: write the lower code first, like "200-399"' },
    ],
    [
      'sameSite none with secure: false',
      `${MINIMAL}affinity: { cookie: { sameSite: none, secure: false } }\n`,
      {
        line: 2,
        column: 33,
        path: 'affinity.cookie.sameSite',
        message: 'sameSite: none needs secure: true, but secure is false (browsers drop SameSite=None cookies that are not Secure)',
      },
    ],
    [
      'sameSite none with secure left to default on plain HTTP',
      `${MINIMAL}affinity:\n  cookie:\n    sameSite: none\n`,
      {
        line: 4,
        column: 15,
        path: 'affinity.cookie.sameSite',
        message: 'sameSite: none needs secure: true, but secure defaults to false without tls (browsers drop SameSite=None cookies that are not Secure)',
      },
    ],
    [
      'invalid cookie name',
      `${MINIMAL}affinity: { cookie: { name: "my cookie" } }\n`,
      { line: 2, column: 29, path: 'affinity.cookie.name', message: "expected a cookie name (letters, digits and !#$%&'*+-.^_`|~), got \"my cookie\"" },
    ],
    [
      'unquoted placeholder in a flow map',
      `${MINIMAL}log: { level: \${LEVEL} }\n`,
      { line: 2, column: 16, path: '', message: 'Unexpected flow-map-start at node end (quote values that use ${...} inside { } or [ ], e.g. "${NAME}")' },
    ],
  ])('%s', (_name, text, issue) => {
    expect(onlyIssue(text)).toEqual(issue);
  });

  it('reports every independent mistake at once, in file order', () => {
    const issues = issuesOf(
      'listen: nope\nretries: -1\nbackends:\n  - { id: a, url: "http://h:1", weight: 0 }\n  - { id: a, url: "http://h:2" }\nhealthCheck: { timeout: "${T}" }\n',
    );
    expect(issues.map((i) => `${i.line}:${i.column} ${i.path}`)).toEqual([
      '1:9 listen',
      '2:10 retries',
      '4:41 backends[0].weight',
      '5:11 backends[1].id',
      '6:25 healthCheck.timeout',
    ]);
  });

  it('formats issues as file:line:column: path: message', () => {
    const issues = issuesOf('retries: x\nbackends: []\n');
    expect(formatConfigIssues(issues)).toBe(
      'f.yaml:1:10: retries: expected an integer from 0 to 10, got "x"\nf.yaml:2:11: backends: expected at least one backend',
    );
    expect(new ConfigError(issues).message).toBe(formatConfigIssues(issues));
  });

  it('an unreadable file is a ConfigError at line 0', async () => {
    const error: unknown = await loadConfigFile('/nonexistent/limpet.yaml', {}).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues).toEqual([
      {
        file: '/nonexistent/limpet.yaml',
        line: 0,
        column: 0,
        path: '',
        message: "cannot read the config file: ENOENT: no such file or directory, open '/nonexistent/limpet.yaml'",
      },
    ]);
  });
});

describe('config warnings: a bare number below 1000 on a key measured in seconds', () => {
  const SECONDS_KEYS = [
    'healthCheck.interval',
    'passive.window',
    'passive.cooldown',
    'timeouts.response',
    'timeouts.clientIdle',
    'timeouts.clientHeaders',
    'timeouts.clientRequest',
    'timeouts.clientSend',
    'timeouts.tunnel',
    'timeouts.shutdown',
  ];
  const warningsOf = (text: string, env: NodeJS.ProcessEnv = {}) => parseConfigWithWarnings(text, 'f.yaml', env).warnings;

  it.each(SECONDS_KEYS)('%s: 100 is warned at its value, with what was probably meant', (key) => {
    const [section, name] = key.split('.') as [string, string];
    const text = `${MINIMAL}${section}:\n  ${name}: 100\n`;
    const { config, warnings } = parseConfigWithWarnings(text, 'f.yaml', {});
    expect((config as unknown as Record<string, Record<string, number>>)[section]![name]).toBe(100);
    expect(warnings).toEqual([
      { file: 'f.yaml', line: 3, column: 3 + name.length + 2, path: key, message: 'a bare number counts milliseconds, so 100 is 100ms: write "100s" for seconds (or "100ms" to keep 100ms)' },
    ]);
    expect(formatConfigIssues(warnings, 'warning')).toBe(`f.yaml:3:${5 + name.length}: warning: ${key}: ${warnings[0]!.message}`);
  });

  it('warns for a value that came from ${VAR} too, and for every such key at once, in file order', () => {
    const warnings = warningsOf(`${MINIMAL}timeouts: { shutdown: "\${STOP}", tunnel: 5 }\npassive: { cooldown: 10 }\n`, { STOP: '10' });
    expect(warnings.map((w) => `${w.line}:${w.column} ${w.path}`)).toEqual(['2:23 timeouts.shutdown', '2:42 timeouts.tunnel', '3:22 passive.cooldown']);
  });

  it('is silent for units, 0 (off), 1000 and more, and keys where sub-second values are common', () => {
    expect(warningsOf(MINIMAL)).toEqual([]);
    expect(warningsOf(`${MINIMAL}timeouts: { shutdown: 0, response: 1000, tunnel: 10s, clientIdle: "500ms", connect: 500 }\nhealthCheck: { timeout: 250 }\n`)).toEqual([]);
  });

  it('turns the "at least 1s" error of a bare number into the same hint', () => {
    expect(onlyIssue(`${MINIMAL}affinity: { sessionTtl: 30 }\n`).message).toBe(
      'must be at least 1s, got 30 (a bare number counts milliseconds, so 30 is 30ms: write "30s" for seconds)',
    );
    expect(onlyIssue(`${MINIMAL}timeouts: { connect: 0 }\n`).message).toBe('must be at least 1ms, got 0');
  });

  it('limpet --check prints them with file:line and still exits 0', async () => {
    const file = join(mkdtempSync(join(tmpdir(), 'limpet-check-')), 'limpet.yaml');
    writeFileSync(file, `${MINIMAL}timeouts:\n  shutdown: 10\n`);
    const run = await runCliToExit(['--check', '--config', file]);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe(`${file}:3:13: warning: timeouts.shutdown: a bare number counts milliseconds, so 10 is 10ms: write "10s" for seconds (or "10ms" to keep 10ms)\n`);
    expect(run.stdout).toBe(`limpet: ${file}: ok (1 backend, affinity by cookie; 1 warning)\n`);
  });

  it('the running proxy logs them at start and on reload', async () => {
    const backend = await startBackend('app-1');
    const cli = await startCli(() => `timeouts: { shutdown: 10 }\nbackends: [{ id: app-1, url: "${backend.url}" }]\n`);
    try {
      const warned = (key: string) => cli.logs.find((l) => l.msg === 'config values that are probably mistakes' && (l.warnings as string[]).some((w) => w.includes(`: warning: ${key}: `)));
      const atStart = await waitFor(() => warned('timeouts.shutdown'), 10_000, 'the warning at start');
      expect(atStart).toMatchObject({ level: 'warn', file: cli.file });
      expect((atStart!.warnings as string[])[0]).toMatch(new RegExp(`^${cli.file}:\\d+:\\d+: warning: timeouts\\.shutdown: a bare number counts milliseconds`));
      cli.writeConfig(`passive: { cooldown: 10 }\nbackends: [{ id: app-1, url: "${backend.url}" }]\n`);
      await waitFor(() => warned('passive.cooldown'), 10_000, 'the warning on reload');
    } finally {
      await cli.stop();
      await backend.close();
    }
  });
});

describe('JSON schema', () => {
  it('config/limpet.schema.json is up to date (regenerate with npm run schema)', () => {
    expect(readFileSync('config/limpet.schema.json', 'utf8')).toBe(configJsonSchemaText());
  });
});
