// Taking records from a server that is ahead of the local vault (the node's vault lost records, or
// it is only a cache): every record is proven before anything is written (authentic under the
// node's key and this vault id, next in sequence, chained to the previous record's hash, its
// generation never going back and a new generation starting with a snapshot), then all are
// appended to the local vault durably. The server is untrusted: one bad record and nothing is
// written.
import { decodeHeader, FormatError, genesisHash, HEADER_BYTES, RecordType, recordHash } from './format.js';
import { openIdentity, vaultIdBytes } from './identity.js';
import type { VaultKeys } from './keys.js';
import { openRecord } from './record.js';
import type { ChainPosition, SealedRecord } from './sealer.js';
import { VaultWriter } from './writer.js';

/** A record as a server returns it. */
export interface ForeignRecord {
  readonly seq: bigint;
  readonly generation: number;
  readonly bytes: Buffer;
}

export interface AdoptOptions {
  readonly vaultDir: string;
  readonly keys: VaultKeys;
  /** Where the local chain ends; the records must continue it. The vault must not be open by a writer. */
  readonly tail: ChainPosition;
  readonly records: readonly ForeignRecord[];
  /** Where the records come from, for messages (the server's URL). */
  readonly source: string;
}

export interface AdoptResult {
  readonly records: number;
  readonly bytes: number;
  readonly lastSeq: bigint;
  readonly lastHash: Buffer;
  readonly generation: number;
}

/** A record offered for adoption is not the next record of this vault's chain; nothing was written. */
export class AdoptError extends Error {
  override name = 'AdoptError';
}

/** Proves that `records` continue the chain at `tail`; returns them with their chain hashes. Throws AdoptError naming the first bad one. */
export function proveRecords(vaultId: Buffer, keys: VaultKeys, tail: ChainPosition, records: readonly ForeignRecord[], source: string): SealedRecord[] {
  const proven: SealedRecord[] = [];
  let prevHash = tail.lastSeq === 0n ? genesisHash(vaultId) : tail.lastHash;
  let generation = tail.generation;
  let expected = tail.lastSeq + 1n;
  for (const r of records) {
    const bad = (why: string): AdoptError => new AdoptError(`record ${r.seq} from ${source} ${why}`);
    if (r.seq !== expected) throw bad(`is out of place: record ${expected} comes next (records missing, replayed or reordered)`);
    if (r.bytes.length < HEADER_BYTES) throw bad('is shorter than a record header');
    const headerBytes = r.bytes.subarray(0, HEADER_BYTES);
    let header;
    try {
      header = decodeHeader(headerBytes);
    } catch (err) {
      if (err instanceof FormatError) throw bad(`is not a record: ${err.message}`);
      throw err;
    }
    if (header.seq !== r.seq) throw bad(`says in its header that it is record ${header.seq}`);
    if (HEADER_BYTES + header.sealedLength !== r.bytes.length)
      throw bad(`is ${r.bytes.length} bytes but its header says ${HEADER_BYTES + header.sealedLength}`);
    const sealed = r.bytes.subarray(HEADER_BYTES);
    const body = openRecord(keys.record, vaultId, header, headerBytes, sealed);
    if (body === null) throw bad('fails authentication: the server altered it, or it belongs to another vault');
    if (!body.prevHash.equals(prevHash)) {
      throw bad(`does not follow record ${r.seq - 1n} (hash chain broken): the server's copy is not this vault's history`);
    }
    if (body.generation !== r.generation) throw bad(`is sealed as generation ${body.generation} but the server lists it as generation ${r.generation}`);
    if (body.generation < generation) throw bad(`goes back from generation ${generation} to ${body.generation}`);
    if (body.generation > generation && body.type !== RecordType.SnapshotBegin) {
      throw bad(`starts generation ${body.generation} without a snapshot (a ${RecordType[body.type]} record)`);
    }
    const hash = recordHash(headerBytes, sealed);
    proven.push({ seq: r.seq, generation: body.generation, bytes: Buffer.from(r.bytes), hash });
    prevHash = hash;
    generation = body.generation;
    expected++;
  }
  return proven;
}

/** Proves the records, then appends them to the local vault and makes them durable. */
export async function adoptRecords(options: AdoptOptions): Promise<AdoptResult> {
  const { vaultDir, keys, tail, source } = options;
  const identity = openIdentity(vaultDir, keys);
  const proven = proveRecords(vaultIdBytes(identity), keys, tail, options.records, source);
  const writer = VaultWriter.open(vaultDir, keys);
  try {
    const at = writer.tail;
    if (at.lastSeq !== tail.lastSeq || !at.lastHash.equals(tail.lastHash)) {
      throw new AdoptError(
        `the local vault at ${vaultDir} changed (it ends at record ${at.lastSeq}, not ${tail.lastSeq}) while records from ${source} were proven; nothing was adopted`,
      );
    }
    let bytes = 0;
    for (const r of proven) {
      writer.append(r);
      bytes += r.bytes.length;
    }
    writer.sync();
    const last = writer.tail;
    return { records: proven.length, bytes, lastSeq: last.lastSeq, lastHash: last.lastHash, generation: last.generation };
  } finally {
    writer.close();
  }
}
