// The BOLT #1 messages a peer-storage peer speaks, as one tagged union: decodeMessage turns a
// received message (one BOLT #8 frame's plaintext) into it, encodeMessage back. Unknown odd types
// come back as `unknown` for the caller to ignore; an unknown even type is refused, since BOLT #1
// says to close the connection ("it's OK to be odd").
import { DecodeError } from '../../util/bytes.js';
import { MessageType, joinFrame, splitFrame } from './frame.js';
import { decodeInit, encodeInit, type Init } from './init.js';
import { decodePeerStorage, encodePeerStorage } from './peerStorage.js';
import { decodePing, decodePong, encodePing, encodePong, type Ping, type Pong } from './ping.js';
import { decodeWarningOrError, encodeWarningOrError, type WarningOrError } from './warningError.js';

export type LightningMessage =
  | ({ readonly kind: 'init' } & Init)
  | ({ readonly kind: 'ping' } & Ping)
  | ({ readonly kind: 'pong' } & Pong)
  | ({ readonly kind: 'warning' } & WarningOrError)
  | ({ readonly kind: 'error' } & WarningOrError)
  | { readonly kind: 'peer_storage'; readonly blob: Buffer }
  | { readonly kind: 'peer_storage_retrieval'; readonly blob: Buffer }
  | { readonly kind: 'unknown'; readonly type: number; readonly payload: Buffer };

/** Decodes one message, or throws DecodeError saying what is wrong with it. */
export function decodeMessage(message: Buffer): LightningMessage {
  const { type, payload } = splitFrame(message);
  switch (type) {
    case MessageType.init:
      return { kind: 'init', ...decodeInit(payload) };
    case MessageType.ping:
      return { kind: 'ping', ...decodePing(payload) };
    case MessageType.pong:
      return { kind: 'pong', ...decodePong(payload) };
    case MessageType.warning:
      return { kind: 'warning', ...decodeWarningOrError(payload, 'warning') };
    case MessageType.error:
      return { kind: 'error', ...decodeWarningOrError(payload, 'error') };
    case MessageType.peerStorage:
      return { kind: 'peer_storage', ...decodePeerStorage(payload, 'peer_storage') };
    case MessageType.peerStorageRetrieval:
      return { kind: 'peer_storage_retrieval', ...decodePeerStorage(payload, 'peer_storage_retrieval') };
    default:
      if (type % 2 === 0) throw new DecodeError(`unknown even message type ${type}: BOLT #1 says to close the connection`);
      return { kind: 'unknown', type, payload: Buffer.from(payload) };
  }
}

export function encodeMessage(m: LightningMessage): Buffer {
  switch (m.kind) {
    case 'init':
      return joinFrame(MessageType.init, encodeInit(m));
    case 'ping':
      return joinFrame(MessageType.ping, encodePing(m));
    case 'pong':
      return joinFrame(MessageType.pong, encodePong(m));
    case 'warning':
      return joinFrame(MessageType.warning, encodeWarningOrError(m));
    case 'error':
      return joinFrame(MessageType.error, encodeWarningOrError(m));
    case 'peer_storage':
      return joinFrame(MessageType.peerStorage, encodePeerStorage(m));
    case 'peer_storage_retrieval':
      return joinFrame(MessageType.peerStorageRetrieval, encodePeerStorage(m));
    case 'unknown':
      return joinFrame(m.type, m.payload);
  }
}
