// What the server keeps, whatever holds it: vaults (owned by one client key, with the node's
// identity file as opaque bytes) and their sealed records, appended in sequence and read back in
// order. The server cannot open a record; it only checks sequence numbers and sizes. An append
// resolves only once its records are durable (fsync'ed files, or a committed PostgreSQL
// transaction); appends from all clients share one commit per round (group commit).

/** A sealed record exactly as the node made it, with the two numbers the server may see. */
export interface StoreRecord {
  readonly seq: bigint;
  readonly generation: number;
  /** Header and sealed body (docs/FORMAT.md), never altered. */
  readonly bytes: Buffer;
}

export interface StoredVault {
  /** 32 lowercase hex digits. */
  readonly vaultId: string;
  /** The owning client's public key (66 lowercase hex digits). */
  readonly owner: string;
  /** The node's VAULT.json, as the node sent it. */
  readonly identity: Buffer;
  /** Sequence number of the oldest record held (0n when none). */
  readonly firstSeq: bigint;
  /** Sequence number of the newest record held (0n when none). */
  readonly lastSeq: bigint;
  /** SHA-256 of the newest record's bytes (null when none). */
  readonly lastHash: Buffer | null;
  readonly lastGeneration: number;
  /** Bytes of records held. */
  readonly bytes: number;
  /** Bytes of page packs held (the client's quota counts both). */
  readonly packBytes: number;
  /** When the last record was appended (ms since the epoch), null when never. */
  readonly lastWriteAt: number | null;
}

/** The storage is not usable right now (disk full, database down); nothing was acknowledged. */
export class StorageUnavailableError extends Error {}

/** A pack of that name is held with other bytes (packs never change); nothing was stored. */
export class PackConflictError extends Error {
  override name = 'PackConflictError';
}

/** A page pack as listed. */
export interface StoredPack {
  /** p-<32 hex>.pack (src/vault/packFiles.ts). */
  readonly name: string;
  readonly bytes: number;
}

/** A piece of a pack. */
export interface PackPiece {
  /** The whole pack's size. */
  readonly totalBytes: number;
  readonly bytes: Buffer;
}

/** An owner's share of the store. */
export interface StoreUsage {
  /** Bytes of records and page packs, over all its vaults. */
  readonly bytes: number;
  readonly vaults: number;
}

/** What a prune did: the vault afterwards, and the bytes of records it removed. */
export type PrunedVault = StoredVault & { readonly removedBytes: number };

export interface ServerStore {
  /** 'files' (embedded, under --data) or 'postgres'. */
  readonly kind: string;
  /** Where it stores, for status output (never a password). */
  readonly location: string;
  getVault(vaultId: string): Promise<StoredVault | null>;
  /** Creates an empty vault owned by `owner`; the caller has checked it does not exist. */
  createVault(owner: string, vaultId: string, identity: Buffer): Promise<StoredVault>;
  /** Every vault, or one owner's. */
  listVaults(owner?: string): Promise<StoredVault[]>;
  /**
   * What one owner holds now, from the store's own figures (records and packs as durably stored;
   * rebuilt from the storage at open): what its quota is charged with.
   */
  usage(owner: string): StoreUsage;
  /**
   * Appends records that continue the vault's sequence (the first is lastSeq + 1, then +1 each):
   * resolves once they are durable, rejects (StorageUnavailableError) if they could not be made so.
   * Callers may call again before an earlier append resolved; order is kept per vault.
   */
  append(vaultId: string, records: readonly StoreRecord[]): Promise<void>;
  /** Records from `fromSeq` on, in order, up to about `maxBytes` (at least one record if any). */
  readRecords(vaultId: string, fromSeq: bigint, maxBytes: number): Promise<StoreRecord[]>;
  /**
   * Stores an immutable page pack (opaque bytes) durably. Resolves true when it was stored, false
   * when the vault already held it with the same bytes; rejects with PackConflictError when it holds
   * it with other bytes, StorageUnavailableError when the storage failed (nothing, or the whole
   * pack, is stored: never a part).
   */
  putPack(vaultId: string, name: string, bytes: Buffer): Promise<boolean>;
  /** The vault's packs, by name. */
  listPacks(vaultId: string): Promise<StoredPack[]>;
  /** Up to `maxBytes` of a pack from `offset` (none past its end); null when the vault does not hold it. */
  readPack(vaultId: string, name: string, offset: number, maxBytes: number): Promise<PackPiece | null>;
  /** Removes the packs named (absent ones are ignored); resolves with the bytes freed. */
  deletePacks(vaultId: string, names: readonly string[]): Promise<number>;
  /**
   * Removes every record of the generations below `keepFromGeneration`, never the newest
   * generation (the limit is clamped to it); firstSeq becomes the first kept record's. Ordered with
   * the vault's appends (it runs between two group-commit rounds). Idempotent.
   */
  prune(vaultId: string, keepFromGeneration: number): Promise<PrunedVault>;
  /** Finishes pending appends, then releases files and connections. */
  close(): Promise<void>;
}
