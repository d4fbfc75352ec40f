// BOLT #1 `ping` (type 18) and `pong` (type 19): keep-alive. A ping asks for `num_pong_bytes` of
// padding back and carries `byteslen` ignored bytes; the answer is a pong of exactly that many
// bytes, or none at all when `num_pong_bytes` is 65532 or more.
import { ByteReader, ByteWriter } from '../../util/bytes.js';
import { readTlvStream } from './tlv.js';

/** BOLT #1: "if num_pong_bytes is less than 65532: MUST respond by sending a pong". */
const NO_PONG_FROM = 65532;
const NO_EVEN: ReadonlySet<bigint> = new Set();

export interface Ping {
  readonly numPongBytes: number;
  readonly ignored: Buffer;
}

export interface Pong {
  readonly ignored: Buffer;
}

export function decodePing(payload: Buffer): Ping {
  const r = new ByteReader(payload);
  const numPongBytes = r.u16('ping num_pong_bytes');
  const ignored = Buffer.from(r.u16Bytes(0xffff, 'ping ignored'));
  readTlvStream(r, NO_EVEN, 'ping');
  return { numPongBytes, ignored };
}

export function encodePing(ping: Ping): Buffer {
  return new ByteWriter().u16(ping.numPongBytes).u16Bytes(ping.ignored).finish();
}

export function decodePong(payload: Buffer): Pong {
  const r = new ByteReader(payload);
  const ignored = Buffer.from(r.u16Bytes(0xffff, 'pong ignored'));
  readTlvStream(r, NO_EVEN, 'pong');
  return { ignored };
}

export function encodePong(pong: Pong): Buffer {
  return new ByteWriter().u16Bytes(pong.ignored).finish();
}

/** The pong a ping asks for (zero bytes, as BOLT #1 advises), or null when it asks for none. */
export function pongFor(ping: Ping): Pong | null {
  return ping.numPongBytes >= NO_PONG_FROM ? null : { ignored: Buffer.alloc(ping.numPongBytes) };
}
