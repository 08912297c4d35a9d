/**
 * Follows the WebSocket frames (RFC 6455 §5.2) flowing one way through a tunnel, without copying
 * them, so the proxy knows whether it may insert a frame of its own: a close frame written while a
 * frame is half relayed would land inside that frame's payload and corrupt the stream.
 */
export class FrameBoundary {
  /** Payload bytes of the current frame still to come. */
  private payloadLeft = 0;
  /** Header bytes of the next frame seen so far (a header can be split across chunks). */
  private readonly header = new Uint8Array(14);
  private headerSeen = 0;

  /** True between frames: nothing of a frame is outstanding. */
  get atBoundary(): boolean {
    return this.payloadLeft === 0 && this.headerSeen === 0;
  }

  feed(chunk: Uint8Array): void {
    let at = 0;
    const end = chunk.length;
    while (at < end) {
      if (this.payloadLeft > 0) {
        const take = Math.min(this.payloadLeft, end - at);
        this.payloadLeft -= take;
        at += take;
        continue;
      }
      this.header[this.headerSeen++] = chunk[at++] as number;
      const needed = this.headerLength();
      if (needed === 0 || this.headerSeen < needed) continue;
      this.payloadLeft = this.payloadLength();
      this.headerSeen = 0;
    }
  }

  /** The full header length once its first two bytes are known, else 0. */
  private headerLength(): number {
    if (this.headerSeen < 2) return 0;
    const second = this.header[1] as number;
    const lengthCode = second & 0x7f;
    const extended = lengthCode === 126 ? 2 : lengthCode === 127 ? 8 : 0;
    const mask = second & 0x80 ? 4 : 0;
    return 2 + extended + mask;
  }

  private payloadLength(): number {
    const header = this.header;
    const lengthCode = (header[1] as number) & 0x7f;
    if (lengthCode < 126) return lengthCode;
    if (lengthCode === 126) return ((header[2] as number) << 8) | (header[3] as number);
    // 64-bit length; past 2^53 bytes precision no longer matters for a live tunnel.
    let length = 0;
    for (let i = 2; i < 10; i++) length = length * 256 + (header[i] as number);
    return length;
  }
}
