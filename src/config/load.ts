import { accessSync, constants } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { isMap, isScalar, isSeq, LineCounter, Parser, parseDocument, type CST, type Document, type YAMLError } from 'yaml';
import type { z } from 'zod';
import { bareNumberHint } from './duration.js';
import { configSchema, USUALLY_SECONDS, type LimpetConfig } from './schema.js';
import { LimpetError } from '../errors.js';

export type { LimpetConfig } from './schema.js';

/** One mistake in a config file, located to the character so an editor can jump to it. */
export interface ConfigIssue {
  file: string;
  /** 1-based; 0 when the file itself could not be read. */
  line: number;
  column: number;
  /** Key path such as `backends[1].url` or `healthCheck.interval`; `""` for the whole document. */
  path: string;
  message: string;
}

/** A config that cannot be used, carrying every mistake found in it, not just the first. */
export class ConfigError extends LimpetError {
  readonly code = 'LIMPET_CONFIG';

  /** `cause`: the file-system error when the file could not be read at all. */
  constructor(
    readonly issues: ConfigIssue[],
    options?: { cause?: unknown },
  ) {
    super(formatConfigIssues(issues), options);
  }

  /** Whether the file was not there at all (mid-rename, or never written). */
  get fileMissing(): boolean {
    return (this.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
  }
}

/**
 * One `file:line:column: path: message` line per issue (the path is left out for the whole
 * document); warnings read `file:line:column: warning: path: message`, as compilers write them.
 */
export function formatConfigIssues(issues: readonly ConfigIssue[], severity: 'error' | 'warning' = 'error'): string {
  const label = severity === 'warning' ? 'warning: ' : '';
  return issues.map((i) => `${i.file}:${i.line}:${i.column}: ${label}${i.path === '' ? '' : `${i.path}: `}${i.message}`).join('\n');
}

/** A valid config, and what in it is valid but almost surely not what was meant. */
export interface ParsedConfig {
  config: LimpetConfig;
  warnings: ConfigIssue[];
}

/** The log line of a config's warnings, the same at start and on reload. */
export function configWarningsLog(file: string, warnings: readonly ConfigIssue[]): { msg: string; file: string; warnings: string[] } {
  return { msg: 'config values that are probably mistakes', file, warnings: formatConfigIssues(warnings, 'warning').split('\n') };
}

/** Reads, parses and validates a config file; throws ConfigError (line 0 when it cannot be read). */
export async function readConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Promise<ParsedConfig & { text: string }> {
  const text = await readConfigText(file);
  return { text, ...parseConfigWithWarnings(text, file, env) };
}

/** The validated config of a file (see readConfigFile). */
export async function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): Promise<LimpetConfig> {
  return (await readConfigFile(file, env)).config;
}

/** The text of a config file; a file that cannot be read is a ConfigError at line 0, like any other mistake. */
export async function readConfigText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new ConfigError([{ file, line: 0, column: 0, path: '', message: `cannot read the config file: ${(error as Error).message}`}]);
  }
}

type PathSegment = string | number;
type Report = (offset: number, path: readonly PathSegment[], message: string) => void;

/** The validated config of `text` (see parseConfigWithWarnings), for callers that have no one to warn. */
export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): LimpetConfig {
  return parseConfigWithWarnings(text, file, env).config;
}

/**
 * Parses and validates config text. Everything wrong with it — YAML syntax, `${VAR}` substitution,
 * schema and cross-key checks — is collected and thrown together as one ConfigError, sorted by
 * position. A valid config comes with its warnings, located the same way. `file` names the text in
 * messages and anchors relative tls and stateFile paths.
 */
export function parseConfigWithWarnings(text: string, file: string, env: NodeJS.ProcessEnv = process.env): ParsedConfig {
  const lines = new LineCounter();
  const locate = (offset: number, path: readonly PathSegment[], message: string): ConfigIssue => {
    const { line, col } = lines.linePos(offset);
    return { file, line, column: col, path: oneLine(formatPath(path)), message: oneLine(message) };
  };
  const issues: ConfigIssue[] = [];
  const report: Report = (offset, path, message) => issues.push(locate(offset, path, message));
  const fail = (): never => {
    issues.sort((a, b) => a.line - b.line || a.column - b.column);
    throw new ConfigError(issues.filter((issue, i) => i === issues.findIndex((o) => sameIssue(o, issue))));
  };

  // The syntax-tree pass also fills `lines`, so the document below needs no line counter of its own.
  const tooDeep = firstTooDeep(new Parser(lines.addNewLine).parse(text));
  if (tooDeep !== null) {
    report(tooDeep, [], `collections nested more than ${MAX_NESTING} deep`);
    return fail();
  }
  const doc = parseDocument(text, { prettyErrors: false, uniqueKeys: true });

  let lost = false;
  for (const error of doc.errors) {
    // After one unexpected token the parser has lost its place; the tokens after it are noise.
    if (error.code === 'UNEXPECTED_TOKEN' && lost) continue;
    lost ||= error.code === 'UNEXPECTED_TOKEN';
    report(error.pos[0], [], syntaxMessage(error, text));
  }
  const substitution = substituteEnv(doc, env, report);
  // A document with syntax errors is only partly read; schema errors on it would mostly be noise.
  if (doc.errors.length > 0) fail();

  let raw: unknown;
  try {
    raw = doc.toJS() ?? {};
  } catch (error) {
    report(0, [], (error as Error).message);
    return fail();
  }

  let result = configSchema.safeParse(raw);
  if (!result.success && retypeSubstituted(raw, result.error.issues, substitution.replaced)) result = configSchema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) {
      const path = issue.path.filter((p): p is PathSegment => typeof p !== 'symbol');
      // The substitution error already explains this value.
      if (substitution.failed.some((failed) => startsWith(path, failed))) continue;
      reportSchemaIssue(doc, path, issue, report);
    }
  }
  const base = dirname(resolve(file));
  checkReadable(doc, raw, base, report);
  if (issues.length > 0 || !result.success) return fail();

  const config = result.data;
  if (config.tls !== null) config.tls = { ...config.tls, cert: resolve(base, config.tls.cert), key: resolve(base, config.tls.key) };
  if (config.sharedState?.tlsCa) config.sharedState = { ...config.sharedState, tlsCa: resolve(base, config.sharedState.tlsCa) };
  if (config.stateFile !== null) config.stateFile = resolve(base, config.stateFile);
  const warnings = bareNumbersOnSecondsKeys(configSchema, raw, []).map(({ path, ms }) =>
    locate(nodeOffset(doc, path), path, `${bareNumberHint(ms)} (or "${ms}ms" to keep ${ms}ms)`),
  );
  return { config, warnings };
}

/**
 * Where the file gives a key measured in seconds in practice (schema.ts: USUALLY_SECONDS) a bare
 * number from 1 to 999: milliseconds by the grammar, almost surely seconds by intent. Walks the
 * schema beside the parsed values, so the schema alone says which keys these are.
 */
function bareNumbersOnSecondsKeys(schema: z.core.$ZodType, value: unknown, path: PathSegment[]): { path: PathSegment[]; ms: number }[] {
  if (wrappers(schema).some((layer) => USUALLY_SECONDS.has(layer))) {
    return typeof value === 'number' && value >= 1 && value < 1000 ? [{ path, ms: value }] : [];
  }
  return structural(schema).flatMap((inner) => {
    const def = defOf(inner);
    if (def.type === 'object' && typeof value === 'object' && value !== null && !Array.isArray(value)) {
      return Object.entries(value).flatMap(([key, child]) => {
        const childSchema = def.shape?.[key];
        return childSchema === undefined ? [] : bareNumbersOnSecondsKeys(childSchema, child, [...path, key]);
      });
    }
    if (def.type === 'array' && Array.isArray(value) && def.element !== undefined) {
      const element = def.element;
      return value.flatMap((child, index) => bareNumbersOnSecondsKeys(element, child, [...path, index]));
    }
    return [];
  });
}

/** A schema and what it wraps (defaults, nullables, the input side of transforms), outermost first. */
function wrappers(schema: z.core.$ZodType): z.core.$ZodType[] {
  const layers: z.core.$ZodType[] = [];
  for (let layer: z.core.$ZodType | undefined = schema; layer !== undefined; layer = defOf(layer).innerType ?? defOf(layer).in) layers.push(layer);
  return layers;
}

/**
 * Far beyond any real config. Deeper, the YAML composer overflows the stack, and a second overflow can
 * abort the whole process from inside V8's regexp compiler instead of throwing.
 */
const MAX_NESTING = 100;

/** Where a map or list nested deeper than MAX_NESTING starts; null when there is none. Not recursive, unlike the composer. */
function firstTooDeep(tokens: Iterable<CST.Token>): number | null {
  const pending: Array<{ token: CST.Token; depth: number }> = [];
  for (const token of tokens) pending.push({ token, depth: 0 });
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const { token, depth } = next;
    if (token.type === 'document') {
      if (token.value !== undefined) pending.push({ token: token.value, depth });
    } else if (token.type === 'block-map' || token.type === 'block-seq' || token.type === 'flow-collection') {
      if (depth >= MAX_NESTING) return token.offset;
      for (const item of token.items) {
        if ('key' in item && item.key) pending.push({ token: item.key, depth: depth + 1 });
        if (item.value) pending.push({ token: item.value, depth: depth + 1 });
      }
    }
  }
  return null;
}

function syntaxMessage(error: YAMLError, text: string): string {
  if (error.code === 'MULTIPLE_DOCS') return 'expected one YAML document, found more (remove the "---" separator)';
  // `{ secret: ${S} }`: in a flow map the braces of an unquoted placeholder are YAML syntax.
  if (error.code === 'UNEXPECTED_TOKEN' && text[error.pos[0] - 1] === '$') return `${error.message} (quote values that use \${...} inside { } or [ ], e.g. "\${NAME}")`;
  return error.message;
}

interface Substitution {
  /** Values that came out of `${...}`, with their text after substitution. */
  replaced: Map<string, { path: PathSegment[]; text: string }>;
  /** Values whose substitution failed. */
  failed: PathSegment[][];
}

/**
 * Replaces `${NAME}` and `${NAME:-default}` in every scalar value. It runs on the parsed document,
 * so positions stay exact and a variable's text can never add YAML structure. As in the shell,
 * `:-` also applies when NAME is set but empty; `$${` stands for a literal `${`.
 */
function substituteEnv(doc: Document, env: NodeJS.ProcessEnv, report: Report): Substitution {
  const result: Substitution = { replaced: new Map(), failed: [] };
  const visit = (node: unknown, path: PathSegment[]): void => {
    if (isMap(node)) {
      for (const pair of node.items) visit(pair.value, [...path, isScalar(pair.key) ? String(pair.key.value) : String(pair.key)]);
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => visit(item, [...path, index]));
    } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('$')) {
      const { text, errors } = substitute(node.value, env);
      for (const message of errors) report(offsetOf(node), path, message);
      if (errors.length > 0) result.failed.push(path);
      else if (text !== node.value) {
        node.value = text;
        result.replaced.set(JSON.stringify(path), { path, text });
      }
    }
  };
  visit(doc.contents, []);
  return result;
}

const PLACEHOLDER_BODY = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s;

function substitute(source: string, env: NodeJS.ProcessEnv): { text: string; errors: string[] } {
  let text = '';
  const errors: string[] = [];
  let at = 0;
  while (at < source.length) {
    const dollar = source.indexOf('$', at);
    if (dollar < 0) {
      text += source.slice(at);
      break;
    }
    text += source.slice(at, dollar);
    if (source.startsWith('$${', dollar)) {
      text += '${';
      at = dollar + 3;
      continue;
    }
    if (source[dollar + 1] !== '{') {
      text += '$';
      at = dollar + 1;
      continue;
    }
    const close = source.indexOf('}', dollar + 2);
    if (close < 0) {
      errors.push('unterminated "${": expected ${NAME} or ${NAME:-default} (write $${ for a literal "${")');
      break;
    }
    const body = source.slice(dollar + 2, close);
    const match = PLACEHOLDER_BODY.exec(body);
    if (match === null) {
      errors.push(`expected \${NAME} or \${NAME:-default} with NAME made of letters, digits and "_", got "\${${body}}"`);
    } else {
      const [, name = '', fallback] = match;
      const value = env[name];
      if (value !== undefined && (value !== '' || fallback === undefined)) text += value;
      else if (fallback !== undefined) text += fallback;
      else errors.push(`environment variable ${name} is not set (write \${${name}:-default} to give a default)`);
    }
    at = close + 1;
  }
  return { text, errors };
}

/**
 * Environment variables are text, so `retries: ${RETRIES}` would always fail as "expected an
 * integer". A substituted value the schema rejected is retried as the integer or boolean it
 * spells; values the schema accepts as text (a secret of digits, say) stay text. Returns whether
 * anything changed.
 */
function retypeSubstituted(raw: unknown, issues: readonly z.core.$ZodIssue[], replaced: Substitution['replaced']): boolean {
  let changed = false;
  for (const issue of issues) {
    const entry = replaced.get(JSON.stringify(issue.path));
    if (entry === undefined) continue;
    const typed = /^-?\d+$/.test(entry.text) ? Number(entry.text) : entry.text === 'true' ? true : entry.text === 'false' ? false : undefined;
    if (typed === undefined || !setIn(raw, entry.path, typed)) continue;
    replaced.delete(JSON.stringify(issue.path));
    changed = true;
  }
  return changed;
}

function setIn(root: unknown, path: readonly PathSegment[], value: unknown): boolean {
  let parent: unknown = root;
  for (const segment of path.slice(0, -1)) {
    if (typeof parent !== 'object' || parent === null) return false;
    parent = (parent as Record<PathSegment, unknown>)[segment];
  }
  if (typeof parent !== 'object' || parent === null) return false;
  (parent as Record<PathSegment, unknown>)[path[path.length - 1] as PathSegment] = value;
  return true;
}

function reportSchemaIssue(doc: Document, path: PathSegment[], issue: z.core.$ZodIssue, report: Report): void {
  if (issue.code === 'invalid_union') {
    // A map that may take several shapes: when it is closest to one of them, that one's own
    // mistakes say more than "none fits".
    const fitting = closestShape(issue.errors);
    if (fitting !== null) {
      for (const problem of fitting) reportSchemaIssue(doc, [...path, ...problem.path.filter((p): p is PathSegment => typeof p !== 'symbol')], problem, report);
      return;
    }
  }
  if (issue.code === 'unrecognized_keys') {
    const map = doc.getIn(path, true);
    for (const key of issue.keys) {
      const pair = isMap(map) ? map.items.find((item) => isScalar(item.key) && String(item.key.value) === key) : undefined;
      const offset = pair !== undefined && isScalar(pair.key) ? offsetOf(pair.key) : nodeOffset(doc, path);
      const suggestion = closestKey(key, keysAt(path).filter((known) => known !== key));
      report(offset, [...path, key], `unknown key "${key}"${suggestion === null ? '' : ` (did you mean "${suggestion}"?)`}`);
    }
    return;
  }
  const key = path[path.length - 1];
  const missing = typeof key === 'string' && issue.code === 'invalid_type' && !doc.hasIn(path);
  // A missing key has no node of its own: point at the map that should hold it.
  const message = missing ? `missing required key "${key}": ${issue.message.replace(/, got nothing$/, '')}` : issue.message;
  report(nodeOffset(doc, path), path, message);
}

/**
 * Of a union of maps (a backend by id, by dns or by srv name), the shape a map was meant to be: the
 * one alone with the fewest keys it does not know. Null when two are equally close, or when some
 * shape is no map at all (such a union's own message says it, e.g. `drain: true` or a map).
 */
function closestShape(shapes: readonly (readonly z.core.$ZodIssue[])[]): readonly z.core.$ZodIssue[] | null {
  let best: readonly z.core.$ZodIssue[] | null = null;
  let fewest = Infinity;
  let tied = false;
  for (const problems of shapes) {
    const atRoot = problems.filter((problem) => problem.path.length === 0);
    if (atRoot.some((problem) => problem.code !== 'unrecognized_keys')) return null;
    const unknown = atRoot.reduce((sum, problem) => sum + (problem.code === 'unrecognized_keys' ? problem.keys.length : 0), 0);
    if (unknown < fewest) [best, fewest, tied] = [problems, unknown, false];
    else if (unknown === fewest) tied = true;
  }
  return tied ? null : best;
}

/** Where a path's node starts; for a missing key, where its nearest existing parent starts. */
function nodeOffset(doc: Document, path: readonly PathSegment[]): number {
  for (let depth = path.length; depth > 0; depth--) {
    const node = doc.getIn(path.slice(0, depth), true);
    if (isMap(node) || isSeq(node) || isScalar(node)) return offsetOf(node);
  }
  return doc.contents === null ? 0 : offsetOf(doc.contents);
}

function offsetOf(node: { range?: readonly [number, number, number] | null }): number {
  return node.range?.[0] ?? 0;
}

/**
 * The tls files must be readable when the config is checked, not only when the listener starts,
 * so `limpet --check` and a reload catch a wrong path with its line.
 */
/** Files the config names that must be readable when it is loaded, by key path. */
const FILES_READ_AT_START: readonly (readonly [string, string])[] = [
  ['tls', 'cert'],
  ['tls', 'key'],
  ['sharedState', 'tlsCa'],
];

function checkReadable(doc: Document, raw: unknown, base: string, report: Report): void {
  for (const [section, key] of FILES_READ_AT_START) {
    const parent = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>)[section] : undefined;
    if (typeof parent !== 'object' || parent === null) continue;
    const path = (parent as Record<string, unknown>)[key];
    if (typeof path !== 'string' || path === '') continue;
    const file = resolve(base, path);
    try {
      accessSync(file, constants.R_OK);
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (error as Error).message;
      report(nodeOffset(doc, [section, key]), [section, key], `cannot read ${JSON.stringify(file)}: ${reason}`);
    }
  }
}

/** Keys the schema allows at a path, for "did you mean" hints. */
function keysAt(path: readonly PathSegment[]): string[] {
  let schemas = structural(configSchema);
  for (const segment of path) {
    schemas = schemas.flatMap((schema) => {
      const def = defOf(schema);
      if (def.type === 'object' && typeof segment === 'string' && def.shape?.[segment] !== undefined) return structural(def.shape[segment]);
      if (def.type === 'array' && typeof segment === 'number' && def.element !== undefined) return structural(def.element);
      return [];
    });
  }
  return schemas.flatMap((schema) => Object.keys(defOf(schema).shape ?? {}));
}

interface SchemaDef {
  type: string;
  shape?: Record<string, z.core.$ZodType>;
  element?: z.core.$ZodType;
  innerType?: z.core.$ZodType;
  in?: z.core.$ZodType;
  options?: readonly z.core.$ZodType[];
}

function defOf(schema: z.core.$ZodType): SchemaDef {
  return schema._zod.def as unknown as SchemaDef;
}

/** Looks through defaults, nullables, transforms and unions to the objects and arrays underneath. */
function structural(schema: z.core.$ZodType): z.core.$ZodType[] {
  const def = defOf(schema);
  if (def.type === 'object' || def.type === 'array') return [schema];
  if (def.type === 'union') return (def.options ?? []).flatMap(structural);
  const inner = def.innerType ?? def.in;
  return inner === undefined ? [] : structural(inner);
}

function closestKey(key: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = Math.max(2, Math.floor(key.length / 3)) + 1;
  for (const candidate of candidates) {
    const distance = candidate.toLowerCase() === key.toLowerCase() ? 0 : editDistance(key, candidate);
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[b.length] as number;
}

function startsWith(path: readonly PathSegment[], prefix: readonly PathSegment[]): boolean {
  return prefix.length <= path.length && prefix.every((segment, i) => segment === path[i]);
}

/** Keys and values may hold line breaks; escaped, every issue stays one line of formatConfigIssues (the reloader splits on "\n"). */
function oneLine(text: string): string {
  return text.replace(/\r/g, '\\r').replace(/\n/g, '\\n');
}

function sameIssue(a: ConfigIssue, b: ConfigIssue): boolean {
  return a.line === b.line && a.column === b.column && a.path === b.path && a.message === b.message;
}

function formatPath(path: readonly PathSegment[]): string {
  let text = '';
  for (const segment of path) text += typeof segment === 'number' ? `[${segment}]` : text === '' ? segment : `.${segment}`;
  return text;
}
