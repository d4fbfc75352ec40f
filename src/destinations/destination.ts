// A destination is a place a node's records must be durable before lightningd may commit: the
// local vault, an lnbackup server, a live sqlite replica. The node hands every destination each
// db_write call's records in chain order; the durability policy (policy.ts) decides how many must
// have them before `continue`.
import type { SealedRecord } from '../vault/sealer.js';
import type { StoredOutcome } from '../journal/journal.js';

/** A page pack a call's records refer to (a paged snapshot taken inside the call). */
export interface PackToStore {
  readonly name: string;
  readonly bytes: Buffer;
}

/** One db_write call as the destinations see it. */
export interface StoredCall {
  readonly dataVersion: number;
  readonly writes: readonly string[];
  /** The records this call added to the chain, in order: a new generation's snapshot records (if one was taken), then the Writes record. */
  readonly records: readonly SealedRecord[];
  /** True when this call started a new generation (a snapshot is among its records). */
  readonly snapshot: boolean;
  /** The seq of the record this call's Writes record supersedes (a rewound, never-committed call), or 0n. */
  readonly supersedes: bigint;
  /** Page packs the records refer to, which a destination must hold before the call counts as durable there. */
  readonly packs: readonly PackToStore[];
}

/** A call the journal stored, as every destination gets it. */
export function storedCall(dataVersion: number, writes: readonly string[], outcome: StoredOutcome): StoredCall {
  return {
    dataVersion,
    writes,
    records: outcome.records,
    snapshot: outcome.snapshot !== null || outcome.compacted !== null,
    supersedes: outcome.supersedes,
    packs: outcome.packs,
  };
}

export type DestinationKind = 'vault' | 'server' | 'replica';

export type DestinationState =
  /** Durable up to the newest record. */
  | 'ok'
  /** Behind, and working to catch up. */
  | 'catching-up'
  /** Cannot reach or write the destination right now; retrying. */
  | 'stalled'
  /** Can never take records again in this run (see lastError). */
  | 'failed';

export interface DestinationStatus {
  readonly name: string;
  readonly kind: DestinationKind;
  readonly state: DestinationState;
  /** Highest seq durable there (as a decimal string, for JSON). */
  readonly durableSeq: string;
  /** Records handed to it that are not durable there yet. */
  readonly lagRecords: number;
  readonly lastError: string | null;
  /** When it last confirmed a record (ISO time), null when never in this run. */
  readonly lastDurableAt: string | null;
}

export interface Destination {
  readonly name: string;
  readonly kind: DestinationKind;
  /**
   * Takes a call's records, and the page packs they refer to (`call.packs`), which a destination
   * that keeps packs must hold before any of those records; resolves when the records are durable
   * there. Called in chain order, the next call possibly before the previous one resolved. Rejects only with DestinationFailedError, when
   * the destination can never take them (it keeps retrying transient failures itself).
   */
  store(call: StoredCall): Promise<void>;
  /**
   * Takes an immutable page pack (a paged snapshot's pages, journal/pagePack.ts); resolves once it
   * is durable there. A compaction hands its packs over this way ahead of the records that refer to
   * them (which store() gets later, with the same packs in `call.packs`).
   * Rejects only with DestinationFailedError (transient failures are retried inside).
   */
  storePack(name: string, bytes: Buffer): Promise<void>;
  /**
   * Retention: removes the generations below `keepFromGeneration` and the packs named. The node
   * calls it only once its newest generation is durable at every destination.
   */
  prune(keepFromGeneration: number, deadPacks: readonly string[]): Promise<void>;
  status(): DestinationStatus;
  /** Stops; waits at most `graceMs` for records in flight to become durable. */
  close(graceMs: number): Promise<void>;
}

/** The destination cannot take records any more in this run; the message says why and what to do. */
export class DestinationFailedError extends Error {
  constructor(
    readonly destination: string,
    message: string,
  ) {
    super(message);
  }
}
