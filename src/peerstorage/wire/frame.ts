// BOLT #1 "Message Format": a message is a u16 type then its payload, and one message travels in
// one BOLT #8 frame, so it is at most 65535 bytes. The types peer storage needs are named here.
import { DecodeError } from '../../util/bytes.js';

/** BOLT #8: a frame's plaintext is at most 65535 bytes, and a BOLT #1 message is one frame. */
export const MAX_MESSAGE_BYTES = 0xffff;

export const MessageType = {
  warning: 1,
  peerStorage: 7,
  peerStorageRetrieval: 9,
  init: 16,
  error: 17,
  ping: 18,
  pong: 19,
} as const;

export interface Frame {
  readonly type: number;
  readonly payload: Buffer;
}

/** Splits a received message into its type and payload (a view). */
export function splitFrame(message: Buffer): Frame {
  if (message.length < 2) throw new DecodeError(`a Lightning message is at least its 2-byte type, got ${message.length} bytes`);
  if (message.length > MAX_MESSAGE_BYTES) throw new DecodeError(`a Lightning message is at most ${MAX_MESSAGE_BYTES} bytes, got ${message.length}`);
  return { type: message.readUInt16BE(0), payload: message.subarray(2) };
}

export function joinFrame(type: number, payload: Buffer): Buffer {
  if (!Number.isInteger(type) || type < 0 || type > 0xffff) throw new RangeError(`message type ${type} is not a u16`);
  if (payload.length + 2 > MAX_MESSAGE_BYTES) throw new RangeError(`a ${payload.length}-byte payload makes a message larger than ${MAX_MESSAGE_BYTES} bytes`);
  const message = Buffer.allocUnsafe(2 + payload.length);
  message.writeUInt16BE(type, 0);
  payload.copy(message, 2);
  return message;
}
