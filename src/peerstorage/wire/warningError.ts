// BOLT #1 `warning` (type 1) and `error` (type 17): a channel id (all zeros for the whole
// connection) and u16-prefixed data, usually text. A warning leaves the connection open; an error
// fails the channel, or every channel when the id is zero.
import { ByteReader, ByteWriter } from '../../util/bytes.js';
import { readTlvStream } from './tlv.js';

const CHANNEL_ID_BYTES = 32;
const NO_EVEN: ReadonlySet<bigint> = new Set();

export interface WarningOrError {
  readonly channelId: Buffer;
  readonly data: Buffer;
}

export function decodeWarningOrError(payload: Buffer, what: 'warning' | 'error'): WarningOrError {
  const r = new ByteReader(payload);
  const channelId = r.fixed(CHANNEL_ID_BYTES, `${what} channel_id`);
  const data = Buffer.from(r.u16Bytes(0xffff, `${what} data`));
  readTlvStream(r, NO_EVEN, what);
  return { channelId, data };
}

export function encodeWarningOrError(m: WarningOrError): Buffer {
  return new ByteWriter().fixed(m.channelId, CHANNEL_ID_BYTES).u16Bytes(m.data).finish();
}

/** BOLT #1: print the data only if it is all printable ASCII; otherwise show it as hex. */
export function describeData(data: Buffer): string {
  return /^[\x20-\x7e]*$/.test(data.toString('latin1')) ? JSON.stringify(data.toString('latin1')) : `0x${data.toString('hex')}`;
}
