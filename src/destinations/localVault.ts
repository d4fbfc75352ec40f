// The local vault as a destination. With only local destinations the journal fdatasyncs inline
// (the fastest path); with servers configured the flush runs off the thread (syncAsync) while the
// records travel, and this destination resolves when it is done. A failed flush fails the local
// vault for this run: after a failed fdatasync the kernel may have dropped the dirty pages, so
// retrying could report success for data that is gone (the "fsyncgate" lesson).
import type { Journal } from '../journal/journal.js';
import { DestinationFailedError, type Destination, type DestinationState, type DestinationStatus, type StoredCall } from './destination.js';

export class LocalVaultDestination implements Destination {
  readonly kind = 'vault' as const;
  private durableSeq = 0n;
  private handedSeq = 0n;
  private failure: string | null = null;
  private lastDurableAt: number | null = null;

  constructor(
    readonly name: string,
    private readonly journal: Journal,
    /** True when record() already made the records durable (no deferred sync). */
    private readonly syncedInline: boolean,
  ) {
    this.durableSeq = journal.chainTail.lastSeq;
    this.handedSeq = this.durableSeq;
  }

  store(call: StoredCall): Promise<void> {
    const last = call.records[call.records.length - 1]?.seq ?? this.handedSeq;
    this.handedSeq = last;
    if (this.failure !== null) return Promise.reject(new DestinationFailedError(this.name, this.failure));
    if (this.syncedInline) {
      this.confirm(last);
      return Promise.resolve();
    }
    return this.journal.syncAsync().then(
      () => this.confirm(last),
      (err: unknown) => {
        this.failure = `fdatasync of the local vault failed (${(err as Error).message}); the local vault takes no more records in this run: check the disk, then restart lightningd`;
        throw new DestinationFailedError(this.name, this.failure);
      },
    );
  }

  storePack(): Promise<void> {
    // The journal writes the pack into this very vault (pages/) before it hands over any record.
    return Promise.resolve();
  }

  prune(): Promise<void> {
    // The journal prunes its own vault (generations and packs) itself.
    return Promise.resolve();
  }

  private confirm(seq: bigint): void {
    if (seq > this.durableSeq) this.durableSeq = seq;
    this.lastDurableAt = Date.now();
  }

  status(): DestinationStatus {
    const state: DestinationState = this.failure !== null ? 'failed' : this.durableSeq < this.handedSeq ? 'catching-up' : 'ok';
    return {
      name: this.name,
      kind: this.kind,
      state,
      durableSeq: this.durableSeq.toString(),
      lagRecords: Number(this.handedSeq - this.durableSeq),
      lastError: this.failure,
      lastDurableAt: this.lastDurableAt === null ? null : new Date(this.lastDurableAt).toISOString(),
    };
  }

  async close(): Promise<void> {
    // The journal owns the vault and flushes it when it closes.
  }
}
