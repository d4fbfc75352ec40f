// Starts a new generation in the vault from a consistent snapshot of the node's database:
// SnapshotBegin (its data_version and size), the file in chunks, SnapshotEnd (size, SHA-256).
// The chunks stream from disk to the vault: a large database never sits in memory.
import crypto from 'node:crypto';
import { RecordType } from '../vault/format.js';
import type { RecordSealer } from '../vault/sealer.js';
import type { VaultWriter } from '../vault/writer.js';
import { encodeSnapshotBegin, encodeSnapshotChunk, encodeSnapshotEnd } from './payloads.js';
import { withConsistentSnapshot } from './snapshotSource.js';

export interface SnapshotTaken {
  readonly generation: number;
  readonly dataVersion: number;
  readonly dbBytes: number;
  readonly takenAt: number;
  readonly lastSeq: bigint;
}

/** Seals a snapshot of `dbPath` as a new generation and makes it durable. */
export function writeSnapshot(
  dbPath: string,
  sealer: RecordSealer,
  writer: VaultWriter,
  onProgress?: (doneBytes: number, totalBytes: number) => void,
): SnapshotTaken {
  return withConsistentSnapshot(dbPath, (view) => {
    const generation = writer.tail.generation + 1;
    const takenAt = Date.now();
    const put = (type: RecordType, payload: Buffer): void =>
      writer.append(sealer.seal({ type, generation, dataVersion: view.dataVersion, supersedes: 0n, payload }));
    put(RecordType.SnapshotBegin, encodeSnapshotBegin({ dbBytes: view.dbBytes, takenAt }));
    const hash = crypto.createHash('sha256');
    onProgress?.(0, view.dbBytes);
    for (const chunk of view.chunks()) {
      hash.update(chunk.bytes);
      put(RecordType.SnapshotChunk, encodeSnapshotChunk(chunk.offset, chunk.bytes));
      onProgress?.(chunk.offset + chunk.bytes.length, view.dbBytes);
    }
    put(RecordType.SnapshotEnd, encodeSnapshotEnd({ dbBytes: view.dbBytes, sha256: hash.digest() }));
    writer.sync();
    return { generation, dataVersion: view.dataVersion, dbBytes: view.dbBytes, takenAt, lastSeq: sealer.lastSeq };
  });
}
