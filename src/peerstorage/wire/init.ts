// BOLT #1 `init` (type 16): the first message each side sends. `globalfeatures` and `features`
// (u16-prefixed bit fields, BOLT #9) and the `init_tlvs` stream: `networks` (type 1, chain hashes
// of 32 bytes) and `remote_addr` (type 3, a BOLT #7 address descriptor, kept as bytes).
import { ByteReader, ByteWriter, DecodeError } from '../../util/bytes.js';
import { unionOf } from './features.js';
import { readTlvStream, writeTlvStream, type TlvRecord } from './tlv.js';

const NETWORKS = 1n;
const REMOTE_ADDR = 3n;
const KNOWN_EVEN: ReadonlySet<bigint> = new Set();
const CHAIN_HASH_BYTES = 32;

/** BOLT #1's `chain_hash` of regtest (the genesis block hash in its internal byte order). */
export const REGTEST_CHAIN_HASH = Buffer.from('06226e46111a0b59caaf126043eb5bbf28c34f3a5e332a1fc7b2b73cf188910f', 'hex');

export interface Init {
  readonly globalFeatures: Buffer;
  readonly features: Buffer;
  /** The chains the sender is interested in; null when the TLV is absent. */
  readonly networks: readonly Buffer[] | null;
  /** The address the sender sees us at; null when absent. */
  readonly remoteAddress: Buffer | null;
  /** Odd TLV records this implementation does not know (BOLT #1: ignore them). */
  readonly otherRecords: readonly TlvRecord[];
}

export function decodeInit(payload: Buffer): Init {
  const r = new ByteReader(payload);
  const globalFeatures = Buffer.from(r.u16Bytes(0xffff, 'init globalfeatures'));
  const features = Buffer.from(r.u16Bytes(0xffff, 'init features'));
  let networks: Buffer[] | null = null;
  let remoteAddress: Buffer | null = null;
  const otherRecords: TlvRecord[] = [];
  for (const record of readTlvStream(r, KNOWN_EVEN, 'init')) {
    if (record.type === NETWORKS) {
      if (record.value.length % CHAIN_HASH_BYTES !== 0) throw new DecodeError(`init networks is ${record.value.length} bytes, not a multiple of 32`);
      networks = [];
      for (let i = 0; i < record.value.length; i += CHAIN_HASH_BYTES) networks.push(Buffer.from(record.value.subarray(i, i + CHAIN_HASH_BYTES)));
    } else if (record.type === REMOTE_ADDR) {
      remoteAddress = Buffer.from(record.value);
    } else {
      otherRecords.push({ type: record.type, value: Buffer.from(record.value) });
    }
  }
  return { globalFeatures, features, networks, remoteAddress, otherRecords };
}

export function encodeInit(init: Init): Buffer {
  const w = new ByteWriter().u16Bytes(init.globalFeatures).u16Bytes(init.features);
  const records: TlvRecord[] = [...init.otherRecords];
  if (init.networks !== null) {
    for (const n of init.networks) if (n.length !== CHAIN_HASH_BYTES) throw new RangeError('a chain hash is 32 bytes');
    records.push({ type: NETWORKS, value: Buffer.concat(init.networks) });
  }
  if (init.remoteAddress !== null) records.push({ type: REMOTE_ADDR, value: init.remoteAddress });
  writeTlvStream(w, records);
  return w.finish();
}

/** Every feature the sender has, from both fields (BOLT #1 says to treat them as one). */
export function initFeatures(init: Init): Buffer {
  return unionOf(init.globalFeatures, init.features);
}
