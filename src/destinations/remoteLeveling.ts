// How a remote destination and a server agree on where the server's copy ends (remote.ts): the
// server's answer (VaultState) is compared with the node's chain. A copy whose last record is the
// node's record of that seq is a prefix (behind or level: resume after it); one whose last record
// differs has diverged and is never written again; one that is ahead has its records (and the
// packs they refer to) fetched, for the node to prove and adopt (vault/adopt.ts), unless the
// server's retention removed the records that would join them to this vault.
import type { WireRecord } from '../protocol/messages.js';
import { listPacks as listLocalPacks, writePackAsync } from '../vault/packFiles.js';
import type { VaultState } from './serverClient.js';
import type { ServerConnection } from './serverConnection.js';

/** Records asked of the server at a time when it is ahead. */
const FETCH_PAGE_BYTES = 1 << 20;

/**
 * Fetches the records the server holds after `newest` (stopping at the first out-of-place one,
 * which the proof then refuses by name), and the packs the local vault lacks (each written whole
 * or not at all; a pack is opaque here, the reader proves it under the key). Empty when the server
 * sends none of the records it claims.
 */
export async function fetchAhead(client: ServerConnection, vaultId: Buffer, vaultDir: string, newest: bigint, state: VaultState): Promise<WireRecord[]> {
  const records: WireRecord[] = [];
  let next = newest + 1n;
  fetch: while (next <= state.lastSeq) {
    const page = await client.readRecords(vaultId, next, FETCH_PAGE_BYTES);
    for (const r of page.records) {
      if (next > state.lastSeq) break;
      records.push(r);
      if (r.seq !== next) break fetch;
      next++;
    }
    if (page.records.length === 0 || page.done) break;
  }
  if (records.length === 0) return records;
  const local = new Set(listLocalPacks(vaultDir).map((p) => p.name));
  for (const p of await client.listPacks(vaultId)) {
    if (local.has(p.name)) continue;
    const bytes = await client.downloadPack(vaultId, p.name, p.bytes);
    await writePackAsync(vaultDir, p.name, bytes);
  }
  return records;
}

/**
 * Why the server's copy is not a prefix of the node's chain, or null when it is. `localHash` gives
 * the hash of the node's record `seq` (null when the local vault no longer holds it).
 */
export function disagreement(name: string, vaultDir: string, state: VaultState, localHash: (seq: bigint) => Buffer | null): string | null {
  const seq = state.lastSeq;
  if (seq === 0n) return null;
  let local: Buffer | null;
  try {
    local = localHash(seq);
  } catch (err) {
    return `cannot compare ${name}'s copy with the local vault: ${(err as Error).message}`;
  }
  if (local === null) {
    return (
      `${name} holds records up to ${seq}, but the local vault at ${vaultDir} no longer holds record ${seq} to compare it with, ` +
      'so the server copy cannot be continued: delete that vault on the server (or use another server) and add it again'
    );
  }
  if (!local.equals(state.lastHash)) {
    return (
      `${name} holds a different record ${seq} than this node (its hash differs): the server's copy diverged from this node's vault ` +
      'and must not be used; nothing was sent to it. Remove it from the destinations, or delete that vault on the server and add the server again'
    );
  }
  return null;
}

/** The server is ahead, and its retention removed the records that would join its copy to this vault. */
export function prunedPastMessage(name: string, newest: bigint, state: VaultState): string {
  return (
    `${name} holds records ${state.firstSeq} to ${state.lastSeq}, and this node's vault ends at ${newest}: the server's retention ` +
    `removed the records between them, so its newer records cannot be proven against this vault and adopted. The local vault (and ` +
    `perhaps the database) was put back from an older copy. If lightningd's database is older than the server's copy, do not run it: ` +
    `lnbackup restore --from ${name} gives the newest state. It is not used in this run`
  );
}

/** The server is ahead of a running node (not at start): another writer, or not this node's history. */
export function aheadMessage(name: string, serverLast: bigint, newest: bigint): string {
  return (
    `${name} holds records up to ${serverLast}, beyond this node's newest record ${newest}: another node writes to this vault ` +
    `with the same key, or the server's copy is not this node's history. It is not used in this run; restart lightningd so that ` +
    `lnbackup proves and adopts its records, or remove it from the destinations`
  );
}
