// The lnbackup server protocol, version 1 (docs/PROTOCOL.md): the binary messages a node and a
// server exchange inside the encrypted transport. One message = a type byte and its fields,
// big-endian. Decoding bounds every count and length before allocating and rejects trailing bytes.
import { ByteReader, ByteWriter, DecodeError } from '../util/bytes.js';
import { MAX_IDENTITY_BYTES } from '../vault/format.js';
import { MAX_PACK_BYTES } from '../vault/packFiles.js';

export const PROTOCOL_VERSION = 1;
export const VAULT_ID_BYTES = 16;
export const HASH_BYTES = 32;
/** Largest record the protocol carries (a record's header + sealed body; docs/FORMAT.md allows 64 MiB + 72). */
export const MAX_RECORD_BYTES = 64 * 1024 * 1024 + 1024;
/** Largest VAULT.json accepted: the vault format's own limit. */
export { MAX_IDENTITY_BYTES };
export const MAX_TEXT_BYTES = 1024;
export const MAX_VERSIONS = 16;
/** The largest Hello (type, version count and versions, agent): all a peer may send before it is admitted. */
export const MAX_HELLO_BYTES = 1 + 2 + 2 * MAX_VERSIONS + 2 + MAX_TEXT_BYTES;
export const MAX_RECORDS_PER_MESSAGE = 10_000;
export const MAX_VAULTS_PER_LIST = 10_000;
/** Largest page pack (a node's pack file, src/vault/packFiles.ts). */
export { MAX_PACK_BYTES };
/** Largest piece of a pack in one PutPack or PackData message. */
export const MAX_PACK_CHUNK_BYTES = 8 * 1024 * 1024;
/** A pack name is `p-<32 hex>.pack`; the decoder takes at most this many bytes of it. */
export const MAX_PACK_NAME_BYTES = 64;
/** Packs per PackList page, names per DeletePacks. */
export const MAX_PACKS_PER_MESSAGE = 10_000;
/**
 * Largest seq a vault's first record may have (a node copying a pruned vault starts from its first
 * kept record): it leaves room for 2^62 more records, so a vault can always take its next one.
 */
export const MAX_FIRST_SEQ = 2n ** 62n;
/** Largest seq of any record (what every store's integer column holds: PostgreSQL's bigint). */
export const MAX_SEQ = 2n ** 63n - 1n;

export enum MessageType {
  Hello = 1,
  Welcome = 2,
  OpenVault = 3,
  VaultState = 4,
  Append = 5,
  Ack = 6,
  ReadRecords = 7,
  Records = 8,
  ListVaults = 9,
  VaultList = 10,
  Ping = 11,
  Pong = 12,
  Error = 13,
  PutPack = 14,
  PackStored = 15,
  ListPacks = 16,
  PackList = 17,
  ReadPack = 18,
  PackData = 19,
  DeletePacks = 20,
  PacksDeleted = 21,
  Prune = 22,
}

export enum ErrorCode {
  /** The message could not be decoded or is not allowed now; the server closes the connection. */
  BadMessage = 1,
  /** No protocol version in common. */
  UnsupportedVersion = 2,
  /** This client key is not on the server's allow-list. */
  NotAllowed = 3,
  /** No such vault for this client (also for another client's vault: nothing is revealed). */
  UnknownVault = 4,
  /** An Append whose seq does not follow the vault's last record; `seq` carries the server's last. */
  OutOfOrder = 5,
  /** The client's byte quota or vault count is used up. */
  QuotaExceeded = 6,
  /** The storage cannot take writes now (disk full, database down); nothing was acknowledged. */
  StorageUnavailable = 7,
  /** Too many appends outstanding, or too many connections. */
  TooBusy = 8,
  /** OpenVault's identity differs from the one the server holds for that vault. */
  IdentityMismatch = 9,
  Internal = 10,
  /** PutPack of a name the vault already holds with other bytes (packs are immutable). */
  PackConflict = 11,
  /** ReadPack of a pack the vault does not hold. */
  UnknownPack = 12,
}

export interface VaultSummary {
  readonly vaultId: Buffer;
  readonly firstSeq: bigint;
  readonly lastSeq: bigint;
  readonly bytes: bigint;
  /** ms since the epoch, 0n when never written. */
  readonly lastWriteAt: bigint;
}

export interface PackSummary {
  readonly name: string;
  readonly bytes: number;
}

export interface WireRecord {
  readonly seq: bigint;
  readonly generation: number;
  readonly bytes: Buffer;
}

export type Message =
  | { readonly type: MessageType.Hello; readonly versions: readonly number[]; readonly agent: string }
  | {
      readonly type: MessageType.Welcome;
      readonly version: number;
      readonly agent: string;
      readonly maxMessageBytes: number;
      readonly maxPendingAppends: number;
    }
  /** `identity` empty: open an existing vault only; otherwise create it if absent (and check it if present). */
  | { readonly type: MessageType.OpenVault; readonly requestId: number; readonly vaultId: Buffer; readonly identity: Buffer }
  /** lastHash is all zeros when the vault holds no record. */
  | {
      readonly type: MessageType.VaultState;
      readonly requestId: number;
      readonly vaultId: Buffer;
      readonly firstSeq: bigint;
      readonly lastSeq: bigint;
      readonly lastHash: Buffer;
      readonly lastGeneration: number;
      readonly bytes: bigint;
      readonly identity: Buffer;
    }
  | { readonly type: MessageType.Append; readonly vaultId: Buffer; readonly record: WireRecord }
  /** Every record of the vault up to `seq` is durable on the server. */
  | { readonly type: MessageType.Ack; readonly vaultId: Buffer; readonly seq: bigint }
  | { readonly type: MessageType.ReadRecords; readonly requestId: number; readonly vaultId: Buffer; readonly fromSeq: bigint; readonly maxBytes: number }
  /** `done`: no record follows the last one sent (at the time of reading). */
  | {
      readonly type: MessageType.Records;
      readonly requestId: number;
      readonly vaultId: Buffer;
      readonly done: boolean;
      readonly records: readonly WireRecord[];
    }
  | { readonly type: MessageType.ListVaults; readonly requestId: number }
  | { readonly type: MessageType.VaultList; readonly requestId: number; readonly vaults: readonly VaultSummary[] }
  | { readonly type: MessageType.Ping; readonly nonce: bigint }
  | { readonly type: MessageType.Pong; readonly nonce: bigint }
  /** One piece of a pack: `bytes` go at `offset` of a pack of `totalBytes`; pieces come in order from offset 0. */
  | {
      readonly type: MessageType.PutPack;
      readonly requestId: number;
      readonly vaultId: Buffer;
      readonly name: string;
      readonly totalBytes: number;
      readonly offset: number;
      readonly bytes: Buffer;
    }
  /** `received` bytes of the pack are taken; when it is the whole pack, the pack is durable. */
  | { readonly type: MessageType.PackStored; readonly requestId: number; readonly received: number }
  /** The vault's packs whose names sort after `after` ('' from the first). */
  | { readonly type: MessageType.ListPacks; readonly requestId: number; readonly vaultId: Buffer; readonly after: string }
  /** `done`: no pack follows the last one listed. */
  | { readonly type: MessageType.PackList; readonly requestId: number; readonly done: boolean; readonly packs: readonly PackSummary[] }
  | {
      readonly type: MessageType.ReadPack;
      readonly requestId: number;
      readonly vaultId: Buffer;
      readonly name: string;
      readonly offset: number;
      readonly maxBytes: number;
    }
  | { readonly type: MessageType.PackData; readonly requestId: number; readonly totalBytes: number; readonly offset: number; readonly bytes: Buffer }
  | { readonly type: MessageType.DeletePacks; readonly requestId: number; readonly vaultId: Buffer; readonly names: readonly string[] }
  | { readonly type: MessageType.PacksDeleted; readonly requestId: number }
  /** Removes the generations below `keepFromGeneration` (never the newest); answered with VaultState. */
  | { readonly type: MessageType.Prune; readonly requestId: number; readonly vaultId: Buffer; readonly keepFromGeneration: number }
  /** requestId, vaultId (zeros) and seq are 0 when they do not apply. */
  | {
      readonly type: MessageType.Error;
      readonly code: ErrorCode;
      readonly requestId: number;
      readonly vaultId: Buffer;
      readonly seq: bigint;
      readonly message: string;
    };

export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;

export const NO_VAULT = Buffer.alloc(VAULT_ID_BYTES);
export const NO_HASH = Buffer.alloc(HASH_BYTES);

export { DecodeError };

function writeRecord(w: ByteWriter, r: WireRecord): void {
  w.u64(r.seq).u32(r.generation).bytes(r.bytes);
}

function readRecord(r: ByteReader, maxRecordBytes: number): WireRecord {
  const seq = r.u64('seq');
  const generation = r.u32('generation');
  return { seq, generation, bytes: r.bytes(maxRecordBytes, 'record') };
}

export function encodeMessage(m: Message): Buffer {
  const w = new ByteWriter().u8(m.type);
  switch (m.type) {
    case MessageType.Hello:
      w.u16(m.versions.length);
      for (const v of m.versions) w.u16(v);
      w.string(m.agent);
      break;
    case MessageType.Welcome:
      w.u16(m.version).string(m.agent).u32(m.maxMessageBytes).u32(m.maxPendingAppends);
      break;
    case MessageType.OpenVault:
      w.u32(m.requestId).fixed(m.vaultId, VAULT_ID_BYTES).bytes(m.identity);
      break;
    case MessageType.VaultState:
      w.u32(m.requestId)
        .fixed(m.vaultId, VAULT_ID_BYTES)
        .u64(m.firstSeq)
        .u64(m.lastSeq)
        .fixed(m.lastHash, HASH_BYTES)
        .u32(m.lastGeneration)
        .u64(m.bytes)
        .bytes(m.identity);
      break;
    case MessageType.Append:
      w.fixed(m.vaultId, VAULT_ID_BYTES);
      writeRecord(w, m.record);
      break;
    case MessageType.Ack:
      w.fixed(m.vaultId, VAULT_ID_BYTES).u64(m.seq);
      break;
    case MessageType.ReadRecords:
      w.u32(m.requestId).fixed(m.vaultId, VAULT_ID_BYTES).u64(m.fromSeq).u32(m.maxBytes);
      break;
    case MessageType.Records:
      w.u32(m.requestId)
        .fixed(m.vaultId, VAULT_ID_BYTES)
        .u8(m.done ? 1 : 0)
        .u32(m.records.length);
      for (const r of m.records) writeRecord(w, r);
      break;
    case MessageType.ListVaults:
      w.u32(m.requestId);
      break;
    case MessageType.VaultList:
      w.u32(m.requestId).u32(m.vaults.length);
      for (const v of m.vaults) w.fixed(v.vaultId, VAULT_ID_BYTES).u64(v.firstSeq).u64(v.lastSeq).u64(v.bytes).u64(v.lastWriteAt);
      break;
    case MessageType.Ping:
    case MessageType.Pong:
      w.u64(m.nonce);
      break;
    case MessageType.PutPack:
      w.u32(m.requestId).fixed(m.vaultId, VAULT_ID_BYTES).string(m.name).u32(m.totalBytes).u32(m.offset).bytes(m.bytes);
      break;
    case MessageType.PackStored:
      w.u32(m.requestId).u32(m.received);
      break;
    case MessageType.ListPacks:
      w.u32(m.requestId).fixed(m.vaultId, VAULT_ID_BYTES).string(m.after);
      break;
    case MessageType.PackList:
      w.u32(m.requestId)
        .u8(m.done ? 1 : 0)
        .u32(m.packs.length);
      for (const p of m.packs) w.string(p.name).u32(p.bytes);
      break;
    case MessageType.ReadPack:
      w.u32(m.requestId).fixed(m.vaultId, VAULT_ID_BYTES).string(m.name).u32(m.offset).u32(m.maxBytes);
      break;
    case MessageType.PackData:
      w.u32(m.requestId).u32(m.totalBytes).u32(m.offset).bytes(m.bytes);
      break;
    case MessageType.DeletePacks:
      w.u32(m.requestId).fixed(m.vaultId, VAULT_ID_BYTES).u32(m.names.length);
      for (const n of m.names) w.string(n);
      break;
    case MessageType.PacksDeleted:
      w.u32(m.requestId);
      break;
    case MessageType.Prune:
      w.u32(m.requestId).fixed(m.vaultId, VAULT_ID_BYTES).u32(m.keepFromGeneration);
      break;
    case MessageType.Error:
      w.u16(m.code)
        .u32(m.requestId)
        .fixed(m.vaultId, VAULT_ID_BYTES)
        .u64(m.seq)
        .string(m.message.slice(0, MAX_TEXT_BYTES / 4));
      break;
  }
  return w.finish();
}

/** Decodes one message; throws DecodeError naming the field that is wrong. */
export function decodeMessage(buf: Buffer, maxRecordBytes = MAX_RECORD_BYTES): Message {
  const r = new ByteReader(buf);
  const type = r.u8('message type');
  let m: Message;
  switch (type) {
    case MessageType.Hello: {
      const n = r.count(r.u16('version count'), MAX_VERSIONS, 2, 'version');
      const versions: number[] = [];
      for (let i = 0; i < n; i++) versions.push(r.u16('version'));
      m = { type, versions, agent: r.string(MAX_TEXT_BYTES, 'agent') };
      break;
    }
    case MessageType.Welcome:
      m = {
        type,
        version: r.u16('version'),
        agent: r.string(MAX_TEXT_BYTES, 'agent'),
        maxMessageBytes: r.u32('max message bytes'),
        maxPendingAppends: r.u32('max pending appends'),
      };
      break;
    case MessageType.OpenVault:
      m = { type, requestId: r.u32('request id'), vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'), identity: r.bytes(MAX_IDENTITY_BYTES, 'identity') };
      break;
    case MessageType.VaultState:
      m = {
        type,
        requestId: r.u32('request id'),
        vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'),
        firstSeq: r.u64('first seq'),
        lastSeq: r.u64('last seq'),
        lastHash: r.fixed(HASH_BYTES, 'last hash'),
        lastGeneration: r.u32('last generation'),
        bytes: r.u64('bytes'),
        identity: r.bytes(MAX_IDENTITY_BYTES, 'identity'),
      };
      break;
    case MessageType.Append:
      m = { type, vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'), record: readRecord(r, maxRecordBytes) };
      break;
    case MessageType.Ack:
      m = { type, vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'), seq: r.u64('seq') };
      break;
    case MessageType.ReadRecords:
      m = { type, requestId: r.u32('request id'), vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'), fromSeq: r.u64('from seq'), maxBytes: r.u32('max bytes') };
      break;
    case MessageType.Records: {
      const requestId = r.u32('request id');
      const vaultId = r.fixed(VAULT_ID_BYTES, 'vault id');
      const done = r.u8('done flag');
      if (done > 1) throw new DecodeError(`done flag ${done} is not 0 or 1`);
      const n = r.count(r.u32('record count'), MAX_RECORDS_PER_MESSAGE, 16, 'record');
      const records: WireRecord[] = [];
      for (let i = 0; i < n; i++) records.push(readRecord(r, maxRecordBytes));
      m = { type, requestId, vaultId, done: done === 1, records };
      break;
    }
    case MessageType.ListVaults:
      m = { type, requestId: r.u32('request id') };
      break;
    case MessageType.VaultList: {
      const requestId = r.u32('request id');
      const n = r.count(r.u32('vault count'), MAX_VAULTS_PER_LIST, VAULT_ID_BYTES + 32, 'vault');
      const vaults: VaultSummary[] = [];
      for (let i = 0; i < n; i++) {
        vaults.push({
          vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'),
          firstSeq: r.u64('first seq'),
          lastSeq: r.u64('last seq'),
          bytes: r.u64('bytes'),
          lastWriteAt: r.u64('last write'),
        });
      }
      m = { type, requestId, vaults };
      break;
    }
    case MessageType.Ping:
    case MessageType.Pong:
      m = { type, nonce: r.u64('nonce') };
      break;
    case MessageType.PutPack: {
      const requestId = r.u32('request id');
      const vaultId = r.fixed(VAULT_ID_BYTES, 'vault id');
      const name = r.string(MAX_PACK_NAME_BYTES, 'pack name');
      const totalBytes = r.u32('pack size');
      if (totalBytes > MAX_PACK_BYTES) throw new DecodeError(`pack size ${totalBytes} is more than the ${MAX_PACK_BYTES} allowed`);
      if (totalBytes === 0) throw new DecodeError('pack size 0: a pack holds at least one page');
      const offset = r.u32('offset');
      const bytes = r.bytes(MAX_PACK_CHUNK_BYTES, 'pack bytes');
      if (offset + bytes.length > totalBytes) throw new DecodeError(`pack bytes ${offset}..${offset + bytes.length} run past the pack size ${totalBytes}`);
      m = { type, requestId, vaultId, name, totalBytes, offset, bytes };
      break;
    }
    case MessageType.PackStored:
      m = { type, requestId: r.u32('request id'), received: r.u32('received') };
      break;
    case MessageType.ListPacks:
      m = { type, requestId: r.u32('request id'), vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'), after: r.string(MAX_PACK_NAME_BYTES, 'after') };
      break;
    case MessageType.PackList: {
      const requestId = r.u32('request id');
      const done = r.u8('done flag');
      if (done > 1) throw new DecodeError(`done flag ${done} is not 0 or 1`);
      const n = r.count(r.u32('pack count'), MAX_PACKS_PER_MESSAGE, 6, 'pack');
      const packs: PackSummary[] = [];
      for (let i = 0; i < n; i++) {
        const name = r.string(MAX_PACK_NAME_BYTES, 'pack name');
        const bytes = r.u32('pack size');
        if (bytes > MAX_PACK_BYTES) throw new DecodeError(`pack size ${bytes} is more than the ${MAX_PACK_BYTES} allowed`);
        packs.push({ name, bytes });
      }
      m = { type, requestId, done: done === 1, packs };
      break;
    }
    case MessageType.ReadPack:
      m = {
        type,
        requestId: r.u32('request id'),
        vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'),
        name: r.string(MAX_PACK_NAME_BYTES, 'pack name'),
        offset: r.u32('offset'),
        maxBytes: r.u32('max bytes'),
      };
      break;
    case MessageType.PackData: {
      const requestId = r.u32('request id');
      const totalBytes = r.u32('pack size');
      if (totalBytes > MAX_PACK_BYTES) throw new DecodeError(`pack size ${totalBytes} is more than the ${MAX_PACK_BYTES} allowed`);
      const offset = r.u32('offset');
      const bytes = r.bytes(MAX_PACK_CHUNK_BYTES, 'pack bytes');
      if (offset + bytes.length > totalBytes) throw new DecodeError(`pack bytes ${offset}..${offset + bytes.length} run past the pack size ${totalBytes}`);
      m = { type, requestId, totalBytes, offset, bytes };
      break;
    }
    case MessageType.DeletePacks: {
      const requestId = r.u32('request id');
      const vaultId = r.fixed(VAULT_ID_BYTES, 'vault id');
      const n = r.count(r.u32('name count'), MAX_PACKS_PER_MESSAGE, 2, 'name');
      const names: string[] = [];
      for (let i = 0; i < n; i++) names.push(r.string(MAX_PACK_NAME_BYTES, 'pack name'));
      m = { type, requestId, vaultId, names };
      break;
    }
    case MessageType.PacksDeleted:
      m = { type, requestId: r.u32('request id') };
      break;
    case MessageType.Prune:
      m = { type, requestId: r.u32('request id'), vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'), keepFromGeneration: r.u32('keep from generation') };
      break;
    case MessageType.Error: {
      const code = r.u16('error code');
      m = {
        type,
        code,
        requestId: r.u32('request id'),
        vaultId: r.fixed(VAULT_ID_BYTES, 'vault id'),
        seq: r.u64('seq'),
        message: r.string(MAX_TEXT_BYTES, 'message'),
      };
      break;
    }
    default:
      throw new DecodeError(`unknown message type ${type}`);
  }
  r.end(MessageType[type]);
  return m;
}

/** A short name for logs and errors. */
export function messageName(type: MessageType): string {
  return MessageType[type] ?? `type ${type}`;
}
