// Splits a byte stream into whole top-level JSON objects, whatever the read chunk boundaries.
// lightningd's messages can be megabytes long; we frame by brace depth (outside strings), never by
// read() chunks or newlines, and bound how large one object may grow before we give up on the peer.

const OPEN = 0x7b; // {
const CLOSE = 0x7d; // }
const QUOTE = 0x22; // "
const BACKSLASH = 0x5c; // \

export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

export class MessageTooLargeError extends Error {
  constructor(limit: number) {
    super(`a JSON message exceeded ${limit} bytes without ending; the peer is misbehaving`);
  }
}

export class MalformedStreamError extends Error {}

export class JsonObjectSplitter {
  private chunks: Buffer[] = [];
  private pendingBytes = 0;
  private depth = 0;
  private inString = false;
  private escaped = false;

  constructor(private readonly maxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES) {}

  /** Feed bytes; returns the complete JSON object texts they finish, in order. */
  push(data: Buffer): string[] {
    const out: string[] = [];
    let start = 0;
    for (let i = 0; i < data.length; i++) {
      const c = data[i];
      if (this.depth === 0) {
        if (c === OPEN) {
          this.depth = 1;
          start = i;
        } else if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
          throw new MalformedStreamError(`unexpected byte 0x${c.toString(16)} between JSON messages`);
        }
        continue;
      }
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (c === BACKSLASH) this.escaped = true;
        else if (c === QUOTE) this.inString = false;
        continue;
      }
      if (c === QUOTE) this.inString = true;
      else if (c === OPEN) this.depth++;
      else if (c === CLOSE && --this.depth === 0) {
        const tail = data.subarray(this.chunks.length ? 0 : start, i + 1);
        this.chunks.push(tail);
        out.push(Buffer.concat(this.chunks).toString('utf8'));
        this.chunks = [];
        this.pendingBytes = 0;
      }
    }
    if (this.depth > 0) {
      const rest = data.subarray(this.chunks.length ? 0 : start);
      this.pendingBytes += rest.length;
      if (this.pendingBytes > this.maxMessageBytes) throw new MessageTooLargeError(this.maxMessageBytes);
      // Copy: the caller may reuse its read buffer.
      this.chunks.push(Buffer.from(rest));
    }
    return out;
  }

  /** True when a message has started but not ended (the stream was cut mid-message). */
  get midMessage(): boolean {
    return this.depth > 0;
  }
}
