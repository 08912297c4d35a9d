import { isIP } from 'node:net';
import { z } from 'zod';
import { bareNumberHint, DURATION_PATTERN, formatDuration, parseDuration } from './duration.js';
import { formatSize, parseSize, SIZE_PATTERN } from './size.js';

/** How a config value reads in an error message: strings quoted, YAML maps and lists named. */
function show(value: unknown): string {
  if (value === undefined || value === null) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value);
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  return String(value);
}

const expected = (what: string) => (issue: { input?: unknown }) => `expected ${what}, got ${show(issue.input)}`;

/** Raises a custom issue from inside a transform and yields nothing. */
function fail(ctx: z.RefinementCtx, message: string): never {
  ctx.addIssue({ code: 'custom', message });
  return z.NEVER;
}

function integer(min: number, max: number) {
  const error = expected(`an integer from ${min} to ${max}`);
  return z.number({ error }).int({ error }).min(min, { error }).max(max, { error });
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: expected(values.map((v) => `"${v}"`).join(', ').replace(/, ([^,]*)$/, ' or $1')) });
}

function text(what = 'a string') {
  return z.string({ error: expected(what) });
}

function pattern(what: string, regex: RegExp) {
  return text(what).regex(regex, { error: expected(what) });
}

const bool = () => z.boolean({ error: expected('true or false') });

/**
 * An optional section of the file. Absent, or present but empty (`healthCheck:` with every key
 * commented out, which YAML reads as null), it takes all its defaults.
 */
function section<S extends z.core.$ZodLooseShape>(shape: S) {
  const object = z.strictObject(shape, { error: expected('a map of keys') });
  return object.nullish().transform((value) => value ?? object.parse({}));
}

/** Node fires timers longer than 2^31-1 ms after 1 ms, which would turn a typo into a busy loop. */
const MAX_TIMER_MS = 596 * 3_600_000;

/** A quantity written with units or as a plain integer of its base unit: durations (ms) and sizes (bytes). */
interface UnitGrammar {
  what: string;
  pattern: string;
  parse(value: unknown): number;
  format(amount: number): string;
  /** Said after "must be at least", when the value was probably written in another unit. */
  hint?(value: string | number, min: number): string;
}

const DURATION_GRAMMAR: UnitGrammar = {
  what: 'a duration',
  pattern: DURATION_PATTERN,
  parse: parseDuration,
  format: formatDuration,
  // `sessionTtl: 30` is 30 ms, below its 1s minimum: seconds were meant.
  hint: (value, min) => (typeof value === 'number' && value > 0 && value * 1000 >= min ? ` (${bareNumberHint(value)})` : ''),
};
const SIZE_GRAMMAR: UnitGrammar = { what: 'a size', pattern: SIZE_PATTERN, parse: parseSize, format: formatSize };

/** A value in `grammar` from `min` to `max`; `zeroMeansOff` also admits 0 below `min`. */
function quantity(grammar: UnitGrammar, min: number, max: number, zeroMeansOff = false) {
  const error = (issue: { input?: unknown }) => {
    try {
      grammar.parse(issue.input);
      return `expected ${grammar.what}, got ${show(issue.input)}`;
    } catch (problem) {
      return (problem as Error).message;
    }
  };
  // The union is what the JSON schema shows editors; grammar.parse is the one grammar behind it.
  return z
    .union([text().regex(new RegExp(grammar.pattern), { error }), z.number({ error }).int({ error }).min(0, { error })], { error })
    .transform((value, ctx) => {
      let amount: number;
      try {
        amount = grammar.parse(value);
      } catch (problem) {
        return fail(ctx, (problem as Error).message);
      }
      if (amount < min && !(zeroMeansOff && amount === 0)) return fail(ctx, `must be at least ${grammar.format(min)}, got ${show(value)}${grammar.hint?.(value, min) ?? ''}`);
      if (amount > max) return fail(ctx, `must be at most ${grammar.format(max)}, got ${show(value)}`);
      return amount;
    });
}

const duration = (min = 0, max = MAX_TIMER_MS) => quantity(DURATION_GRAMMAR, min, max);

/**
 * Durations of keys that are a second or more in practice. A bare number counts milliseconds, so
 * one below 1000 here (`shutdown: 10`) is almost surely seconds without a unit, and parseConfig warns.
 * Sub-second connect and check timeouts are common on a LAN, so those keys are not among them.
 */
export const USUALLY_SECONDS = new WeakSet<z.core.$ZodType>();

const seconds = (min = 0) => {
  const schema = duration(min);
  USUALLY_SECONDS.add(schema);
  return schema;
};
const size = (min: number, max: number, zeroMeansOff = false) => quantity(SIZE_GRAMMAR, min, max, zeroMeansOff);

/** Where a listener binds. */
export interface HostPort {
  host: string;
  port: number;
}

const HOSTNAME = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*$/;
const LISTEN_TEXT = 'an address like "0.0.0.0:8080", "[::1]:9090" or ":8080"';

const LISTEN = /^(?:\[([^\]]*)\]|([^:[\]]*)):(\d{1,5})$/;

const listenError = (issue: { input?: unknown }) => {
  const { input } = issue;
  const hint =
    typeof input === 'number'
      ? ` (write ":${input}" to listen on every address)`
      : typeof input === 'string' && isIP(input) === 6
        ? ' (put IPv6 addresses in brackets, e.g. "[::1]:9090")'
        : '';
  return `expected ${LISTEN_TEXT}, got ${show(input)}${hint}`;
};

const listen = z
  .string({ error: listenError })
  .regex(LISTEN, { error: listenError })
  .transform((value, ctx): HostPort => {
    const [, bracketed, plain = '', digits] = LISTEN.exec(value) ?? [];
    const port = Number(digits);
    if (port > 65535) return fail(ctx, `port must be from 0 to 65535, got ${show(value)}`);
    if (bracketed !== undefined) {
      if (isIP(bracketed) !== 6) return fail(ctx, `expected an IPv6 address inside the brackets, got ${show(value)}`);
      return { host: bracketed, port };
    }
    if (plain !== '' && isIP(plain) === 0 && !HOSTNAME.test(plain)) return fail(ctx, `expected ${LISTEN_TEXT}, got ${show(value)}`);
    return { host: plain === '' ? '0.0.0.0' : plain, port };
  });

const CIDR_TEXT = 'an IP address or CIDR like "10.0.0.0/8" or "::1/128"';

const cidr = text(CIDR_TEXT).transform((value, ctx) => {
  const [address = '', prefix, extra] = value.split('/');
  const family = isIP(address);
  if (family === 0 || extra !== undefined) return fail(ctx, `expected ${CIDR_TEXT}, got ${show(value)}`);
  const limit = family === 4 ? 32 : 128;
  if (prefix !== undefined && !(/^\d{1,3}$/.test(prefix) && Number(prefix) <= limit)) {
    return fail(ctx, `expected a prefix length from 0 to ${limit} after "/", got ${show(value)}`);
  }
  return value;
});

const URL_TEXT = 'an http:// or https:// origin like "http://10.0.0.11:3000"';

const backendUrl = pattern(URL_TEXT, /^https?:\/\//i).transform((value, ctx) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return fail(ctx, `expected ${URL_TEXT}, got ${show(value)}`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.hostname === '') {
    return fail(ctx, `expected ${URL_TEXT}, got ${show(value)}`);
  }
  // limpet forwards the client's path unchanged, so a path here would be silently ignored.
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '' || url.username !== '' || url.password !== '') {
    return fail(ctx, `expected ${URL_TEXT} with no path, query or credentials, got ${show(value)}`);
  }
  return url.origin;
});

const REDIS_TEXT = 'a Redis URL like "redis://127.0.0.1:6379/0" or "rediss://:password@redis.internal:6380"';

const redisUrl = pattern(REDIS_TEXT, /^rediss?:\/\//i).transform((value, ctx) => {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return fail(ctx, `expected ${REDIS_TEXT}, got ${show(value)}`);
  }
  const database = url.pathname.replace(/^\//, '');
  if (url.hostname === '' || !/^\d{0,5}$/.test(database) || url.search !== '' || url.hash !== '') return fail(ctx, `expected ${REDIS_TEXT}, got ${show(value)}`);
  return value;
});

const HOST_PORT_TEXT = 'a host:port like "10.0.0.5:26379"';
const hostPort = pattern(HOST_PORT_TEXT, /^(?:\[[^\]]+\]|[^:[\]\s]+):\d{1,5}$/).transform((value, ctx): HostPort => {
  const at = value.lastIndexOf(':');
  const port = Number(value.slice(at + 1));
  if (port < 1 || port > 65535) return fail(ctx, `port must be from 1 to 65535, got ${show(value)}`);
  return { host: value.slice(0, at).replace(/^\[|\]$/g, ''), port };
});

const STATUS_TEXT = 'a status code or range like "200-399"';

const statusRange = z
  .union([text(STATUS_TEXT), z.number({ error: expected(STATUS_TEXT) }).int({ error: expected(STATUS_TEXT) })])
  .transform((value, ctx) => {
    const match = /^(\d{3})(?:-(\d{3}))?$/.exec(String(value));
    if (match === null) return fail(ctx, `expected ${STATUS_TEXT}, got ${show(value)}`);
    const min = Number(match[1]);
    const max = Number(match[2] ?? match[1]);
    if (min < 100 || max > 599) return fail(ctx, `expected status codes from 100 to 599, got ${show(value)}`);
    if (min > max) return fail(ctx, `status range ${show(value)} is out of order: write the lower code first, like "${max}-${min}"`);
    return { min, max };
  });

/** RFC 7230 token: what a header name, and an RFC 6265 cookie name, may contain. */
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const TOKEN_CHARS = "letters, digits and !#$%&'*+-.^_`|~";
const URL_PATH = /^\/[^\s;]*$/;
const BACKEND_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const healthPath = () =>
  pattern('a path starting with "/"', URL_PATH).nullable().default(null).describe('Health check path for this backend; null uses healthCheck.path.');

const DRAIN_TEXT = 'true, false or { deadline: <duration> }';
const drainWithDeadline = z.strictObject(
  { deadline: seconds(1_000).describe('After this long, the clients still here move and its WebSockets close 1001.') },
  { error: expected(DRAIN_TEXT) },
);

/** A union names no branch in its error: for a map, say what is wrong inside it. */
function drainError(issue: { input?: unknown }): string {
  const { input } = issue;
  if (typeof input !== 'object' || input === null || Array.isArray(input)) return expected(DRAIN_TEXT)(issue);
  const inner = drainWithDeadline.safeParse(input).error?.issues[0];
  if (inner === undefined) return expected(DRAIN_TEXT)(issue);
  // Unknown keys inside it are reported on their own, by key, like everywhere else in the file.
  const key = inner.path.length > 0 ? `${inner.path.join('.')}: ` : '';
  return `expected ${DRAIN_TEXT}: ${key}${inner.message}`;
}

const backend = z
  .strictObject(
    {
      id: pattern('an id of letters, digits, ".", "_" or "-", starting with a letter or digit, at most 64 long', BACKEND_ID).describe(
        'Stable name, used in metrics, cookies and the admin API.',
      ),
      url: backendUrl.describe('http:// or https:// origin of the backend, no path.'),
      weight: integer(1, 1000).default(1).describe('Relative share of new clients, 1-1000.'),
      drain: z
        .union([bool(), drainWithDeadline], { error: drainError })
        .default(false)
        .describe('Keep the clients pinned here but send it no new ones; with a deadline, move the remaining ones when it passes.'),
      healthPath: healthPath(),
    },
    { error: expected('a map with id and url') },
  )
  // Two flat fields for the proxy: whether it drains, and the deadline (ms after the drain began).
  .transform(({ drain, ...entry }) => ({ ...entry, drain: drain !== false, drainDeadline: typeof drain === 'object' ? drain.deadline : null }));

/** A DNS name as written in a `dns` or `srv` entry; compared and shown lower-case, without a final dot. */
const DNS_NAME = /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$/;
const DNS_TARGET_TEXT = 'a "name:port" like "app.internal:3000"';

function dnsName(value: string, ctx: z.RefinementCtx, what: string): string {
  if (isIP(value) !== 0) return fail(ctx, `expected ${what}, got the address ${show(value)} (an address needs no lookup: write it as { id, url })`);
  if (!DNS_NAME.test(value)) return fail(ctx, `expected ${what}, got ${show(value)}`);
  return normalName(value);
}

/** DNS names are case-insensitive, and a final dot changes nothing for a lookup that uses no search list. */
function normalName(value: string): string {
  return value.toLowerCase().replace(/\.$/, '');
}

/** Where a `dns` entry's addresses are served: the name to resolve and the port every address listens on. */
export interface DnsTarget {
  name: string;
  port: number;
}

const dnsTarget = text(DNS_TARGET_TEXT).transform((value, ctx): DnsTarget => {
  const colon = value.lastIndexOf(':');
  const digits = value.slice(colon + 1);
  if (colon < 0 || !/^\d{1,5}$/.test(digits) || Number(digits) < 1 || Number(digits) > 65535) {
    return fail(ctx, `expected ${DNS_TARGET_TEXT} with a port from 1 to 65535, got ${show(value)}`);
  }
  return { name: dnsName(value.slice(0, colon), ctx, DNS_TARGET_TEXT), port: Number(digits) };
});

const dnsBackends = z.strictObject(
  {
    dns: dnsTarget.describe('"name:port": every A and AAAA address of the name is a backend at that port, with id "name/address".'),
    weight: integer(1, 1000).default(1).describe('Relative share of new clients of each address, 1-1000.'),
    healthPath: healthPath(),
  },
  { error: expected('a map with dns') },
);

const SRV_NAME_TEXT = 'an SRV name like "_http._tcp.app.internal"';

const srvBackends = z.strictObject(
  {
    srv: text(SRV_NAME_TEXT)
      .transform((value, ctx) => dnsName(value, ctx, SRV_NAME_TEXT))
      .describe('SRV name: every address of every target of the lowest priority is a backend at its port and SRV weight, with id "name/address:port".'),
    healthPath: healthPath(),
  },
  { error: expected('a map with srv') },
);

/** Which backends an entry stands for, so a duplicate can be named: its id, or the name it resolves. */
function entryIdentity(entry: unknown): { key: 'id' | 'dns' | 'srv'; what: string } | undefined {
  if (typeof entry !== 'object' || entry === null) return undefined;
  const { id, dns, srv } = entry as { id?: unknown; dns?: unknown; srv?: unknown };
  if (typeof id === 'string') return { key: 'id', what: `backend id ${show(id)}` };
  // An entry that parsed is already transformed (dns: { name, port }); one that did not is as written.
  if (typeof dns === 'string') return { key: 'dns', what: `dns name ${show(normalName(dns.includes(':') ? dns.slice(0, dns.lastIndexOf(':')) : dns))}` };
  if (typeof dns === 'object' && dns !== null) return { key: 'dns', what: `dns name ${show((dns as DnsTarget).name)}` };
  if (typeof srv === 'string') return { key: 'srv', what: `srv name ${show(normalName(srv))}` };
  return undefined;
}

const backends = z
  .array(
    z.union([backend, dnsBackends, srvBackends], {
      error: expected('a backend: { id, url }, { dns: "name:port" } or { srv: "_service._tcp.name" }'),
    }),
    { error: expected('a list of backends') },
  )
  .min(1, { error: 'expected at least one backend' })
  // Runs even when some entries have other mistakes, so a duplicate is reported alongside them.
  .superRefine(
    (entries, ctx) => {
      const firstIndex = new Map<string, number>();
      entries.forEach((entry: unknown, index) => {
        const identity = entryIdentity(entry);
        if (identity === undefined) return;
        const first = firstIndex.get(identity.what);
        if (first === undefined) firstIndex.set(identity.what, index);
        else ctx.addIssue({ code: 'custom', path: [index, identity.key], message: `duplicate ${identity.what} (also used by backends[${first}])` });
      });
    },
    { when: (payload) => Array.isArray(payload.value) },
  );

/** A DNS server of `discovery.servers`: an IP address with an optional port, as `dns.setServers` takes it. */
const DNS_SERVER_TEXT = 'a DNS server address like "10.0.0.2", "10.0.0.2:53" or "[fd00::2]:53"';

const dnsServer = text(DNS_SERVER_TEXT).transform((value, ctx) => {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d{1,5}))?$/.exec(value);
  const bare = isIP(value) === 6 ? value : undefined;
  const host = bare ?? match?.[1] ?? match?.[2];
  const port = bare === undefined && match?.[3] !== undefined ? Number(match[3]) : 53;
  if (host === undefined || isIP(host) === 0 || (match?.[1] !== undefined && isIP(host) !== 6)) {
    return fail(ctx, `expected ${DNS_SERVER_TEXT}, got ${show(value)}${HOSTNAME.test(value) ? ' (a server is given by address, not by name)' : ''}`);
  }
  if (port < 1 || port > 65535) return fail(ctx, `port must be from 1 to 65535, got ${show(value)}`);
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
});

/**
 * The whole config file: every key, its type and its default. It is the single source for
 * validation, for the `LimpetConfig` type the proxy reads, and for config/limpet.schema.json, so
 * the three cannot drift apart.
 */
export const configSchema = z
  .strictObject(
    {
      listen: listen.prefault('0.0.0.0:8080').describe('host:port the proxy listens on. Default "0.0.0.0:8080".'),
      workers: z
        .union([integer(1, 256), z.literal('auto')], { error: expected('an integer from 1 to 256 or "auto"') })
        .default(1)
        .describe('Processes sharing the listener: 1-256, or "auto" for one per CPU core. Default 1.'),
      workerBalance: oneOf(['roundRobin', 'kernel'])
        .default('roundRobin')
        .describe(
          'How workers get connections: "roundRobin", the primary hands them out evenly; "kernel", workers accept directly (far cheaper per new connection, less even). Default "roundRobin".',
        ),
      log: section({
        level: oneOf(['debug', 'info', 'warn', 'error']).default('info').describe('Least severe level logged. Default "info".'),
        access: bool().default(false).describe('Log one JSON line per request. Default false.'),
        accessQuery: bool()
          .default(false)
          .describe('Keep the query string in the access log\'s path; off because queries can carry tokens. Default false.'),
      }).describe('Logging: JSON lines on stdout.'),
      tls: z
        .strictObject(
          {
            cert: text('a file path').min(1, { error: expected('a file path') }).describe('PEM certificate chain, relative to this file.'),
            key: text('a file path').min(1, { error: expected('a file path') }).describe('PEM private key, relative to this file.'),
            http2: bool()
              .default(true)
              .describe('Offer HTTP/2 beside HTTP/1.1 (ALPN "h2", "http/1.1"); backends still get HTTP/1.1. Changing it needs a restart. Default true.'),
          },
          { error: expected('a map with cert and key') },
        )
        .nullable()
        .default(null)
        .describe('Serve HTTPS instead of HTTP. Default: plain HTTP.'),
      stateFile: text('a file path')
        .min(1, { error: expected('a file path') })
        .refine((path) => !path.endsWith('/'), { error: (issue) => `expected a file path, not a directory, got ${show(issue.input)}` })
        .nullable()
        .default(null)
        .describe(
          'File keeping remembered pins and drains made through the admin API across a restart, relative to this file; written within about a second of a change and at shutdown. Default null: kept in memory only.',
        ),
      admin: section({
        listen: listen.prefault('127.0.0.1:9090').describe('host:port of /metrics, /healthz, /readyz, /backends and the status page. Default "127.0.0.1:9090".'),
        token: text().default('').describe('When not empty, mutating admin calls need "Authorization: Bearer <token>". Default "" (no token).'),
      }).describe('Admin and metrics listener.'),
      affinity: section({
        by: oneOf(['ip', 'cookie', 'header']).default('cookie').describe('What pins a client to a backend. Default "cookie".'),
        cookie: section({
          name: pattern(`a cookie name (${TOKEN_CHARS})`, TOKEN).default('limpet').describe('Name of the affinity cookie. Default "limpet".'),
          secret: text()
            .default('')
            .describe('HMAC key signing the cookie; every replica must share it. Default "": a random key per process, with a warning.'),
          maxAge: duration(1_000, Number.MAX_SAFE_INTEGER)
            .nullable()
            .default(null)
            .describe('Cookie lifetime, at least 1s. Default null: a browser-session cookie.'),
          path: pattern('a path starting with "/"', URL_PATH).default('/').describe('Cookie Path. Default "/".'),
          domain: pattern('a domain like "example.com"', /^\.?[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$/)
            .nullable()
            .default(null)
            .describe('Cookie Domain. Default null: host-only.'),
          httpOnly: bool().default(true).describe('Hide the cookie from page scripts. Default true.'),
          secure: bool().nullable().default(null).describe('Send the cookie over HTTPS only. Default null: true on a TLS listener, else false.'),
          sameSite: oneOf(['lax', 'strict', 'none']).default('lax').describe('Cookie SameSite; "none" needs secure: true. Default "lax".'),
        }).describe('The affinity cookie (by: cookie).'),
        header: pattern(`a header name (${TOKEN_CHARS})`, TOKEN)
          .default('X-Session-Id')
          .describe('Request header keying clients for by: header; requests without it fall back to the client IP. Default "X-Session-Id".'),
        sessionTtl: duration(1_000, Number.MAX_SAFE_INTEGER)
          .prefault('30m')
          .describe('How long an idle client\'s pin is remembered (ip/header modes), at least 1s. Default "30m".'),
        maxSessions: integer(1, 100_000_000).default(100_000).describe('Most pins remembered at once (ip/header modes). Default 100000.'),
        onRecovery: oneOf(['stay', 'return'])
          .default('stay')
          .describe('Where moved clients go when their backend heals: stay on the new one, or return. Default "stay".'),
        rebalance: z
          .strictObject(
            {
              idleAfter: seconds(1_000).describe(
                "A client idle at least this long (set it to the app's session timeout) whose backend is not its home is moved home on its next request. At least 1s.",
              ),
              maxMovesPerSecond: z
                .number({ error: expected('a number of moves per second above 0') })
                .positive({ error: expected('a number of moves per second above 0') })
                .max(1_000_000, { error: expected('a number of moves per second up to 1000000') })
                .default(50)
                .describe('Most clients moved home per second by the whole proxy (its workers share it). Default 50.'),
            },
            { error: expected('a map with idleAfter') },
          )
          .nullable()
          .default(null)
          .describe('Move idle clients to their home backend after the fleet changes. Default null: a live client is never moved.'),
      }).describe('How clients are pinned to backends.'),
      balance: section({
        slowStart: seconds()
          .prefault(0)
          .describe('A backend that is added or heals ramps its share of new clients from about 0 to its weight over this time. 0 turns it off. Default 0.'),
        maxLoadFactor: z
          .number({ error: expected('a number above 1, like 1.25') })
          .gt(1, { error: expected('a number above 1, like 1.25') })
          .max(100, { error: expected('a number from above 1 to 100') })
          .nullable()
          .default(null)
          .describe(
            'A backend holding more than this times its weighted share of live clients gets no new client while another is below it; never applied to a pinned client. Default null: off.',
          ),
      }).describe('Where new clients go.'),
      trustedProxies: z
        .array(cidr, { error: expected('a list of addresses or CIDRs') })
        .default([])
        .describe('Addresses or CIDRs whose X-Forwarded-For is believed. Default [].'),
      proxyProtocol: z
        .strictObject(
          {
            from: z
              .array(cidr, { error: expected('a list of addresses or CIDRs') })
              .min(1, { error: 'expected at least one address or CIDR (leave proxyProtocol out to turn it off)' })
              .describe('Peers (L4 balancers) whose every connection must open with a PROXY protocol v1 or v2 header; other peers must not send one.'),
          },
          { error: expected('a map with from') },
        )
        .nullable()
        .default(null)
        .describe(
          'Read the PROXY protocol header of connections from balancers in front: its source address is the client. Default null: off.',
        ),
      healthCheck: section({
        path: pattern('a path starting with "/"', URL_PATH).default('/health').describe('Path probed with GET on each backend. Default "/health".'),
        interval: seconds(100).prefault('2s').describe('Time between checks, at least 100ms. Default "2s".'),
        timeout: duration(1).prefault('1s').describe('A check not answered within this fails. Default "1s".'),
        rise: integer(1, 100).default(2).describe('Consecutive passes that mark a backend up. Default 2.'),
        fall: integer(1, 100).default(3).describe('Consecutive failures that mark a backend down. Default 3.'),
        expectStatus: statusRange.prefault('200-399').describe('Status code or range that passes, e.g. "200-399" or 204. Default "200-399".'),
      }).describe('Active health checks.'),
      passive: section({
        maxFails: integer(1, 1000).default(3).describe('Connection failures or timeouts within window that eject a backend. Default 3.'),
        window: seconds(1).prefault('10s').describe('Sliding window for maxFails. Default "10s".'),
        cooldown: seconds().prefault('10s').describe('An ejected backend takes no new traffic until an active check passes after this. Default "10s".'),
      }).describe('Failure detection on real traffic.'),
      timeouts: section({
        connect: duration(1).prefault('2s').describe('TCP connect to a backend. Default "2s".'),
        response: seconds(1).prefault('30s').describe('Until the backend\'s response headers; then 504. Default "30s".'),
        clientIdle: seconds(1).prefault('60s').describe('Keep-alive idle time of client connections. Default "60s".'),
        clientHeaders: seconds(100)
          .prefault('10s')
          .describe('Time a client has to send a request\'s headers; then 408 and close (slowloris). Default "10s".'),
        clientRequest: seconds()
          .prefault('5m')
          .describe('Time a client has to send a whole request, body included; then 408 and close. 0 turns it off. Default "5m".'),
        clientSend: seconds(1)
          .prefault('60s')
          .describe(
            'A client that accepts no bytes of a response (or of a WebSocket tunnel) for this long is cut off and its upstream request aborted. Default "60s".',
          ),
        tunnel: seconds(1).prefault('1h').describe('Idle time of a WebSocket tunnel. Default "1h".'),
        shutdown: seconds().prefault('10s').describe('How long SIGTERM waits for in-flight requests. Default "10s".'),
      }).describe('Timeouts.'),
      limits: section({
        maxHeaderSize: size(1024, 1024 ** 2)
          .prefault('16KB')
          .describe('Most bytes of request line plus headers; more gets 431. 1KB-1MB. Default "16KB".'),
        maxHeaderCount: integer(1, 10_000).default(100).describe('Most request header fields; more gets 431. Default 100.'),
        maxUrlLength: size(64, 1024 ** 2)
          .prefault('8KB')
          .describe('Most bytes of the request target (path and query); more gets 414. Default "8KB".'),
        maxBodySize: size(1, Number.MAX_SAFE_INTEGER, true)
          .prefault(0)
          .describe('Most bytes of a request body; more gets 413. 0 means no limit. Default 0.'),
        maxConnections: integer(0, 10_000_000)
          .default(0)
          .describe('Most open client connections per process; more are closed at once. 0 means no limit. Default 0.'),
        allowUnderscoreHeaders: bool()
          .default(false)
          .describe(
            'Forward request header fields whose names contain "_". Off by default, as in nginx: backends that read X_Forwarded_For ' +
              'as X-Forwarded-For (CGI, WSGI, PHP) would believe a forged one. Default false.',
          ),
        maxConcurrentStreams: integer(1, 10_000)
          .default(100)
          .describe(
            'HTTP/2: most requests (streams) one client connection may have open at once; more are refused for the client to retry. ' +
              'Applies to connections opened after a change. Default 100.',
          ),
        maxBackendConnections: integer(0, 1_000_000)
          .default(0)
          .describe(
            'Most open connections from each process to each backend. Requests beyond it wait in order for one to come free; ' +
              'one still waiting after timeouts.response gets 503. WebSocket tunnels are not counted. 0 means no limit. Default 0.',
          ),
      }).describe('Limits on what clients may send, and on connections.'),
      discovery: section({
        interval: seconds(100)
          .prefault('5s')
          .describe('How often each dns and srv name is resolved again, at least 100ms; a shorter TTL in the answer brings the next lookup sooner (not under 1s). Default "5s".'),
        servers: z
          .array(dnsServer, { error: expected('a list of DNS server addresses') })
          .default([])
          .describe('DNS servers to ask, "address" or "address:port"; empty asks the system\'s (/etc/resolv.conf). Default [].'),
        drainDeadline: seconds()
          .prefault('30s')
          .describe('An address that leaves DNS drains this long (keeps its clients, takes no new ones), then is removed. Default "30s".'),
      }).describe('Backends from DNS: how dns and srv entries of backends are resolved.'),
      retries: integer(0, 10)
        .default(2)
        .describe('Times a request that never reached a backend is sent to the next backend in the client\'s order. Default 2.'),
      backends: backends.describe('The backends, at least one.'),
      sharedState: z
        .strictObject(
          {
            redis: redisUrl.describe(
              'Redis holding the shared pins and runtime drains: redis:// or rediss:// (TLS), with user, password and database in the URL. With sentinel, the host is not used.',
            ),
            keyPrefix: text().default('limpet:').describe('Prefix of every key and channel limpet uses, so several proxies can share one Redis. Default "limpet:".'),
            tlsCa: text('a file path')
              .min(1, { error: expected('a file path') })
              .nullable()
              .default(null)
              .describe('PEM file of the CA that signed the Redis server certificate (rediss://), relative to this file. Default null: the system CAs.'),
            sentinel: z
              .strictObject(
                {
                  name: text('a master name').min(1, { error: expected('a master name') }).describe('The master name the sentinels watch.'),
                  nodes: z
                    .array(hostPort, { error: expected('a list of sentinel host:port') })
                    .min(1, { error: 'expected at least one sentinel' })
                    .describe('Sentinels to ask for the master, host:port.'),
                },
                { error: expected('a map with name and nodes') },
              )
              .nullable()
              .default(null)
              .describe('Find the Redis master through Redis Sentinel. Default null: connect to the URL\'s host.'),
          },
          { error: expected('a map with redis') },
        )
        .nullable()
        .default(null)
        .describe('Share pins and runtime drains with the other replicas through Redis. Default null: each replica keeps its own.'),
    },
    { error: expected('a map of keys') },
  )
  .superRefine(
    (config, ctx) => {
      const { cookie } = config.affinity;
      if (cookie.sameSite !== 'none' || (cookie.secure ?? config.tls !== null)) return;
      // Browsers drop SameSite=None cookies that are not Secure, so affinity would silently fail.
      const why = cookie.secure === false ? 'secure is false' : 'secure defaults to false without tls';
      ctx.addIssue({
        code: 'custom',
        path: ['affinity', 'cookie', 'sameSite'],
        message: `sameSite: none needs secure: true, but ${why} (browsers drop SameSite=None cookies that are not Secure)`,
      });
    },
    // Checked even when other keys are wrong, as long as the keys it reads parsed.
    { when: (payload) => cookieSettingsParsed(payload.value) },
  );

function cookieSettingsParsed(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false;
  const { affinity, tls } = value as { affinity?: unknown; tls?: unknown };
  if (typeof affinity !== 'object' || affinity === null || (tls !== null && typeof tls !== 'object')) return false;
  const cookie = (affinity as { cookie?: unknown }).cookie;
  if (typeof cookie !== 'object' || cookie === null) return false;
  const { sameSite, secure } = cookie as { sameSite?: unknown; secure?: unknown };
  return typeof sameSite === 'string' && (secure === null || typeof secure === 'boolean');
}

/** The validated config with every default filled in; what the proxy runs on. */
export type LimpetConfig = z.output<typeof configSchema>;

/** One entry of `backends` as parsed: a listed backend (`id`, `url`), or a `dns` or `srv` name. */
export type BackendEntry = LimpetConfig['backends'][number];

/** A `dns` or `srv` entry: backends that a lookup finds rather than the file lists. */
export type DiscoveryEntry = Exclude<BackendEntry, { id: string }>;
