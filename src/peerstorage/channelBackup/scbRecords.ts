// Core Lightning's static channel backup, the plaintext of emergency.recover and of its
// peer_storage blob (common/scb_wire.csv, message `static_chan_backup_with_tlvs`, type 6137):
//   u16 6137 | u64 version | u32 timestamp | u16 num | num x modern_scb_chan
//   modern_scb_chan: u64 id | channel_id (32) | node_id (33) | wireaddr | funding txid (32)
//                    | u32 outnum | u64 funding sats | u16 len + channel_type | u32 len_tlv
//                    | scb_tlvs (len_tlv bytes): 1 shachain (u64 min_index, u32 num_valid,
//                      num_valid x (u64 index, 32 secret), at most 49: SHACHAIN_BITS 48 + 1),
//                      3 basepoints (4 x 33), 5 opener (u8 side), 7 remote_to_self_delay (u16)
//   wireaddr (common/wireaddr.c): u8 type (1 ipv4: 4, 2 ipv6: 16, 3 torv2: 10, 4 torv3: 35,
//                    5 dns: u8 length + name) then u16 port
// Each entry of lightningd's `staticbackup` RPC (`scb[]`) is exactly one modern_scb_chan. Every
// count and length is checked against the bytes left before anything is allocated.
import { ByteReader, ByteWriter, DecodeError } from '../../util/bytes.js';
import { readTlvStream, writeTlvStream, type TlvRecord } from '../wire/tlv.js';

export const STATIC_CHAN_BACKUP_WITH_TLVS = 6137;
/** plugins/chanbackup.c `VERSION`. */
export const SCB_VERSION = 1n;
/** The legacy message (no TLVs), which this module does not read. */
const STATIC_CHAN_BACKUP_LEGACY = 6135;
const MAX_SHACHAIN_ENTRIES = 49;
const BASEPOINTS_BYTES = 4 * 33;
/** The fixed bytes of a record with an empty address, channel type and TLV stream. */
const MIN_RECORD_BYTES = 8 + 32 + 33 + 1 + 2 + 32 + 4 + 8 + 2 + 4;
const NO_EVEN: ReadonlySet<bigint> = new Set();

const ADDRESS_BYTES: ReadonlyMap<number, number> = new Map([
  [1, 4],
  [2, 16],
  [3, 10],
  [4, 35],
]);
const DNS = 5;

export interface Shachain {
  readonly minIndex: bigint;
  readonly entries: readonly { readonly index: bigint; readonly secret: Buffer }[];
}

export interface ScbChannel {
  /** The record's bytes as they were read (what `staticbackup` and `recoverchannel` carry). */
  readonly raw: Buffer;
  readonly dbId: bigint;
  readonly channelId: Buffer;
  readonly peerId: Buffer;
  /** BOLT #7 address descriptor type, and the address bytes and port as on the wire. */
  readonly addressType: number;
  readonly address: Buffer;
  readonly port: number;
  /** The funding transaction id in its internal byte order (reverse it to display). */
  readonly fundingTxid: Buffer;
  readonly fundingOutnum: number;
  readonly fundingSats: bigint;
  readonly channelType: Buffer;
  readonly shachain: Shachain | null;
  readonly basepoints: Buffer | null;
  readonly opener: number | null;
  readonly remoteToSelfDelay: number | null;
  /** TLV records of other (odd) types, kept so that the record re-encodes to the same bytes. */
  readonly otherTlvs: readonly TlvRecord[];
}

export interface StaticChanBackup {
  readonly version: bigint;
  /** Unix seconds when the backup was written. */
  readonly timestamp: number;
  readonly channels: readonly ScbChannel[];
}

function readShachain(value: Buffer): Shachain {
  const r = new ByteReader(value);
  const minIndex = r.u64('shachain min_index');
  const n = r.count(r.u32('shachain num_valid'), MAX_SHACHAIN_ENTRIES, 40, 'shachain entry');
  const entries = [];
  for (let i = 0; i < n; i++) entries.push({ index: r.u64('shachain index'), secret: r.fixed(32, 'shachain secret') });
  r.end('the shachain');
  return { minIndex, entries };
}

function fixedTlv(value: Buffer, bytes: number, what: string): Buffer {
  if (value.length !== bytes) throw new DecodeError(`SCB ${what} is ${value.length} bytes, not ${bytes}`);
  return Buffer.from(value);
}

/** Reads one record from `c`, a reader over `buf`; `raw` is the bytes it spans. */
function readChannel(buf: Buffer, c: ByteReader): ScbChannel {
  const start = buf.length - c.remaining;
  const dbId = c.u64('SCB channel id');
  const channelId = c.fixed(32, 'SCB channel_id');
  const peerId = c.fixed(33, 'SCB node_id');
  const addressType = c.u8('SCB address type');
  const addressBytes = addressType === DNS ? c.u8('SCB dns name length') : ADDRESS_BYTES.get(addressType);
  if (addressBytes === undefined) throw new DecodeError(`SCB address type ${addressType} is unknown`);
  const address = c.fixed(addressBytes, 'SCB address');
  const port = c.u16('SCB port');
  const fundingTxid = c.fixed(32, 'SCB funding txid');
  const fundingOutnum = c.u32('SCB funding outnum');
  const fundingSats = c.u64('SCB funding sats');
  const channelType = Buffer.from(c.u16Bytes(0xffff, 'SCB channel_type'));
  const tlvLength = c.u32('SCB len_tlv');
  let shachain: Shachain | null = null;
  let basepoints: Buffer | null = null;
  let opener: number | null = null;
  let remoteToSelfDelay: number | null = null;
  const otherTlvs: TlvRecord[] = [];
  for (const t of readTlvStream(new ByteReader(c.view(tlvLength, 'SCB tlvs')), NO_EVEN, 'SCB channel')) {
    if (t.type === 1n) shachain = readShachain(t.value);
    else if (t.type === 3n) basepoints = fixedTlv(t.value, BASEPOINTS_BYTES, 'basepoints');
    else if (t.type === 5n) {
      opener = fixedTlv(t.value, 1, 'opener')[0];
      if (opener > 1) throw new DecodeError(`SCB opener is ${opener}, not 0 (local) or 1 (remote)`);
    } else if (t.type === 7n) remoteToSelfDelay = fixedTlv(t.value, 2, 'remote_to_self_delay').readUInt16BE();
    else otherTlvs.push({ type: t.type, value: Buffer.from(t.value) });
  }
  return {
    raw: Buffer.from(buf.subarray(start, buf.length - c.remaining)),
    dbId,
    channelId,
    peerId,
    addressType,
    address,
    port,
    fundingTxid,
    fundingOutnum,
    fundingSats,
    channelType,
    shachain,
    basepoints,
    opener,
    remoteToSelfDelay,
    otherTlvs,
  };
}

/** Decodes one `staticbackup` entry (one modern_scb_chan, nothing after it). */
export function decodeScbChannel(record: Buffer): ScbChannel {
  const r = new ByteReader(record);
  const channel = readChannel(record, r);
  r.end('the SCB channel record');
  return channel;
}

/** Encodes a record from its fields (equal to `raw` for any record this module decoded). */
export function encodeScbChannel(ch: Omit<ScbChannel, 'raw'>): Buffer {
  const w = new ByteWriter().u64(ch.dbId).fixed(ch.channelId, 32).fixed(ch.peerId, 33).u8(ch.addressType);
  if (ch.addressType === DNS) w.u8(ch.address.length);
  else if (ADDRESS_BYTES.get(ch.addressType) !== ch.address.length)
    throw new RangeError(`address type ${ch.addressType} does not take ${ch.address.length} bytes`);
  w.raw(ch.address).u16(ch.port).fixed(ch.fundingTxid, 32).u32(ch.fundingOutnum).u64(ch.fundingSats).u16Bytes(ch.channelType);
  const records: TlvRecord[] = [...ch.otherTlvs];
  if (ch.shachain) {
    const s = new ByteWriter().u64(ch.shachain.minIndex).u32(ch.shachain.entries.length);
    for (const e of ch.shachain.entries) s.u64(e.index).fixed(e.secret, 32);
    records.push({ type: 1n, value: s.finish() });
  }
  if (ch.basepoints) records.push({ type: 3n, value: ch.basepoints });
  if (ch.opener !== null) records.push({ type: 5n, value: Buffer.of(ch.opener) });
  if (ch.remoteToSelfDelay !== null) records.push({ type: 7n, value: new ByteWriter().u16(ch.remoteToSelfDelay).finish() });
  const tlvs = new ByteWriter();
  writeTlvStream(tlvs, records);
  return w.bytes(tlvs.finish()).finish();
}

/** Decodes the whole plaintext (static_chan_backup_with_tlvs). */
export function decodeStaticChanBackup(plaintext: Buffer): StaticChanBackup {
  const r = new ByteReader(plaintext);
  const type = r.u16('SCB message type');
  if (type === STATIC_CHAN_BACKUP_LEGACY) throw new DecodeError('this is the legacy SCB format (6135, before Core Lightning kept TLVs): not supported');
  if (type !== STATIC_CHAN_BACKUP_WITH_TLVS) throw new DecodeError(`SCB message type is ${type}, not ${STATIC_CHAN_BACKUP_WITH_TLVS}`);
  const version = r.u64('SCB version');
  const timestamp = r.u32('SCB timestamp');
  const n = r.count(r.u16('SCB num'), 0xffff, MIN_RECORD_BYTES, 'SCB channel');
  const channels: ScbChannel[] = [];
  for (let i = 0; i < n; i++) channels.push(readChannel(plaintext, r));
  r.end('the SCB channels');
  return { version, timestamp, channels };
}

/** Builds the plaintext from `staticbackup` records, each checked by decoding it first. */
export function encodeStaticChanBackup(timestamp: number, records: readonly Buffer[], version: bigint = SCB_VERSION): Buffer {
  if (records.length > 0xffff) throw new RangeError(`an SCB holds at most 65535 channels, not ${records.length}`);
  const w = new ByteWriter().u16(STATIC_CHAN_BACKUP_WITH_TLVS).u64(version).u32(timestamp).u16(records.length);
  for (const record of records) w.raw(decodeScbChannel(record).raw);
  return w.finish();
}
