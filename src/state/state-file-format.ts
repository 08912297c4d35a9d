import type { LimpetConfig } from '../config/schema.js';
import { listedBackends } from '../discovery/backend-discovery.js';
import { LimpetError } from '../errors.js';
import type { DrainSetting } from '../upstream/backend.js';
import type { DurableState, PinRecord, RuntimeDrain } from './durable-state.js';

/**
 * The state file, version 1: UTF-8 text, one record a line; each write holds the whole state.
 *
 *   limpet-state 1
 *   written 1767225600                        unix second of the write; pins count back from it
 *   affinity ip                               the affinity mode the pins' keys belong to
 *   drain app-2 on 1767225600000 file off -   a runtime drain: backend, on|off, deadline (epoch ms
 *                                             or -), then the config file's drain of that backend
 *                                             it overrides (on|off, deadline in ms or -)
 *   backend app-3                             declares the next backend index (from 0), before
 *                                             the first pin that refers to it
 *   588 0 10.0.0.7                            a pin: seconds since last seen, backend index, key
 *   end 1 1                                   how many drains and pins came before: a file cut
 *                                             short is refused, not half read
 *
 * A pin's key is the rest of its line; a key that could not stand there as it is (a line break, a
 * leading quote, control characters) is written as a JSON string. Pins come in the pin table's
 * order, oldest first. Ages rather than unix seconds: small integers are several times cheaper to
 * print and parse.
 */
export const STATE_FILE_VERSION = 1;
const MAGIC = 'limpet-state';

/** A runtime drain as kept in the file, with the config file's drain it overrode then. */
export interface KeptDrain extends RuntimeDrain {
  fileDrain: DrainSetting;
}

/** What a state file holds. */
export interface KeptState {
  /** `affinity.by` when it was written: pins of another mode are keys of another kind. */
  affinity: string;
  drains: KeptDrain[];
  pins: PinRecord[];
}

/** A state file that is not one limpet wrote whole: cut short, edited, or something else entirely. */
export class StateFileCorruptError extends LimpetError {
  readonly code = 'LIMPET_STATE_FILE_CORRUPT';
}

/** A state file in a format version this limpet does not read (written by another release). */
export class StateFileVersionError extends LimpetError {
  readonly code = 'LIMPET_STATE_FILE_VERSION';
}

/** Pins per chunk of text: a chunk is handed to the file before the next is built, so a large table never blocks for long. */
const PINS_PER_CHUNK = 4096;

/**
 * The drain the config file gives a backend: its listed entry's, or none for a backend discovered
 * from DNS (the file names its name, not its addresses).
 */
export function fileDrainOf(config: LimpetConfig, id: string): { draining: boolean; deadline: number | null } {
  const entry = listedBackends(config.backends).find((candidate) => candidate.id === id);
  return entry === undefined ? { draining: false, deadline: null } : { draining: entry.drain, deadline: entry.drainDeadline };
}

/** Keys that cannot be written raw as the rest of a line. */
const NEEDS_QUOTING = /^"|[\u0000-\u001f\u007f\ud800-\udfff]/;

/**
 * The file's text for `state`, in chunks. Each runtime drain is written with the config's drain of
 * its backend (none for one discovered from DNS), so a file edited while limpet was stopped can be
 * told apart. The proxy hands on drains of existing backends only (`Limpet.durableState`).
 */
export function* encodeState(state: DurableState, config: LimpetConfig): Generator<string> {
  const written = Math.floor(Date.now() / 1000);
  let head = `${MAGIC} ${STATE_FILE_VERSION}\nwritten ${written}\naffinity ${config.affinity.by}\n`;
  let drains = 0;
  for (const drain of state.drains) {
    const file = fileDrainOf(config, drain.id);
    head += `drain ${drain.id} ${onOff(drain.draining)} ${orDash(drain.deadlineAt)} file ${onOff(file.draining)} ${orDash(file.deadline)}\n`;
    drains++;
  }
  yield head;
  const { pins } = state;
  const indexOf = new Map<string, number>();
  for (let from = 0; from < pins.length; from += PINS_PER_CHUNK) {
    let chunk = '';
    const to = Math.min(pins.length, from + PINS_PER_CHUNK);
    for (let i = from; i < to; i++) {
      const [key, id, seen] = pins[i] as PinRecord;
      let index = indexOf.get(id);
      if (index === undefined) {
        index = indexOf.size;
        indexOf.set(id, index);
        chunk += `backend ${id}\n`;
      }
      chunk += `${Math.max(0, written - seen)} ${index} ${NEEDS_QUOTING.test(key) ? JSON.stringify(key) : key}\n`;
    }
    yield chunk;
  }
  yield `end ${drains} ${pins.length}\n`;
}

/** Reads a state file's text; throws StateFileVersionError or StateFileCorruptError (with the line) when it cannot. */
export function decodeState(text: string): KeptState {
  const lines = text.split('\n');
  const first = lines[0] ?? '';
  if (!first.startsWith(`${MAGIC} `)) throw new StateFileCorruptError(`not a limpet state file (it does not start with "${MAGIC}")`);
  const version = first.slice(MAGIC.length + 1);
  if (version !== String(STATE_FILE_VERSION)) {
    throw new StateFileVersionError(`format version ${JSON.stringify(version)}; this limpet reads version ${STATE_FILE_VERSION}`);
  }
  const kept: KeptState = { affinity: '', drains: [], pins: [] };
  const backends: string[] = [];
  let written: number | null = null;
  let ended = false;
  for (let n = 1; n < lines.length; n++) {
    const line = lines[n] as string;
    const corrupt = (what: string) => new StateFileCorruptError(`line ${n + 1}: ${what}`);
    if (ended) {
      if (line === '' && n === lines.length - 1) break;
      throw corrupt('text after the end line');
    }
    const code = line.charCodeAt(0);
    if (code >= 48 && code <= 57) {
      if (written === null) throw corrupt('a pin before the written line');
      kept.pins.push(decodePin(line, written, backends, corrupt));
      continue;
    }
    const fields = line.split(' ');
    switch (fields[0]) {
      case 'written':
        written = Number(fields[1]);
        if (fields.length !== 2 || !Number.isSafeInteger(written)) throw corrupt('expected "written <unix second>"');
        break;
      case 'affinity':
        if (fields.length !== 2 || fields[1] === '') throw corrupt('expected "affinity <mode>"');
        kept.affinity = fields[1] as string;
        break;
      case 'backend':
        if (fields.length !== 2 || fields[1] === '') throw corrupt('expected "backend <id>"');
        backends.push(fields[1] as string);
        break;
      case 'drain':
        kept.drains.push(decodeDrain(fields, corrupt));
        break;
      case 'end':
        if (line !== `end ${kept.drains.length} ${kept.pins.length}`) {
          throw corrupt(`the end line says ${JSON.stringify(line.slice(4))}, but ${kept.drains.length} drains and ${kept.pins.length} pins came before it`);
        }
        ended = true;
        break;
      default:
        throw corrupt(`unexpected ${JSON.stringify(line.slice(0, 40))}`);
    }
  }
  if (!ended) throw new StateFileCorruptError(`cut short: no end line after ${lines.length} lines`);
  if (kept.affinity === '') throw new StateFileCorruptError('no affinity line');
  return kept;
}

function decodePin(line: string, written: number, backends: readonly string[], corrupt: (what: string) => Error): PinRecord {
  const space = line.indexOf(' ');
  const second = line.indexOf(' ', space + 1);
  const age = space < 0 ? NaN : Number(line.slice(0, space));
  const id = second <= space + 1 ? undefined : backends[Number(line.slice(space + 1, second))];
  if (!Number.isSafeInteger(age) || id === undefined) throw corrupt('expected "<seconds since seen> <backend index> <key>"');
  let key = line.slice(second + 1);
  if (key.startsWith('"')) {
    try {
      key = JSON.parse(key) as string;
    } catch {
      throw corrupt('a quoted key that is not a JSON string');
    }
    if (typeof key !== 'string') throw corrupt('a quoted key that is not a JSON string');
  }
  return [key, id, written - age];
}

function decodeDrain(fields: readonly string[], corrupt: (what: string) => Error): KeptDrain {
  const [, id, draining, deadlineAt, file, fileDraining, fileDeadline] = fields;
  const flags = [draining, fileDraining].map((flag) => (flag === 'on' ? true : flag === 'off' ? false : null));
  const numbers = [deadlineAt, fileDeadline].map((value) => (value === '-' ? null : Number(value)));
  if (fields.length !== 7 || id === '' || file !== 'file' || flags.includes(null) || numbers.some((n) => n !== null && !Number.isSafeInteger(n))) {
    throw corrupt('expected "drain <backend> on|off <deadline|-> file on|off <deadline|->"');
  }
  return {
    id: id as string,
    draining: flags[0] as boolean,
    deadlineAt: numbers[0] as number | null,
    fileDrain: { draining: flags[1] as boolean, deadline: numbers[1] as number | null },
  };
}

const onOff = (flag: boolean) => (flag ? 'on' : 'off');
const orDash = (value: number | null) => (value === null ? '-' : String(value));
