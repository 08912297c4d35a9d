import type { Socket } from 'node:net';

/**
 * The status a backend's `100 Continue` is handed to undici as. undici destroys a connection that
 * answers 100 (it only expects one after sending `Expect`, which it never does), yet RFC 9110
 * §15.2 has a client parse any number of 1xx before the final answer. So a 100 at the start of a
 * response is renumbered to this unassigned 1xx, which undici passes on like 102 or 103, and the
 * exchange relays it as what it was.
 */
export const CONTINUE_STAND_IN = 199;

const STAND_IN_DIGITS = Buffer.from(String(CONTINUE_STAND_IN), 'latin1');
const HEAD_END = Buffer.from('\r\n\r\n', 'latin1');
/** `HTTP/1.x NNN`: the bytes needed to read a status. */
const STATUS_END = 12;

interface InterimState {
  /** A request head was written and its final response has not begun. */
  awaitingHead: boolean;
  /** Inside an interim response's head, which ends at a blank line. */
  inInterimHead: boolean;
  /** The last bytes seen inside an interim head, so a blank line split over two reads is found. */
  tail: number;
}

const kInterim = Symbol('limpet.interim');
type WatchedSocket = Socket & { [kInterim]: InterimState };

/**
 * Watches one backend connection for interim responses. A request head is undici's only string
 * write that does not begin with CR (body framing starts with one); after it, each read is checked
 * at its start for a 1xx status until the final response begins. Costs a flag test per read and
 * per write, and a look at 12 bytes per response.
 */
export function watchInterimResponses(socket: Socket): void {
  const watched = socket as WatchedSocket;
  watched[kInterim] = { awaitingHead: false, inInterimHead: false, tail: 0 };
  const write = socket.write;
  socket.write = function writeWatchingHeads(this: WatchedSocket, chunk: unknown, ...rest: unknown[]): boolean {
    if (typeof chunk === 'string' && chunk.charCodeAt(0) !== 13) this[kInterim].awaitingHead = true;
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as Socket['write'];
  const push = socket.push;
  socket.push = function pushMarkingContinue(this: WatchedSocket, chunk: unknown, encoding?: BufferEncoding): boolean {
    const state = this[kInterim];
    if (state.awaitingHead && Buffer.isBuffer(chunk)) scan(state, chunk);
    return push.call(this, chunk, encoding);
  };
}

/** Walks the interim heads at the start of `chunk`, renumbering each 100, until the final response begins. */
function scan(state: InterimState, chunk: Buffer): void {
  let at = 0;
  while (at < chunk.length) {
    if (state.inInterimHead) {
      const end = blankLineEnd(state, chunk, at);
      if (end < 0) return;
      state.inInterimHead = false;
      at = end;
      continue;
    }
    // A status line split before its code is left to undici: too rare to buffer for.
    if (chunk.length - at < STATUS_END || chunk[at + 9] !== 0x31 /* 1 */ || chunk.toString('latin1', at, at + 7) !== 'HTTP/1.') {
      state.awaitingHead = false;
      return;
    }
    if (chunk[at + 10] === 0x30 && chunk[at + 11] === 0x30) STAND_IN_DIGITS.copy(chunk, at + 9);
    state.inInterimHead = true;
    state.tail = 0;
    at += STATUS_END;
  }
}

/** Index just past the blank line ending the head, or -1 when this read does not reach it. */
function blankLineEnd(state: InterimState, chunk: Buffer, from: number): number {
  // Bytes of "\r\n\r\n" already matched at the end of the previous read.
  for (let i = from; i < chunk.length && i < from + 3 && state.tail > 0; i++) {
    if (chunk[i] !== HEAD_END[state.tail]) {
      state.tail = 0;
      break;
    }
    if (++state.tail === 4) return i + 1;
  }
  const found = chunk.indexOf(HEAD_END, from);
  if (found >= 0) return found + 4;
  state.tail = 0;
  for (let matched = 3; matched > 0; matched--) {
    if (chunk.length - from >= matched && chunk.subarray(chunk.length - matched).equals(HEAD_END.subarray(0, matched))) {
      state.tail = matched;
      break;
    }
  }
  return -1;
}
