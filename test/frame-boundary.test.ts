import { describe, expect, it } from 'vitest';
import { FrameBoundary } from '../src/proxy/frame-boundary.js';

/** One WebSocket frame with `length` payload bytes; masked as a client sends it when `masked`. */
function frame(length: number, masked: boolean): Buffer {
  const lengthBytes = length < 126 ? [length] : length < 65_536 ? [126, length >> 8, length & 0xff] : [127, 0, 0, 0, 0, (length >>> 24) & 0xff, (length >> 16) & 0xff, (length >> 8) & 0xff, length & 0xff];
  const head = Buffer.from([0x82, (masked ? 0x80 : 0) | (lengthBytes[0] as number), ...lengthBytes.slice(1), ...(masked ? [1, 2, 3, 4] : [])]);
  return Buffer.concat([head, Buffer.alloc(length, 0x7e)]);
}

describe('WebSocket frame boundaries', () => {
  for (const masked of [false, true]) {
    it(`is at a boundary exactly at frame ends, whatever the chunking (${masked ? 'masked' : 'unmasked'})`, () => {
      const frames = [frame(0, masked), frame(5, masked), frame(125, masked), frame(126, masked), frame(70_000, masked), frame(3, masked)];
      const stream = Buffer.concat(frames);
      const ends = new Set<number>();
      let offset = 0;
      for (const f of frames) ends.add((offset += f.length));
      for (const chunkSize of [1, 2, 3, 7, 13, 1000, stream.length]) {
        const tracker = new FrameBoundary();
        for (let at = 0; at < stream.length; at += chunkSize) {
          const piece = stream.subarray(at, Math.min(stream.length, at + chunkSize));
          tracker.feed(piece);
          const position = at + piece.length;
          expect(tracker.atBoundary, `chunk ${chunkSize} at byte ${position}`).toBe(ends.has(position));
        }
      }
    });
  }

  it('is at a boundary before anything is sent', () => {
    expect(new FrameBoundary().atBoundary).toBe(true);
  });
});
