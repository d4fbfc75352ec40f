// Big-endian binary encoding for wire messages: a writer that grows as fields are added, and a
// reader that checks every read against the bytes left and every length against a caller's bound
// before it allocates, throwing DecodeError with the field's name.
export class DecodeError extends Error {}

export class ByteWriter {
  private readonly parts: Buffer[] = [];
  private length = 0;

  private push(b: Buffer): this {
    this.parts.push(b);
    this.length += b.length;
    return this;
  }

  u8(v: number): this {
    return this.push(Buffer.of(v));
  }

  u16(v: number): this {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16BE(v);
    return this.push(b);
  }

  u32(v: number): this {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(v);
    return this.push(b);
  }

  u64(v: bigint): this {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64BE(v);
    return this.push(b);
  }

  /** Bytes of a length fixed by the protocol (no length prefix). */
  fixed(b: Buffer, length: number): this {
    if (b.length !== length) throw new RangeError(`expected ${length} bytes, got ${b.length}`);
    return this.push(b);
  }

  /** A u32 length, then the bytes. */
  bytes(b: Buffer): this {
    return this.u32(b.length).push(b);
  }

  /** A u16 length, then the bytes. */
  u16Bytes(b: Buffer): this {
    if (b.length > 0xffff) throw new RangeError(`${b.length} bytes do not fit a u16 length`);
    return this.u16(b.length).push(b);
  }

  /** Bytes whose length the reader knows from elsewhere (no prefix, no check). */
  raw(b: Buffer): this {
    return this.push(b);
  }

  /** A u16 length, then UTF-8. */
  string(s: string): this {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 0xffff) throw new RangeError('string too long');
    return this.u16(b.length).push(b);
  }

  finish(): Buffer {
    return Buffer.concat(this.parts, this.length);
  }
}

export class ByteReader {
  private offset = 0;

  constructor(private readonly buf: Buffer) {}

  /** The bytes not read yet. */
  get remaining(): number {
    return this.buf.length - this.offset;
  }

  /** The next `n` bytes, as a view into the message. */
  view(n: number, field: string): Buffer {
    return this.take(n, field);
  }

  /** Every byte not read yet, as a view. */
  rest(): Buffer {
    return this.take(this.remaining, 'the rest');
  }

  /** A u16 length (at most `max`), then that many bytes (a view into the message). */
  u16Bytes(max: number, field: string): Buffer {
    const n = this.u16(`${field} length`);
    if (n > max) throw new DecodeError(`${field} is ${n} bytes, more than the ${max} allowed`);
    return this.take(n, field);
  }

  private take(n: number, field: string): Buffer {
    if (this.offset + n > this.buf.length) throw new DecodeError(`message ends inside ${field}`);
    const b = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return b;
  }

  u8(field: string): number {
    return this.take(1, field)[0];
  }

  u16(field: string): number {
    return this.take(2, field).readUInt16BE();
  }

  u32(field: string): number {
    return this.take(4, field).readUInt32BE();
  }

  u64(field: string): bigint {
    return this.take(8, field).readBigUInt64BE();
  }

  /** A copy, so the message buffer can be released. */
  fixed(length: number, field: string): Buffer {
    return Buffer.from(this.take(length, field));
  }

  /** A u32 length (at most `max`), then that many bytes (a view into the message). */
  bytes(max: number, field: string): Buffer {
    const n = this.u32(`${field} length`);
    if (n > max) throw new DecodeError(`${field} is ${n} bytes, more than the ${max} allowed`);
    return this.take(n, field);
  }

  /** A u16 length (at most `max` bytes), then UTF-8. */
  string(max: number, field: string): string {
    const n = this.u16(`${field} length`);
    if (n > max) throw new DecodeError(`${field} is ${n} bytes, more than the ${max} allowed`);
    return this.take(n, field).toString('utf8');
  }

  /** A count read earlier, checked against a bound and against the bytes that are left. */
  count(n: number, max: number, minItemBytes: number, field: string): number {
    if (n > max) throw new DecodeError(`${field} count ${n} is more than the ${max} allowed`);
    if (n * minItemBytes > this.buf.length - this.offset) throw new DecodeError(`${field} count ${n} does not fit in the message`);
    return n;
  }

  /** Throws unless every byte was read. */
  end(what: string): void {
    if (this.offset !== this.buf.length) throw new DecodeError(`${this.buf.length - this.offset} unexpected bytes after ${what}`);
  }
}
