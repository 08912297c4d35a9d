import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isIP, type Socket } from 'node:net';
import fc from 'fast-check';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ClientAddressResolver, normaliseAddress, parseForwardedHop } from '../src/affinity/client-address.js';
import { AffinityCookieCodec, findCookie, serializeSetCookie, type AffinityCookie, type CookieAttributes } from '../src/affinity/cookie.js';
import { DURATION_PATTERN, formatDuration, parseDuration } from '../src/config/duration.js';
import { ConfigError, formatConfigIssues, loadConfigFile, parseConfig, type LimpetConfig } from '../src/config/load.js';

// fast-check draws a fresh seed per run and prints it with any counterexample; FC_SEED replays one.
const seed = process.env.FC_SEED === undefined ? {} : { seed: Number(process.env.FC_SEED) };
const runs = (numRuns: number) => ({ numRuns, ...seed });

const FILE = 'limpet.yaml';
const EXAMPLE_CONFIG = readFileSync(new URL('../config/limpet.yaml', import.meta.url), 'utf8');

// ---------------------------------------------------------------------------------------------
// Config loading
// ---------------------------------------------------------------------------------------------

/** Parses config text; a ConfigError is an outcome, anything else thrown fails the property. */
function parseOutcome(text: string, env: NodeJS.ProcessEnv = {}, file = FILE): { config: LimpetConfig } | { error: ConfigError } {
  try {
    return { config: parseConfig(text, file, env) };
  } catch (error) {
    if (error instanceof ConfigError) return { error };
    throw error;
  }
}

/** Every issue points into the text, names a path, says something, and formats to exactly one line. */
function expectWellFormed(error: ConfigError, text: string, file = FILE): void {
  expect(error).toBeInstanceOf(ConfigError);
  expect(error.name).toBe('ConfigError');
  expect(error.issues.length).toBeGreaterThan(0);
  const lastLine = text.split('\n').length;
  for (const issue of error.issues) {
    expect(issue.file).toBe(file);
    expect(Number.isInteger(issue.line) && issue.line >= 1 && issue.line <= lastLine, `line ${issue.line} of ${lastLine}`).toBe(true);
    expect(Number.isInteger(issue.column) && issue.column >= 1 && issue.column <= text.length + 1, `column ${issue.column}`).toBe(true);
    expect(typeof issue.path).toBe('string');
    expect(issue.message.trim()).not.toBe('');
  }
  expect(error.message).toBe(formatConfigIssues(error.issues));
  const lines = error.message.split(/\r\n|\r|\n/);
  expect(lines).toHaveLength(error.issues.length);
  lines.forEach((line, i) => {
    const issue = error.issues[i]!;
    expect(line.startsWith(`${file}:${issue.line}:${issue.column}: ${issue.path === '' ? '' : `${issue.path}: `}`)).toBe(true);
  });
}

function expectConfigOrConfigError(text: string, env: NodeJS.ProcessEnv = {}): void {
  const outcome = parseOutcome(text, env);
  if ('error' in outcome) expectWellFormed(outcome.error, text);
  else expect(typeof outcome.config).toBe('object');
}

/** Writes `text` so that `${...}` reads back literally rather than as an environment variable. */
function escapeDollars(text: string): string {
  // A function, because in a replacement string "$$" itself means "$".
  return text.replaceAll('${', () => '$${');
}

/** Pieces of YAML syntax and limpet keys: random joins of these reach far more parser paths than random characters. */
const yamlFragment = fc.constantFrom(
  '[', ']', '{', '}', ':', ': ', ',', '- ', '? ', '\n', '\r\n', '  ', '\t', '#', '&a ', '*a', '!!str ', '!!map ', '!x ', '"', "'", '|', '>-',
  '---\n', '...\n', '%YAML 1.2\n', '<<: ', '${X}', '${', '$${', '${1}', '${X:-', '}', '~', 'null', 'true', '.inf', '1e999', '-0', '0x1F',
  'backends', 'listen', 'affinity', 'cookie', 'sameSite', 'none', 'secure', 'tls', 'cert', 'trustedProxies', 'healthCheck', 'interval',
  '\\n', '\\r', '2s', '1m30s', '99999999h', 'http://127.0.0.1:3001', 'id', 'url', 'a', '__proto__', 'constructor', '\u0000', '\uFEFF', '\u2028', 'é',
);
const yamlLikeText = fc.array(yamlFragment, { maxLength: 40 }).map((parts) => parts.join(''));

const anyText = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.string({ unit: 'grapheme', maxLength: 200 }),
  fc.string({ maxLength: 200 }),
  yamlLikeText,
);

/** YAML text for any value; undefined and other values YAML has no spelling for become empty text. */
function yamlOf(value: unknown): string {
  return stringifyYaml(value) ?? '';
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type PathKey = string | number;

/** Every path to a value inside a config object, including the containers themselves. */
function pathsOf(value: unknown, prefix: PathKey[] = []): PathKey[][] {
  const here = [prefix];
  if (Array.isArray(value)) return here.concat(value.flatMap((item, i) => pathsOf(item, [...prefix, i])));
  if (typeof value === 'object' && value !== null) return here.concat(Object.entries(value).flatMap(([key, item]) => pathsOf(item, [...prefix, key])));
  return here;
}

type Mutation =
  | { kind: 'set'; pick: number; value: unknown }
  | { kind: 'delete'; pick: number }
  | { kind: 'unknownKey'; pick: number; key: string; value: unknown };

const wildValue = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.anything({ maxDepth: 2 }),
  fc.string({ unit: 'grapheme', maxLength: 30 }),
  fc.constantFrom('auto', '0ms', '1.5s', '596h', '597h', '9007199254740992ms', '-1', '0.0.0.0:99999', '[::1]:80', ':8080', 'none', '${X}', '$${X}', ''),
  fc.integer(),
  fc.double(),
);

/** Keys near real ones (for the "did you mean" hint) and keys with characters that could break an issue line. */
const unknownKey = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 12 }),
  fc.string({ unit: fc.constantFrom('l', 'o', 'g', 'i', 'n', '\n', '\r', '\t', '.', '"', '[', ']', '0', ' ', '\u2028'), minLength: 1, maxLength: 8 }),
);

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), pick: fc.nat(), value: wildValue }),
  fc.record({ kind: fc.constant('delete' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('unknownKey' as const), pick: fc.nat(), key: unknownKey, value: wildValue }),
);

/** Applies a mutation to a copy of the document; `pick` chooses the path, wrapping around. */
function mutate(document: unknown, change: Mutation): unknown {
  const root = structuredClone(document) as Record<PathKey, unknown>;
  const paths = pathsOf(root);
  const path = paths[change.pick % paths.length]!;
  if (change.kind === 'unknownKey') {
    const target = path.reduce<unknown>((node, key) => (node as Record<PathKey, unknown>)[key], root);
    if (typeof target === 'object' && target !== null && !Array.isArray(target)) (target as Record<string, unknown>)[change.key] = change.value;
    return root;
  }
  if (path.length === 0) return change.kind === 'set' ? change.value : null;
  const parent = path.slice(0, -1).reduce<unknown>((node, key) => (node as Record<PathKey, unknown>)[key], root) as Record<PathKey, unknown>;
  const last = path[path.length - 1]!;
  if (change.kind === 'set') parent[last] = change.value;
  else if (Array.isArray(parent)) parent.splice(last as number, 1);
  else delete parent[last];
  return root;
}

// Valid values, each paired with what the parsed config must hold for it.
const MAX_TIMER_MS = 596 * 3_600_000;
const port = fc.integer({ min: 0, max: 65_535 });
const hostname = fc.domain();

const listenAddress = fc.oneof(
  fc.tuple(fc.ipV4(), port).map(([host, p]) => ({ text: `${host}:${p}`, value: { host, port: p } })),
  fc.tuple(fc.ipV6(), port).map(([host, p]) => ({ text: `[${host}]:${p}`, value: { host, port: p } })),
  fc.tuple(hostname, port).map(([host, p]) => ({ text: `${host}:${p}`, value: { host, port: p } })),
  port.map((p) => ({ text: `:${p}`, value: { host: '0.0.0.0', port: p } })),
);

/** Milliseconds written as the config allows: integer ms, `<n>ms`, the formatter's spelling, or `1h2m3s4ms` parts. */
function durationIn(min: number, max: number): fc.Arbitrary<{ text: string | number; value: number }> {
  return fc.tuple(fc.integer({ min, max }), fc.nat(3)).map(([ms, style]) => {
    if (style === 0) return { text: ms, value: ms };
    if (style === 1) return { text: `${ms}ms`, value: ms };
    if (style === 2) return { text: formatDuration(ms), value: ms };
    const parts: string[] = [];
    let rest = ms;
    for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1_000], ['ms', 1]] as const) {
      const amount = Math.floor(rest / size);
      rest -= amount * size;
      if (amount > 0) parts.push(`${amount}${unit}`);
    }
    return { text: parts.length === 0 ? '0ms' : parts.join(''), value: ms };
  });
}

const backendId = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/);
const token = fc.stringMatching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/).filter((name) => name.length <= 40);
const urlPath = fc.stringMatching(/^\/[^\s;]{0,20}$/);
const anyString = fc.string({ unit: 'grapheme', maxLength: 40 });

/** An address in the forms the schema takes for trustedProxies. */
const cidr = fc.oneof(
  fc.ipV4(),
  fc.ipV6(),
  fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([a, p]) => `${a}/${p}`),
  fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([a, p]) => `${a}/${p}`),
  fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 128 })).map(([a, p]) => `::ffff:${a}/${p}`),
);

const statusRange = fc.oneof(
  fc.integer({ min: 100, max: 599 }).map((code) => ({ text: code as string | number, value: { min: code, max: code } })),
  fc.tuple(fc.integer({ min: 100, max: 599 }), fc.integer({ min: 100, max: 599 })).map(([a, b]) => ({
    text: `${Math.min(a, b)}-${Math.max(a, b)}`,
    value: { min: Math.min(a, b), max: Math.max(a, b) },
  })),
);

const backendUrl = fc
  .tuple(fc.constantFrom('http', 'https', 'HTTP'), fc.oneof(fc.ipV4(), hostname, fc.ipV6().map((a) => `[${a}]`)), fc.option(port, { nil: undefined }), fc.boolean())
  .map(([scheme, host, p, slash]) => `${scheme}://${host}${p === undefined ? '' : `:${p}`}${slash ? '/' : ''}`);

const backendEntry = fc.record({
  id: backendId,
  url: backendUrl,
  weight: fc.integer({ min: 1, max: 1000 }),
  drain: fc.boolean(),
  healthPath: fc.option(urlPath, { nil: null }),
});

/** A whole valid config as a YAML-ready document, and the config parsing it must give. */
const validConfig = fc
  .record({
    listen: listenAddress,
    workers: fc.oneof(fc.integer({ min: 1, max: 256 }), fc.constant('auto' as const)),
    log: fc.record({ level: fc.constantFrom('debug', 'info', 'warn', 'error'), access: fc.boolean() }),
    adminListen: listenAddress,
    adminToken: anyString,
    by: fc.constantFrom('ip', 'cookie', 'header'),
    cookie: fc.record({
      name: token,
      secret: anyString,
      maxAge: fc.option(durationIn(1_000, Number.MAX_SAFE_INTEGER), { nil: null }),
      path: urlPath,
      domain: fc.option(hostname, { nil: null }),
      httpOnly: fc.boolean(),
      secure: fc.option(fc.boolean(), { nil: null }),
      sameSite: fc.constantFrom('lax', 'strict', 'none'),
    }),
    header: token,
    sessionTtl: durationIn(1_000, Number.MAX_SAFE_INTEGER),
    maxSessions: fc.integer({ min: 1, max: 100_000_000 }),
    onRecovery: fc.constantFrom('stay', 'return'),
    trustedProxies: fc.array(cidr, { maxLength: 4 }),
    health: fc.record({
      path: urlPath,
      interval: durationIn(100, MAX_TIMER_MS),
      timeout: durationIn(1, MAX_TIMER_MS),
      rise: fc.integer({ min: 1, max: 100 }),
      fall: fc.integer({ min: 1, max: 100 }),
      expectStatus: statusRange,
    }),
    passive: fc.record({ maxFails: fc.integer({ min: 1, max: 1000 }), window: durationIn(1, MAX_TIMER_MS), cooldown: durationIn(0, MAX_TIMER_MS) }),
    timeouts: fc.record({
      connect: durationIn(1, MAX_TIMER_MS),
      response: durationIn(1, MAX_TIMER_MS),
      clientIdle: durationIn(1, MAX_TIMER_MS),
      tunnel: durationIn(1, MAX_TIMER_MS),
      shutdown: durationIn(0, MAX_TIMER_MS),
    }),
    retries: fc.integer({ min: 0, max: 10 }),
    backends: fc.uniqueArray(backendEntry, { minLength: 1, maxLength: 4, selector: (b) => b.id }),
  })
  .map((v) => {
    // sameSite: none without secure is a config error by design, so the valid space pairs it with secure: true.
    const secure = v.cookie.sameSite === 'none' ? true : v.cookie.secure;
    const document = {
      listen: v.listen.text,
      workers: v.workers,
      log: v.log,
      tls: null,
      admin: { listen: v.adminListen.text, token: escapeDollars(v.adminToken) },
      affinity: {
        by: v.by,
        cookie: { ...v.cookie, secret: escapeDollars(v.cookie.secret), path: escapeDollars(v.cookie.path), maxAge: v.cookie.maxAge?.text ?? null, secure },
        header: v.header,
        sessionTtl: v.sessionTtl.text,
        maxSessions: v.maxSessions,
        onRecovery: v.onRecovery,
      },
      trustedProxies: v.trustedProxies,
      healthCheck: {
        ...v.health,
        path: escapeDollars(v.health.path),
        interval: v.health.interval.text,
        timeout: v.health.timeout.text,
        expectStatus: v.health.expectStatus.text,
      },
      passive: { maxFails: v.passive.maxFails, window: v.passive.window.text, cooldown: v.passive.cooldown.text },
      timeouts: Object.fromEntries(Object.entries(v.timeouts).map(([key, d]) => [key, d.text])),
      retries: v.retries,
      backends: v.backends.map((b) => ({ ...b, healthPath: b.healthPath === null ? null : escapeDollars(b.healthPath) })),
    };
    // Keys this generator does not write take their defaults, so the parsed config is compared key by key against these.
    const expected = {
      listen: v.listen.value,
      workers: v.workers,
      log: v.log,
      tls: null,
      admin: { listen: v.adminListen.value, token: v.adminToken },
      affinity: {
        by: v.by,
        cookie: { ...v.cookie, maxAge: v.cookie.maxAge?.value ?? null, secure },
        header: v.header,
        sessionTtl: v.sessionTtl.value,
        maxSessions: v.maxSessions,
        onRecovery: v.onRecovery,
      },
      trustedProxies: v.trustedProxies,
      healthCheck: { ...v.health, interval: v.health.interval.value, timeout: v.health.timeout.value, expectStatus: v.health.expectStatus.value },
      passive: { maxFails: v.passive.maxFails, window: v.passive.window.value, cooldown: v.passive.cooldown.value },
      timeouts: {
        connect: v.timeouts.connect.value,
        response: v.timeouts.response.value,
        clientIdle: v.timeouts.clientIdle.value,
        tunnel: v.timeouts.tunnel.value,
        shutdown: v.timeouts.shutdown.value,
      },
      retries: v.retries,
      backends: v.backends.map((b) => ({ ...b, url: new URL(b.url).origin })),
    };
    return { document, expected };
  });

describe('config loading never fails with anything but a ConfigError', () => {
  it('arbitrary text', () => {
    fc.assert(fc.property(anyText, (text) => expectConfigOrConfigError(text)), runs(400));
  });

  it('arbitrary text, with arbitrary environment variables for ${...}', () => {
    const env = fc.dictionary(fc.stringMatching(/^[A-Za-z_][A-Za-z0-9_]{0,5}$/), fc.string({ unit: 'grapheme', maxLength: 20 }), { maxKeys: 4 });
    fc.assert(fc.property(yamlLikeText, env, (text, vars) => expectConfigOrConfigError(text, vars)), runs(200));
  });

  it('YAML documents of arbitrary values', () => {
    const value = fc.oneof(fc.jsonValue(), fc.anything(), fc.dictionary(fc.constantFrom('backends', 'listen', 'affinity', 'tls', 'log'), fc.jsonValue()));
    fc.assert(fc.property(value, (v) => expectConfigOrConfigError(yamlOf(v))), runs(300));
  });

  it('the example config with keys replaced, deleted or added', () => {
    const example = parseYaml(EXAMPLE_CONFIG) as Json;
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 3 }), (changes) => {
        const changed = changes.reduce<unknown>(mutate, example);
        expectConfigOrConfigError(yamlOf(changed));
      }),
      runs(400),
    );
  });

  it('the example config text with characters inserted, deleted or replaced', () => {
    const edit = fc.tuple(fc.nat(), fc.nat(8), fc.oneof(anyText, yamlFragment));
    fc.assert(
      fc.property(fc.array(edit, { minLength: 1, maxLength: 3 }), (edits) => {
        const text = edits.reduce((t, [at, cut, insert]) => {
          const start = at % (t.length + 1);
          return t.slice(0, start) + insert + t.slice(start + cut);
        }, EXAMPLE_CONFIG);
        expectConfigOrConfigError(text);
      }),
      runs(300),
    );
  });

  it('valid configs with one value replaced by an arbitrary one', () => {
    fc.assert(
      fc.property(validConfig, mutation, ({ document }, change) => expectConfigOrConfigError(yamlOf(mutate(document, change)))),
      runs(200),
    );
  });

  it('loadConfigFile rejects a file it cannot read with a ConfigError at line 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'limpet-props-'));
    try {
      await fc.assert(
        fc.asyncProperty(fc.stringMatching(/^[a-z0-9._-]{1,20}$/), async (name) => {
          const file = join(dir, 'missing', name);
          const error = await loadConfigFile(file, {}).then(
            () => null,
            (e: unknown) => e,
          );
          expect(error).toBeInstanceOf(ConfigError);
          const { issues } = error as ConfigError;
          expect(issues).toEqual([{ file, line: 0, column: 0, path: '', message: expect.stringMatching(/^cannot read the config file: .+/) }]);
        }),
        runs(30),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('loadConfigFile gives what parseConfig gives for the same text', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'limpet-props-'));
    const file = join(dir, FILE);
    try {
      await fc.assert(
        fc.asyncProperty(fc.oneof(anyText, validConfig.map(({ document }) => yamlOf(document))), async (text) => {
          writeFileSync(file, text);
          const loaded = await loadConfigFile(file, {}).then(
            (config) => ({ config }),
            (error: unknown) => ({ error }),
          );
          const parsed = parseOutcome(text, {}, file);
          if ('error' in parsed) {
            expect('error' in loaded && loaded.error).toBeInstanceOf(ConfigError);
            expect((loaded as { error: ConfigError }).error.issues).toEqual(parsed.error.issues);
            expectWellFormed(parsed.error, text, file);
          } else {
            expect(loaded).toEqual(parsed);
          }
        }),
        runs(50),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('regression: keys and values with line breaks still give one line per issue', () => {
    const backends = 'backends: [{ id: a, url: "http://127.0.0.1:3001" }]\n';
    for (const text of [`"lo\\ng": {}\n${backends}`, `"a\\r\\nb": 1\n${backends}`, `admin: { token: "\${A\\nB}" }\n${backends}`]) {
      const outcome = parseOutcome(text);
      expect('error' in outcome).toBe(true);
      expectWellFormed((outcome as { error: ConfigError }).error, text);
    }
    expect(parseOutcome(`"lo\\ng": {}\n${backends}`)).toEqual({ error: expect.objectContaining({ message: 'limpet.yaml:1:1: lo\\ng: unknown key "lo\\ng" (did you mean "log"?)' }) });
  });

  it('regression: nesting too deep for the YAML composer is a ConfigError that points at it', () => {
    const texts = ['['.repeat(1_000) + ']'.repeat(1_000), '['.repeat(3_000), '{a: '.repeat(2_000), '- '.repeat(5_000) + 'x', 'a:\n' + '  '.repeat(200) + '- x'];
    for (const text of texts) {
      const outcome = parseOutcome(text);
      expect('error' in outcome).toBe(true);
      expectWellFormed((outcome as { error: ConfigError }).error, text);
    }
    const deepest = parseOutcome(`backends:\n  - ${'['.repeat(150)}`);
    // The map and the list are two levels, so the 99th "[" (column 103) is the 101st collection.
    expect('error' in deepest && deepest.error.issues).toEqual([expect.objectContaining({ line: 2, column: 103, message: 'collections nested more than 100 deep' })]);
  });

  it('regression: nesting too deep for the YAML composer cannot abort the process', () => {
    // The abort came from V8 on a second stack overflow in a fresh process, so it is checked in one, on the build.
    const load = new URL('../dist/src/config/load.js', import.meta.url).href;
    const script = `const { parseConfig, ConfigError } = await import(${JSON.stringify(load)});
      for (const n of [1000, 1000, 3000]) {
        try { parseConfig('['.repeat(n) + ']'.repeat(n), 'f.yaml', {}); } catch (error) { if (!(error instanceof ConfigError)) throw error; }
      }
      console.log('survived');`;
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    expect(child.stdout.trim(), child.stderr.slice(0, 2_000)).toBe('survived');
    expect(child.status).toBe(0);
  });
});

describe('a valid config round-trips', () => {
  it('values drawn from the valid ranges parse to what was written', () => {
    fc.assert(
      fc.property(validConfig, ({ document, expected }) => {
        const outcome = parseOutcome(yamlOf(document));
        if ('error' in outcome) throw new Error(outcome.error.message);
        expect(outcome.config).toMatchObject(expected);
      }),
      runs(300),
    );
  });

  it('string values containing "${" read back literally when written as "$${"', () => {
    const dollarHeavy = fc.string({ unit: fc.constantFrom('$', '{', '}', 'A', ':-', ' ', 'é'), maxLength: 20 });
    fc.assert(
      fc.property(fc.oneof(dollarHeavy, fc.string({ unit: 'grapheme', maxLength: 40 })), (secret) => {
        const text = yamlOf({ affinity: { cookie: { secret: escapeDollars(secret) } }, backends: [{ id: 'a', url: 'http://127.0.0.1:3001' }] });
        const outcome = parseOutcome(text);
        if ('error' in outcome) throw new Error(outcome.error.message);
        expect(outcome.config.affinity.cookie.secret).toBe(secret);
      }),
      runs(200),
    );
  });

  it('tls paths come back resolved against the config file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'limpet-props-'));
    writeFileSync(join(dir, 'cert.pem'), '');
    writeFileSync(join(dir, 'key.pem'), '');
    try {
      fc.assert(
        fc.property(validConfig, ({ document, expected }) => {
          const text = yamlOf({ ...document, tls: { cert: 'cert.pem', key: './key.pem' } });
          const outcome = parseOutcome(text, {}, join(dir, FILE));
          // With tls on, secure: null means true, so sameSite: none is valid either way.
          if ('error' in outcome) throw new Error(outcome.error.message);
          expect(outcome.config).toMatchObject({ ...expected, tls: { cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') } });
        }),
        runs(50),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------------------------

const UNITS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const;
type Unit = keyof typeof UNITS;
const unit = fc.constantFrom(...(Object.keys(UNITS) as Unit[]));

/** The typed failure parseDuration promises: a plain Error whose message says what was expected. */
function expectDurationRejected(value: unknown): void {
  let thrown: unknown;
  try {
    parseDuration(value);
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(Error);
  expect((thrown as Error).constructor).toBe(Error);
  expect((thrown as Error).message).toMatch(/^(expected a duration like .+, got .+|duration ".*" is too large)$/s);
}

describe('durations', () => {
  it('arbitrary strings parse to a whole, non-negative number of milliseconds or are rejected with a plain Error', () => {
    const durationish = fc.array(fc.constantFrom('0', '1', '9', '.', '5', 'ms', 's', 'm', 'h', 'd', ' ', '-', 'e', '999999999999'), { maxLength: 12 }).map((p) => p.join(''));
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary' }), durationish), (text) => {
        let ms: number;
        try {
          ms = parseDuration(text);
        } catch (error) {
          expectDurationRejected(text);
          // Text in the documented grammar is refused only for being too large.
          if (new RegExp(DURATION_PATTERN).test(text)) expect((error as Error).message).toMatch(/too large/);
          return;
        }
        expect(Number.isSafeInteger(ms) && ms >= 0).toBe(true);
        expect(text).toMatch(new RegExp(DURATION_PATTERN));
      }),
      runs(1000),
    );
  });

  it('values that are neither strings nor non-negative integers are rejected with a plain Error', () => {
    const notDuration = fc.oneof(
      fc.double().filter((n) => !(Number.isSafeInteger(n) && n >= 0)),
      fc.integer({ max: -1 }),
      fc.anything().filter((v) => typeof v !== 'string' && typeof v !== 'number'),
    );
    fc.assert(fc.property(notDuration, expectDurationRejected), runs(300));
  });

  it('non-negative integers are milliseconds as they are', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (n) => {
        expect(parseDuration(n)).toBe(n);
      }),
      runs(300),
    );
  });

  it('<n><unit> parts parse to exactly the sum of n × unit', () => {
    const part = fc.tuple(fc.integer({ min: 0, max: 1_000_000 }), unit);
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 4 }), (parts) => {
        const text = parts.map(([n, u]) => `${n}${u}`).join('');
        expect(parseDuration(text)).toBe(parts.reduce((sum, [n, u]) => sum + n * UNITS[u], 0));
      }),
      runs(500),
    );
  });

  it('decimal amounts parse to within half a millisecond of the exact value', () => {
    const part = fc.tuple(fc.integer({ min: 0, max: 100_000 }), fc.integer({ min: 0, max: 999 }), fc.integer({ min: 1, max: 3 }), unit);
    fc.assert(
      fc.property(fc.array(part, { minLength: 1, maxLength: 4 }), (parts) => {
        const text = parts.map(([whole, fraction, digits, u]) => `${whole}.${String(fraction % 10 ** digits).padStart(digits, '0')}${u}`).join('');
        // Exact value in thousandths of a millisecond: integers, so no rounding in the oracle itself.
        const exact = parts.reduce((sum, [whole, fraction, digits, u]) => sum + (whole * 1000 + (fraction % 10 ** digits) * 10 ** (3 - digits)) * UNITS[u], 0);
        expect(Math.abs(parseDuration(text) * 1000 - exact)).toBeLessThanOrEqual(500);
      }),
      runs(500),
    );
  });

  it('amounts too large for a safe integer are rejected, not rounded', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: BigInt(Number.MAX_SAFE_INTEGER) + 1n, max: 10n ** 400n }), unit, (n, u) => {
        expectDurationRejected(`${n}${u}`);
        expect(() => parseDuration(`${n}${u}`)).toThrow(/too large/);
      }),
      runs(200),
    );
  });

  it('parseDuration(formatDuration(ms)) gives ms back, and the formatted text matches the schema pattern', () => {
    // Multiples of a tenth of a unit are the values formatDuration writes with a decimal point ("1.5h").
    const tenths = fc.constantFrom(100, 6_000, 360_000).chain((tenth) => fc.integer({ min: 0, max: Math.floor(Number.MAX_SAFE_INTEGER / tenth) }).map((n) => n * tenth));
    const ms = fc.oneof(fc.maxSafeNat(), fc.integer({ min: 0, max: MAX_TIMER_MS }), fc.nat(100_000).map((n) => n * 100), tenths);
    fc.assert(
      fc.property(ms, (n) => {
        const text = formatDuration(n);
        expect(text).toMatch(new RegExp(DURATION_PATTERN));
        expect(parseDuration(text)).toBe(n);
      }),
      runs(1000),
    );
  });

  it('regression: a large decimal amount parses exactly, so it survives formatDuration', () => {
    expect(parseDuration('1249773964.9h')).toBe(4_499_186_273_640_000);
    expect(parseDuration(formatDuration(4_499_186_273_640_000))).toBe(4_499_186_273_640_000);
  });
});

// ---------------------------------------------------------------------------------------------
// Affinity cookie
// ---------------------------------------------------------------------------------------------

const cookieContent = fc.record({
  backendId,
  homeId: fc.option(backendId, { nil: null }),
  expiresAt: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 2 ** 40 }), fc.maxSafeNat()),
  seenAt: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 2 ** 40 })),
});

/** Secrets that are different HMAC keys: HMAC pads short keys with zero bytes, so "k" and "k\0" are one key. */
const twoSecrets = fc
  .tuple(fc.string({ unit: 'grapheme', maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 40 }))
  .filter(([a, b]) => Buffer.from(a).toString('latin1').replace(/\0+$/, '') !== Buffer.from(b).toString('latin1').replace(/\0+$/, ''));

const oneChar = fc.oneof(fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }), fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)));

type Damage =
  | { kind: 'replace'; at: number; with: string }
  | { kind: 'sameLowByte'; at: number; high: number }
  | { kind: 'delete'; at: number }
  | { kind: 'insert'; at: number; with: string }
  | { kind: 'truncate'; at: number };

const damage: fc.Arbitrary<Damage> = fc.oneof(
  fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), with: oneChar }),
  // A character that differs only above its low byte: equal to the original for any latin1 comparison.
  fc.record({ kind: fc.constant('sameLowByte' as const), at: fc.nat(), high: fc.integer({ min: 1, max: 0xff }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), with: oneChar }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
);

function applyDamage(value: string, change: Damage): string {
  const at = change.at % (value.length + (change.kind === 'insert' ? 1 : 0));
  switch (change.kind) {
    case 'replace':
      return value.slice(0, at) + change.with + value.slice(at + 1);
    case 'sameLowByte':
      return value.slice(0, at) + String.fromCharCode((value.charCodeAt(at) & 0xff) | (change.high << 8)) + value.slice(at + 1);
    case 'delete':
      return value.slice(0, at) + value.slice(at + 1);
    case 'insert':
      return value.slice(0, at) + change.with + value.slice(at);
    case 'truncate':
      return value.slice(0, at);
  }
}

describe('affinity cookie codec', () => {
  it('decode(encode(cookie)) gives the cookie back while it has not expired', () => {
    fc.assert(
      fc.property(anyString, cookieContent, fc.nat(), (secret, content, clock) => {
        const codec = new AffinityCookieCodec(secret);
        const cookie: AffinityCookie = { nonce: codec.newNonce(), ...content };
        const now = cookie.expiresAt === 0 ? clock : clock % cookie.expiresAt;
        expect(codec.decode(codec.encode(cookie), now)).toEqual(cookie);
        // A second codec with the same secret has no cache to lean on.
        expect(new AffinityCookieCodec(secret).decode(codec.encode(cookie), now)).toEqual(cookie);
      }),
      runs(300),
    );
  });

  it('an expired cookie is refused, also once it has been verified and cached', () => {
    fc.assert(
      fc.property(cookieContent.filter((c) => c.expiresAt > 0), fc.nat(), (content, later) => {
        const codec = new AffinityCookieCodec('secret');
        const cookie: AffinityCookie = { nonce: codec.newNonce(), ...content };
        const value = codec.encode(cookie);
        expect(codec.decode(value, cookie.expiresAt - 1)).toEqual(cookie);
        expect(codec.decode(value, cookie.expiresAt + (later % 1_000_000))).toBeNull();
      }),
      runs(300),
    );
  });

  it('a cookie changed by inserting, deleting or replacing a character, or truncated, never verifies', () => {
    fc.assert(
      fc.property(cookieContent, fc.array(damage, { minLength: 1, maxLength: 3 }), (content, changes) => {
        const codec = new AffinityCookieCodec('secret');
        const value = codec.encode({ nonce: codec.newNonce(), ...content });
        codec.decode(value, 0); // cache the genuine value first
        const damaged = changes.reduce(applyDamage, value);
        fc.pre(damaged !== value);
        expect(codec.decode(damaged, 0)).toBeNull();
      }),
      runs(1000),
    );
  });

  it('arbitrary strings, and strings shaped like a cookie, never verify and never throw', () => {
    const base64url = fc.stringMatching(/^[A-Za-z0-9_-]*$/);
    const shaped = fc
      .tuple(base64url, fc.oneof(backendId, fc.string()), fc.oneof(fc.nat().map((n) => n.toString(36)), fc.string()), base64url)
      .map(([nonce, id, expiry, mac]) => `${nonce.padEnd(16, 'A').slice(0, 16)}.${id}.${expiry}.${mac.padEnd(22, 'A').slice(0, 22)}`);
    const codec = new AffinityCookieCodec('secret');
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary' }), shaped), fc.nat(), (value, now) => {
        expect(codec.decode(value, now)).toBeNull();
      }),
      runs(1000),
    );
  });

  it('a cookie signed with another secret never verifies', () => {
    fc.assert(
      fc.property(twoSecrets, cookieContent, ([mine, theirs], content) => {
        const issuer = new AffinityCookieCodec(theirs);
        const value = issuer.encode({ nonce: issuer.newNonce(), ...content });
        expect(new AffinityCookieCodec(mine).decode(value, 0)).toBeNull();
      }),
      runs(300),
    );
  });

  it('findCookie never throws on arbitrary Cookie headers', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: 'binary' }), fc.array(fc.constantFrom('limpet', '=', ';', ' ', '"', 'x', '\t'), { maxLength: 30 }).map((p) => p.join(''))), token, (header, name) => {
        const value = findCookie(header, name);
        expect(value === undefined || typeof value === 'string').toBe(true);
        if (value !== undefined) expect(header.includes(`${name}=`)).toBe(true);
      }),
      runs(1000),
    );
  });

  it('findCookie finds the first cookie of that name in a well-formed header', () => {
    // RFC 6265 cookie-octet: printable ASCII except space, DQUOTE, comma, semicolon and backslash.
    const cookieValue = fc.stringMatching(/^[!#-+\--:<-[\]-~]{0,20}$/);
    const pair = fc.tuple(fc.constantFrom('limpet', 'xlimpet', 'limpetx', 'LIMPET', 'other'), cookieValue, fc.boolean());
    fc.assert(
      fc.property(fc.array(pair, { maxLength: 6 }), fc.constantFrom('; ', ';'), (pairs, separator) => {
        const header = pairs.map(([name, value, quoted]) => `${name}=${quoted ? `"${value}"` : value}`).join(separator);
        expect(findCookie(header, 'limpet')).toBe(pairs.find(([name]) => name === 'limpet')?.[1]);
      }),
      runs(500),
    );
  });

  it('serializeSetCookie writes every attribute, with a Max-Age in whole seconds and a valid Expires', () => {
    const LATEST_HTTP_DATE = Date.UTC(9999, 11, 31, 23, 59, 59);
    const HTTP_DATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d{2}:\d{2}:\d{2} GMT$/;
    const attributes: fc.Arbitrary<CookieAttributes> = fc.record({
      name: token,
      maxAge: fc.option(fc.oneof(fc.integer({ min: 1_000, max: 400 * 86_400_000 }), fc.integer({ min: 1_000, max: Number.MAX_SAFE_INTEGER })), { nil: null }),
      path: urlPath,
      domain: fc.option(hostname, { nil: null }),
      httpOnly: fc.boolean(),
      secure: fc.boolean(),
      sameSite: fc.constantFrom('lax', 'strict', 'none'),
    });
    const nowMs = fc.integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2200, 0, 1) });
    fc.assert(
      fc.property(attributes, fc.stringMatching(/^[A-Za-z0-9._~-]{0,80}$/), nowMs, (a, value, now) => {
        const parts = serializeSetCookie(a, value, now).split('; ');
        expect(parts[0]).toBe(`${a.name}=${value}`);
        expect(parts[1]).toBe(`Path=${a.path}`);
        const attribute = (key: string) => parts.find((p) => p.startsWith(`${key}=`))?.slice(key.length + 1);
        if (a.maxAge === null) {
          expect(attribute('Max-Age')).toBeUndefined();
          expect(attribute('Expires')).toBeUndefined();
        } else {
          const seconds = Math.floor(a.maxAge / 1000);
          expect(attribute('Max-Age')).toBe(String(seconds));
          const expires = attribute('Expires') ?? '';
          expect(expires).toMatch(HTTP_DATE);
          const expiry = now + seconds * 1000;
          if (expiry <= LATEST_HTTP_DATE) expect(Date.parse(expires)).toBe(Math.floor(expiry / 1000) * 1000);
          else expect(Date.parse(expires)).toBe(LATEST_HTTP_DATE);
        }
        expect(attribute('Domain')).toBe(a.domain ?? undefined);
        expect(parts.includes('HttpOnly')).toBe(a.httpOnly);
        expect(parts.includes('Secure')).toBe(a.secure);
        expect(attribute('SameSite')).toBe({ lax: 'Lax', strict: 'Strict', none: 'None' }[a.sameSite]);
      }),
      runs(500),
    );
  });

  it('regression: a MAC character replaced by one with the same low byte does not verify', () => {
    const codec = new AffinityCookieCodec('secret');
    const value = codec.encode({ nonce: codec.newNonce(), backendId: 'app-1', homeId: null, expiresAt: 0, seenAt: 0 });
    const at = value.length - 1;
    const forged = value.slice(0, at) + String.fromCharCode(value.charCodeAt(at) + 0x100);
    expect(codec.decode(forged, 0)).toBeNull();
  });

  it('regression: a Max-Age too long for a Date still gets a valid Expires', () => {
    const attributes: CookieAttributes = { name: 'limpet', maxAge: Number.MAX_SAFE_INTEGER, path: '/', domain: null, httpOnly: true, secure: false, sameSite: 'lax' };
    expect(serializeSetCookie(attributes, 'v', Date.UTC(2030, 0, 1))).toContain('; Expires=Fri, 31 Dec 9999 23:59:59 GMT;');
  });
});

// ---------------------------------------------------------------------------------------------
// Client address
// ---------------------------------------------------------------------------------------------

/** An address as a 128-bit number, IPv4 as its IPv4-mapped IPv6 form, zone ids dropped. */
function addressValue(address: string): bigint {
  const bare = address.split('%')[0]!;
  const v4 = (text: string) => text.split('.').reduce((acc, octet) => (acc << 8n) | BigInt(octet), 0n);
  if (isIP(bare) === 4) return (0xffffn << 32n) | v4(bare);
  const groups = (text: string): bigint[] =>
    text === '' ? [] : text.split(':').flatMap((g) => (g.includes('.') ? [v4(g) >> 16n, v4(g) & 0xffffn] : [BigInt(`0x${g}`)]));
  const [head = '', tail] = bare.split('::');
  const left = groups(head);
  const right = tail === undefined ? [] : groups(tail);
  const all = tail === undefined ? left : [...left, ...Array<bigint>(8 - left.length - right.length).fill(0n), ...right];
  return all.reduce((acc, g) => (acc << 16n) | g, 0n);
}

/** Whether an address falls in a trustedProxies list, worked out independently of BlockList. */
function trustedBy(entries: readonly string[]): (address: string) => boolean {
  const ranges = entries.map((entry) => {
    const [address = '', prefix] = entry.split('/');
    const ipv4 = isIP(address.split('%')[0]!) === 4;
    const bits = ipv4 ? 96 + Number(prefix ?? 32) : Number(prefix ?? 128);
    return { shift: BigInt(128 - bits), network: addressValue(address) >> BigInt(128 - bits) };
  });
  return (address) => {
    if (isIP(address) === 0) return false;
    const value = addressValue(address);
    return ranges.some(({ shift, network }) => value >> shift === network);
  };
}

const socketFrom = (remoteAddress: string | undefined) => ({ remoteAddress }) as unknown as Socket;

const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4().map((a) => `::ffff:${a}`));

/** A trustedProxies entry built around one address, so that addresses in the pool are sometimes inside. */
function entryFor(base: string): fc.Arbitrary<string> {
  const limit = isIP(base) === 4 ? 32 : 128;
  return fc.oneof(
    fc.constant(base),
    fc.integer({ min: 0, max: limit }).map((p) => `${base}/${p}`),
    fc.integer({ min: Math.max(0, limit - 16), max: limit }).map((p) => `${base}/${p}`),
    fc.constant(base.toUpperCase()),
    ...(isIP(base) === 6 ? [fc.constant(`${base}%eth0`), fc.integer({ min: 0, max: limit }).map((p) => `${base}%eth0/${p}`)] : []),
  );
}

/** Ways an address shows up as one X-Forwarded-For hop. */
function hopFor(a: string): fc.Arbitrary<string> {
  const ipv4 = isIP(a) === 4;
  return fc.tuple(fc.constantFrom('', ' ', '  ', '\t'), fc.constantFrom('', ' ', '\t'), port, fc.nat(6)).map(([before, after, p, style]) => {
    const forms = ipv4
      ? [a, `${a}:${p}`, `[${a}]`, `::ffff:${a}`, `[::ffff:${a}]:${p}`, `::FFFF:${a}`, a]
      : [a, `[${a}]`, `[${a}]:${p}`, a.toUpperCase(), `[${a.toUpperCase()}]:${p}`, `${a}%eth0`, `[${a}%Eth0]:${p}`];
    return `${before}${forms[style]}${after}`;
  });
}

const garbageHop = fc.oneof(
  fc.constantFrom('', ' ', 'unknown', '_hidden', '[', ']', '[::1', '::1]:80', '1.2.3.4:80:90', '1.2.3', '300.1.1.1', '[1.2.3.4', 'fe80::1%', '::ffff:0:1.2.3.4', '::ffff:1.2.3.4%eth0', '"1.2.3.4"'),
  fc.string({ unit: 'binary', maxLength: 12 }),
);

/** A trusted list, a pool of addresses partly inside it, a peer and an X-Forwarded-For header drawn from both. */
const forwardingScenario = fc
  .uniqueArray(address, { minLength: 1, maxLength: 6 })
  .chain((pool) =>
    fc.record({
      trustedProxies: fc.subarray(pool).chain((bases) => (bases.length === 0 ? fc.constant<string[]>([]) : (fc.tuple(...bases.map(entryFor)) as fc.Arbitrary<string[]>))),
      peer: fc.oneof(fc.constantFrom(...pool), fc.constantFrom(...pool).map((a) => (isIP(a) === 4 ? `::ffff:${a}` : `${a}%eth0`)), fc.constant(undefined)),
      header: fc.oneof(
        fc.array(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...pool).chain(hopFor) }, { weight: 1, arbitrary: garbageHop }), { maxLength: 8 }).chain((hops) =>
          fc.constantFrom(',', ', ', ' ,').map((separator) => hops.join(separator)),
        ),
        fc.array(fc.constantFrom(...pool).chain(hopFor), { minLength: 100, maxLength: 300 }).map((hops) => hops.join(',')),
        fc.string({ unit: 'binary' }),
        fc.constant(undefined),
      ),
    }),
  );

/** Scenarios with a header and a trusted peer: the peer's own address joins the list when it was not in already. */
const behindTrustedPeer = forwardingScenario
  .filter((s): s is typeof s & { peer: string; header: string } => s.peer !== undefined && s.header !== undefined)
  .map((s) => (trustedBy(s.trustedProxies)(normaliseAddress(s.peer)) ? s : { ...s, trustedProxies: [...s.trustedProxies, s.peer] }));

describe('client address', () => {
  it('never throws, and an untrusted peer is the client whatever X-Forwarded-For says', () => {
    fc.assert(
      fc.property(forwardingScenario, ({ trustedProxies, peer, header }) => {
        const resolver = new ClientAddressResolver(trustedProxies);
        const isTrusted = trustedBy(trustedProxies);
        const socket = socketFrom(peer);
        const peerAddress = normaliseAddress(peer ?? '');
        expect(resolver.peerAddress(socket)).toBe(peerAddress);
        expect(resolver.peerIsTrusted(socket)).toBe(peerAddress !== '' && isTrusted(peerAddress));
        const client = resolver.resolve(socket, header);
        if (!isTrusted(peerAddress) || header === undefined) expect(client).toBe(peerAddress);
      }),
      runs(1000),
    );
  });

  it('behind a trusted peer the client is the rightmost hop not vouched for, and always the peer or a hop of the header', () => {
    fc.assert(
      fc.property(behindTrustedPeer, ({ trustedProxies, peer, header }) => {
        const isTrusted = trustedBy(trustedProxies);
        const peerAddress = normaliseAddress(peer);
        expect(isTrusted(peerAddress)).toBe(true);
        const client = new ClientAddressResolver(trustedProxies).resolve(socketFrom(peer), header);
        const hops = header.split(',').map(parseForwardedHop);
        expect(client === peerAddress || hops.includes(client), `${client} is neither the peer nor in the header`).toBe(true);
        // The peer stands right of every hop. The client must sit where every hop to its right is a readable,
        // trusted address, and if the client is itself trusted, the walk must have had nowhere further left to go.
        const positions = hops.flatMap((hop, i) => (hop === client ? [i] : []));
        if (client === peerAddress) positions.push(hops.length);
        const rightOfIsVouched = (i: number) => hops.slice(i + 1).every((hop) => hop !== null && isTrusted(hop));
        const couldStopHere = (i: number) => !isTrusted(client) || i === 0 || hops[i - 1] === null;
        expect(positions.some((i) => rightOfIsVouched(i) && couldStopHere(i)), `${client} breaks the rightmost-untrusted rule`).toBe(true);
      }),
      runs(1000),
    );
  });

  it('a hop parses to a normalised address, or to nothing', () => {
    fc.assert(
      fc.property(fc.oneof(address.chain(hopFor), garbageHop, fc.string({ unit: 'binary' })), (hop) => {
        const parsed = parseForwardedHop(hop);
        if (parsed !== null) {
          expect(isIP(parsed)).not.toBe(0);
          expect(normaliseAddress(parsed)).toBe(parsed);
        }
      }),
      runs(1000),
    );
  });

  it('every spelling of one address in a hop parses to the same address', () => {
    fc.assert(
      fc.property(fc.ipV4(), port, (a, p) => {
        for (const hop of [a, ` ${a} `, `${a}:${p}`, `[${a}]`, `::ffff:${a}`, `::FFFF:${a}`, `[::ffff:${a}]:${p}`]) expect(parseForwardedHop(hop)).toBe(a);
      }),
      runs(300),
    );
    fc.assert(
      fc.property(fc.ipV6(), port, (a, p) => {
        for (const hop of [a.toUpperCase(), `[${a}]`, `[${a.toUpperCase()}]:${p}`]) expect(parseForwardedHop(hop)).toBe(normaliseAddress(a));
      }),
      runs(300),
    );
  });

  it('every trustedProxies list the config accepts builds a resolver', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(cidr, fc.ipV6().map((a) => `${a}%eth0`), fc.ipV4().map((a) => `::ffff:${a}%eth0`)), { minLength: 1, maxLength: 6 }), (entries) => {
        const text = yamlOf({ trustedProxies: entries, backends: [{ id: 'a', url: 'http://127.0.0.1:3001' }] });
        const outcome = parseOutcome(text);
        fc.pre('config' in outcome);
        const { trustedProxies } = (outcome as { config: LimpetConfig }).config;
        const resolver = new ClientAddressResolver(trustedProxies);
        const isTrusted = trustedBy(trustedProxies);
        for (const entry of trustedProxies) {
          const base = normaliseAddress(entry.split('/')[0]!);
          expect(resolver.peerIsTrusted(socketFrom(base))).toBe(isTrusted(base));
        }
      }),
      runs(300),
    );
  });

  it('regression: an IPv4-mapped IPv6 subnet in trustedProxies builds a resolver that trusts that IPv4 range', () => {
    const resolver = new ClientAddressResolver(['::ffff:10.0.0.0/104']);
    expect(resolver.resolve(socketFrom('10.1.2.3'), '203.0.113.9')).toBe('203.0.113.9');
    expect(resolver.resolve(socketFrom('::ffff:10.1.2.3'), '203.0.113.9')).toBe('203.0.113.9');
    expect(resolver.resolve(socketFrom('11.0.0.1'), '203.0.113.9')).toBe('11.0.0.1');
  });

  it('regression: addresses with a zone id build a resolver, and the zone does not change trust', () => {
    const resolver = new ClientAddressResolver(['::ffff:10.0.0.1%eth0', '0000:0000:0000:0000:0000:0000:100.10.10.0%eth0']);
    expect(resolver.resolve(socketFrom('10.0.0.1'), '203.0.113.9')).toBe('203.0.113.9');
    // The long spelling with a zone is a trusted hop, so the walk goes on past it to the client.
    expect(resolver.resolve(socketFrom('::100.10.10.0'), '203.0.113.9, 0000:0000:0000:0000:0000:0000:100.10.10.0%eth1')).toBe('203.0.113.9');
  });

  it('regression: a hop that is not an IPv4-mapped address is not cut down to a non-address', () => {
    expect(parseForwardedHop('::ffff:0:1.2.3.4')).toBe('::ffff:0:1.2.3.4');
    expect(parseForwardedHop('::ffff:1.2.3.4%eth0')).toBe('::ffff:1.2.3.4%eth0');
    expect(normaliseAddress('::FFFF:1.2.3.4')).toBe('1.2.3.4');
  });

  it('a header of a million characters resolves', () => {
    const resolver = new ClientAddressResolver(['10.0.0.0/8']);
    const header = `198.51.100.7, ${Array.from({ length: 80_000 }, (_, i) => `10.0.${(i >> 8) & 255}.${i & 255}`).join(', ')}`;
    expect(header.length).toBeGreaterThan(1_000_000);
    expect(resolver.resolve(socketFrom('10.0.0.1'), header)).toBe('198.51.100.7');
  });
});
