// BOLT #1 "Type-Length-Value Format" and "Appendix A: BigSize": the variable-length integers and
// the TLV streams that end `init` and other messages. Decoding enforces the rules of BOLT #1: the
// minimal BigSize encoding, strictly increasing types, lengths within the stream, and an unknown
// even type refused ("it's OK to be odd"); every record is a view into the message, bounded by it.
import { ByteReader, ByteWriter, DecodeError } from '../../util/bytes.js';

export interface TlvRecord {
  readonly type: bigint;
  readonly value: Buffer;
}

/** Reads one BigSize, refusing the non-minimal encodings BOLT #1 forbids. */
export function readBigSize(r: ByteReader, field: string): bigint {
  const first = r.u8(field);
  if (first < 0xfd) return BigInt(first);
  if (first === 0xfd) {
    const v = r.u16(field);
    if (v < 0xfd) throw new DecodeError(`${field} is a BigSize that is not minimally encoded`);
    return BigInt(v);
  }
  if (first === 0xfe) {
    const v = r.u32(field);
    if (v < 0x10000) throw new DecodeError(`${field} is a BigSize that is not minimally encoded`);
    return BigInt(v);
  }
  const v = r.u64(field);
  if (v < 0x100000000n) throw new DecodeError(`${field} is a BigSize that is not minimally encoded`);
  return v;
}

export function writeBigSize(w: ByteWriter, v: bigint): void {
  if (v < 0n || v > 0xffffffffffffffffn) throw new RangeError(`${v} is not a BigSize`);
  if (v < 0xfdn) w.u8(Number(v));
  else if (v <= 0xffffn) w.u8(0xfd).u16(Number(v));
  else if (v <= 0xffffffffn) w.u8(0xfe).u32(Number(v));
  else w.u8(0xff).u64(v);
}

/**
 * Reads a TLV stream to the end of `r`. `known` lists the even types the caller understands; any
 * other even type is refused, odd ones are kept for the caller to ignore.
 */
export function readTlvStream(r: ByteReader, known: ReadonlySet<bigint>, what: string): TlvRecord[] {
  const records: TlvRecord[] = [];
  let previous = -1n;
  while (r.remaining > 0) {
    const type = readBigSize(r, `${what} TLV type`);
    if (type <= previous) throw new DecodeError(`${what} TLV types are not strictly increasing (${type} after ${previous})`);
    const length = readBigSize(r, `${what} TLV ${type} length`);
    if (length > BigInt(r.remaining)) throw new DecodeError(`${what} TLV ${type} is ${length} bytes, more than the ${r.remaining} left`);
    const value = r.view(Number(length), `${what} TLV ${type}`);
    if (type % 2n === 0n && !known.has(type)) throw new DecodeError(`${what} has unknown even TLV type ${type}`);
    records.push({ type, value });
    previous = type;
  }
  return records;
}

/** Writes records in increasing type order, as BOLT #1 requires. */
export function writeTlvStream(w: ByteWriter, records: readonly TlvRecord[]): void {
  const sorted = [...records].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].type === sorted[i - 1].type) throw new RangeError(`TLV type ${sorted[i].type} appears twice`);
  }
  for (const { type, value } of sorted) {
    writeBigSize(w, type);
    writeBigSize(w, BigInt(value.length));
    w.raw(value);
  }
}
