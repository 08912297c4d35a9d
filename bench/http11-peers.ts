// HTTP/1.1 edge cases through limpet, nginx and HAProxy: the same scripted backend (bench/raw-http.ts)
// behind each, the same client bytes sent to each, and a table of what the client got. Not a load
// test: it shows what the peers answer where the RFCs leave room, next to what limpet answers
// (test/http11.test.ts holds the cases limpet must pass).
//
// `npm run bench:http11` (= npm run build && node dist/bench/http11-peers.js). nginx and HAProxy are found on PATH or in the
// sbin directories; a missing one is reported as skipped. Everything listens on 127.0.0.1.
// H11_ITEMS=1,3 runs only the cases of those issue items.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { gzipSync } from 'node:zlib';
import { isTarget, limpetTarget, stopChildren, type Backends, type Skipped, type Target } from './harness.js';
import { startHaproxy, startNginx } from './peers.js';
import { ok, pause, RawClient, startRawBackend, type RawConnection, type RawRequest, type RawResponse } from './raw-http.js';

/** How long a case waits for a response before it reports "no response". */
const WAIT_MS = 3000;
const IDLE_RACE_MS = 150;
const gzipped = gzipSync('hello hello hello\n');
const chunked = (data: Buffer) => Buffer.concat([Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from('\r\n0\r\n\r\n')]);

// ---------------------------------------------------------------------------------------------
// The backend: answers by path; `?t=<tag>` keeps each case's requests apart in `seen`.

const pathOf = (req: RawRequest) => req.target.split('?')[0]!;
const tagOf = (req: RawRequest) => /[?&]t=([^&]*)/.exec(req.target)?.[1] ?? '';
/** Per tag: answers /slow early when a POST arrives while it waits (the order is then already wrong). */
const slowWaiting = new Map<string, () => void>();
/** Per tag: requests in flight, and the most at once. */
const inflight = new Map<string, { now: number; most: number }>();
const answeredSlowBeforePost = new Map<string, boolean>();

const INTERIM: Record<string, string> = {
  '/103': 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n',
  '/102': 'HTTP/1.1 102 Processing\r\n\r\n',
  '/100': 'HTTP/1.1 100 Continue\r\n\r\n',
};

function onHead(req: RawRequest, conn: RawConnection): void | 'stop' {
  const p = pathOf(req);
  const tag = tagOf(req);
  if (p === '/idle-race' && conn.requests > 1 && Date.now() - conn.lastResponseAt >= IDLE_RACE_MS) {
    conn.socket.resetAndDestroy();
    return 'stop';
  }
  if (req.method === 'POST' && slowWaiting.has(tag)) {
    answeredSlowBeforePost.set(tag, false);
    slowWaiting.get(tag)!();
  }
  if (p === '/reject-417') {
    conn.respond('HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    conn.socket.end();
    return 'stop';
  }
  if (p === '/accept-100' && /100-continue/i.test(req.header('expect') ?? '')) conn.write('HTTP/1.1 100 Continue\r\n\r\n');
}

function onRequest(req: RawRequest, conn: RawConnection): void {
  const p = pathOf(req);
  const tag = tagOf(req);
  if (p === '/304') conn.respond('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n');
  else if (p === '/204') conn.respond('HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n');
  else if (p === '/head') conn.respond('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\n\r\n');
  else if (INTERIM[p] !== undefined) {
    conn.write(INTERIM[p]!);
    setTimeout(() => conn.respond(ok('final\n')), 20);
  } else if (p === '/slow') {
    const answer = () => {
      if (!slowWaiting.has(tag)) return;
      slowWaiting.delete(tag);
      if (!answeredSlowBeforePost.has(tag)) answeredSlowBeforePost.set(tag, true);
      conn.respond(ok('slow\n'));
    };
    slowWaiting.set(tag, answer);
    setTimeout(answer, 500);
  } else if (p === '/held') {
    const count = inflight.get(tag) ?? { now: 0, most: 0 };
    inflight.set(tag, count);
    count.now++;
    count.most = Math.max(count.most, count.now);
    setTimeout(() => {
      count.now--;
      conn.respond(ok('held\n'));
    }, 50);
  } else if (p === '/delayed') setTimeout(() => conn.respond(ok('delayed\n')), 100);
  else if (p === '/coded') conn.respond(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: gzip, chunked\r\n\r\n'), chunked(gzipped)]));
  else conn.respond(ok(`${req.method}, ${req.body.length} body bytes\n`));
}

// ---------------------------------------------------------------------------------------------
// The cases

interface Case {
  item: number;
  name: string;
  run(port: number, tag: string, seen: () => RawRequest[]): Promise<string>;
}

const fmt = (r: RawResponse) => String(r.status);

/** Reads responses until `count` finals, the close, or WAIT_MS; describes them, e.g. "103 → 200". */
async function readAll(c: RawClient, finals: number, heads: boolean[] = []): Promise<string> {
  const got: string[] = [];
  let done = 0;
  try {
    while (done < finals) {
      const r = await c.next({ head: heads[done] === true, timeoutMs: WAIT_MS });
      got.push(fmt(r));
      if (r.status >= 200) done++;
    }
  } catch {
    got.push(c.peerClosed ? 'closed' : 'no response');
  }
  return got.join(' → ');
}

/** After a response: is the connection still usable for one more GET? */
async function reuse(c: RawClient, tag: string): Promise<string> {
  if (c.peerClosed) return 'then closed';
  try {
    await c.write(`GET /after?t=${tag} HTTP/1.1\r\nHost: x\r\n\r\n`);
    const r = await c.next({ timeoutMs: WAIT_MS });
    return `next GET ${r.status}`;
  } catch {
    return c.peerClosed ? 'next GET: closed' : 'next GET: no response';
  }
}

async function simple(port: number, tag: string, bytes: string | Buffer, options: { head?: boolean; reuse?: boolean } = {}): Promise<string> {
  const c = await RawClient.open(port);
  try {
    await c.write(bytes);
    const got = await readAll(c, 1, [options.head === true]);
    return options.reuse === false ? got : `${got}; ${await reuse(c, tag)}`;
  } finally {
    c.destroy();
  }
}

const CASES: Case[] = [
  { item: 1, name: '304 with Content-Length: 1234', run: (port, t) => simple(port, t, `GET /304?t=${t} HTTP/1.1\r\nHost: x\r\nIf-None-Match: "v1"\r\n\r\n`) },
  { item: 1, name: '204 with Content-Length: 5', run: (port, t) => simple(port, t, `DELETE /204?t=${t} HTTP/1.1\r\nHost: x\r\n\r\n`) },
  { item: 1, name: 'HEAD, 200 with Content-Length: 1234', run: (port, t) => simple(port, t, `HEAD /head?t=${t} HTTP/1.1\r\nHost: x\r\n\r\n`, { head: true }) },
  { item: 2, name: '103 Early Hints, then 200', run: (port, t) => simple(port, t, `GET /103?t=${t} HTTP/1.1\r\nHost: x\r\n\r\n`) },
  { item: 2, name: '102 Processing, then 200', run: (port, t) => simple(port, t, `GET /102?t=${t} HTTP/1.1\r\nHost: x\r\n\r\n`) },
  { item: 2, name: 'unsolicited 100 Continue, then 200', run: (port, t) => simple(port, t, `GET /100?t=${t} HTTP/1.1\r\nHost: x\r\n\r\n`) },
  { item: 2, name: '103 to an HTTP/1.0 client', run: (port, t) => simple(port, t, `GET /103?t=${t} HTTP/1.0\r\nHost: x\r\n\r\n`, { reuse: false }) },
  {
    item: 3,
    name: 'pipelined GET /slow + POST: order at the backend',
    run: async (port, t) => {
      const c = await RawClient.open(port);
      try {
        await c.write(`GET /slow?t=${t} HTTP/1.1\r\nHost: x\r\n\r\nPOST /p?t=${t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello`);
        const got = await readAll(c, 2);
        const order = answeredSlowBeforePost.get(t);
        return `${got}; POST ${order === undefined ? 'never forwarded' : order ? 'forwarded after /slow was answered' : 'forwarded while /slow was in flight'}`;
      } finally {
        c.destroy();
      }
    },
  },
  {
    item: 3,
    name: '50 pipelined GETs: most in flight upstream',
    run: async (port, t) => {
      const c = await RawClient.open(port);
      try {
        await c.write(Array.from({ length: 50 }, () => `GET /held?t=${t} HTTP/1.1\r\nHost: x\r\n\r\n`).join(''));
        let answered = 0;
        try {
          for (; answered < 50; answered++) await c.next({ timeoutMs: WAIT_MS });
        } catch {
          /* reported below */
        }
        return `${answered}/50 answered; at most ${inflight.get(t)?.most ?? 0} in flight`;
      } finally {
        c.destroy();
      }
    },
  },
  {
    item: 3,
    name: 'pipelined GET, GET, then garbage',
    run: async (port, t) => {
      const c = await RawClient.open(port);
      try {
        await c.write(`GET /delayed?t=${t} HTTP/1.1\r\nHost: x\r\n\r\nGET /delayed?t=${t} HTTP/1.1\r\nHost: x\r\n\r\nHELLO THERE\r\n\r\n`);
        return await readAll(c, 3);
      } finally {
        c.destroy();
      }
    },
  },
  {
    item: 4,
    name: 'POST, then client half-closes',
    run: async (port, t) => {
      const c = await RawClient.open(port);
      try {
        await c.write(`POST /p?t=${t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello`);
        c.end();
        const got = await readAll(c, 1);
        return `${got}${(await c.waitClosed(WAIT_MS)) ? ', then closed' : ', left open'}`;
      } finally {
        c.destroy();
      }
    },
  },
  {
    item: 5,
    name: 'request Transfer-Encoding: gzip, chunked',
    run: async (port, t, seen) => {
      const bytes = Buffer.concat([Buffer.from(`POST /p?t=${t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n`), chunked(gzipped)]);
      const got = await simple(port, t, bytes, { reuse: false });
      const req = seen().find((r) => r.method === 'POST');
      if (req === undefined) return `${got}; backend not reached`;
      const cl = req.header('content-length');
      return `${got}; backend saw TE "${req.header('transfer-encoding') ?? '-'}"${cl === undefined ? '' : `, Content-Length ${cl}`}`;
    },
  },
  {
    item: 5,
    name: 'response Transfer-Encoding: gzip, chunked',
    run: async (port, t) => {
      const c = await RawClient.open(port);
      try {
        await c.write(`GET /coded?t=${t} HTTP/1.1\r\nHost: x\r\n\r\n`);
        const r = await c.next({ timeoutMs: WAIT_MS });
        const te = r.header('transfer-encoding');
        const intact = r.body.equals(gzipped) && te !== undefined && /gzip/i.test(te);
        return `${r.status}, TE "${te ?? '-'}"${r.status === 200 ? (intact ? ', coding kept' : `, coding dropped${r.header('content-encoding') === undefined ? '' : ` (Content-Encoding ${r.header('content-encoding')})`}`) : ''}`;
      } catch {
        return c.peerClosed ? 'closed' : 'no response';
      } finally {
        c.destroy();
      }
    },
  },
  {
    item: 6,
    name: 'X_Forwarded_For, Transfer_Encoding, X_Custom',
    run: async (port, t, seen) => {
      const got = await simple(port, t, `GET /u?t=${t} HTTP/1.1\r\nHost: x\r\nX_Forwarded_For: 6.6.6.6\r\nTransfer_Encoding: chunked\r\nX_Custom: 1\r\n\r\n`, { reuse: false });
      const names = seen()[0]?.headers.map(([n]) => n).filter((n) => n.includes('_')) ?? [];
      return `${got}; backend saw ${names.length === 0 ? 'none of them' : names.join(', ')}`;
    },
  },
  {
    item: 7,
    name: 'Expect: 100-continue, backend answers 417 on the head',
    run: async (port, t, seen) => {
      const c = await RawClient.open(port);
      try {
        await c.write(`POST /reject-417?t=${t} HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\nExpect: 100-continue\r\n\r\n`);
        let first: string;
        try {
          first = fmt(await c.next({ timeoutMs: WAIT_MS }));
        } catch {
          first = c.peerClosed ? 'closed' : 'no response';
        }
        const req = seen()[0];
        return `first: ${first}${first === '100' ? ' (client would upload the body)' : ''}; backend ${req === undefined ? 'not reached' : `saw Expect: ${req.header('expect') === undefined ? 'no' : 'yes'}`}`;
      } finally {
        c.destroy();
      }
    },
  },
  {
    item: 7,
    name: 'Expect: 100-continue, backend sends 100',
    run: async (port, t, seen) => {
      const c = await RawClient.open(port);
      try {
        await c.write(`POST /accept-100?t=${t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`);
        const got: string[] = [];
        try {
          got.push(fmt(await c.next({ timeoutMs: WAIT_MS })));
          await c.write('hello');
          for (;;) {
            const r = await c.next({ timeoutMs: WAIT_MS });
            got.push(fmt(r));
            if (r.status >= 200) break;
          }
        } catch {
          got.push(c.peerClosed ? 'closed' : 'no response');
        }
        const req = seen()[0];
        return `${got.join(' → ')}; backend ${req === undefined ? 'not reached' : `saw Expect: ${req.header('expect') === undefined ? 'no' : 'yes'}`}`;
      } finally {
        c.destroy();
      }
    },
  },
  { item: 8, name: 'CONNECT example.com:443', run: (port, t) => simple(port, t, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n') },
  { item: 8, name: '16 KB request target', run: (port, t) => simple(port, t, `GET /${'a'.repeat(16 * 1024)}?t=${t} HTTP/1.1\r\nHost: x\r\n\r\n`, { reuse: false }) },
  {
    item: 9,
    name: `POST on a reused upstream connection the backend closed (idle ${IDLE_RACE_MS} ms, no hint)`,
    run: async (port, t) => {
      // Warm an upstream connection, let it idle past the backend's timeout, then POST.
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++) {
        const c = await RawClient.open(port);
        try {
          await c.write(`POST /idle-race?t=${t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello`);
          statuses.push((await c.next({ timeoutMs: WAIT_MS })).status);
        } catch {
          statuses.push(0);
        } finally {
          c.destroy();
        }
        await pause(IDLE_RACE_MS + 100);
      }
      return statuses.map((s) => (s === 0 ? 'none' : String(s))).join(', ');
    },
  },
];

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const backend = await startRawBackend({ onHead, onRequest });
  const backends: Backends = { pid: process.pid, origins: [backend.url] };
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'limpet-h11-'));
  process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));
  try {
    const starts = await Promise.all([
      limpetTarget(backends, tmp, { name: 'limpet', description: 'limpet', nodeArgs: [], extraYaml: [], cpus: undefined }).then((prepared) => ({ prepared, version: undefined as string | undefined })),
      startNginx('nginx', 'nginx', backends, tmp, '1', undefined),
      startHaproxy('haproxy', 'HAProxy', backends, tmp, 'source', 1, undefined),
    ]);
    const targets: Target[] = [];
    for (const start of starts) {
      if (isTarget(start.prepared)) {
        targets.push(start.prepared);
        if (start.version !== undefined) console.log(`${start.prepared.name}: ${start.version}`);
      } else console.log(`skipped: ${(start.prepared as Skipped).name} — ${(start.prepared as Skipped).reason}`);
    }
    console.log(`limpet: dist/src/cli.js on node ${process.version}\n`);
    const rows: string[][] = [];
    let serial = 0;
    const only = (process.env.H11_ITEMS ?? '').split(',').filter((item) => item !== '').map(Number);
    for (const c of CASES.filter((c) => only.length === 0 || only.includes(c.item))) {
      const row = [String(c.item), c.name];
      for (const target of targets) {
        const tag = `${++serial}`;
        const port = Number(new URL(target.origin).port);
        const seen = () => backend.seen.filter((r) => tagOf(r) === tag);
        row.push(await c.run(port, tag, seen));
      }
      rows.push(row);
      console.error(`${row[0]} ${row[1]}: ${row.slice(2).join(' | ')}`);
    }
    const header = ['#', 'case', ...targets.map((t) => t.name)];
    console.log(`| ${header.join(' | ')} |`);
    console.log(`|${header.map(() => '---').join('|')}|`);
    for (const row of rows) console.log(`| ${row.map((cell) => cell.replace(/\|/g, '\\|')).join(' | ')} |`);
  } finally {
    stopChildren();
    await backend.close();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    stopChildren();
    process.exit(1);
  },
);
