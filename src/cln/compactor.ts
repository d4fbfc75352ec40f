// Automatic compaction and retention for a running node. After each call it checks how much the
// current generation has grown; past the threshold (a share of the database's size) it has the
// journal stage the database at the next call, builds the paged snapshot in short slices between
// calls (so no hook waits long; new packs are written on the thread pool), stores the new packs at
// every destination, and lets the journal switch at the next call. Once the new generation is
// durable at every destination, generations beyond retention and the packs no kept generation uses
// are removed: locally and at each destination.
import type { Destination } from '../destinations/destination.js';
import type { Journal, WriteOutcome } from '../journal/journal.js';
import { PagedSnapshotBuilder, type StagedDatabase } from '../journal/pagedSnapshot.js';
import { firstKept, livePacks, livePages, type GenerationPages } from '../journal/retention.js';
import type { RetentionSettings } from './config.js';
import type { NodeLog } from './nodeBackup.js';

/** How long one slice of snapshot building may hold the event loop. */
const SLICE_MS = 4;
/** A pack with less than this share of its pages in use has them stored again by the next snapshot. */
const SPARSE_SHARE = 0.75;

const round2 = (ms: number): number => Math.round(ms * 100) / 100;

type Stored = Extract<WriteOutcome, { kind: 'stored' }>;

export interface CompactionStatus {
  readonly state: 'idle' | 'staging' | 'building' | 'ready' | 'pruning';
  readonly compactions: number;
  readonly generationsKept: number;
  readonly lastCompaction: {
    readonly generation: number;
    readonly at: string;
    readonly pages: number;
    readonly newPages: number;
    readonly packBytes: number;
    readonly buildMs: number;
  } | null;
  readonly lastError: string | null;
  /**
   * The longest Journal.record (ms: seal, write, fdatasync, and the compaction step it carried)
   * among the calls that staged the database or switched generations, and among all the others.
   */
  readonly longestRecordMs: { readonly withCompactionStep: number; readonly others: number };
}

export class Compactor {
  private state: CompactionStatus['state'] = 'idle';
  private compactions = 0;
  private last: CompactionStatus['lastCompaction'] = null;
  private lastError: string | null = null;
  private buildMs = 0;
  private longestStepMs = 0;
  private longestOtherMs = 0;
  private closed = false;
  private gens: GenerationPages[];
  private readonly retentionPaused: boolean;

  constructor(
    private readonly journal: Journal,
    /** Every destination but the journal's own vault. */
    private readonly destinations: () => readonly Destination[],
    private readonly settings: RetentionSettings,
    /** The vault's generations and the pages each uses (kept current here); null: unknown (damage), so nothing is removed. */
    gens: GenerationPages[] | null,
    private readonly log: NodeLog,
  ) {
    this.retentionPaused = gens === null;
    this.gens = gens ?? [];
    journal.onCompactionNotice = (m) => {
      this.lastError = m;
      log('info', m);
    };
    this.prune(); // packs a crash left unused (a snapshot built but never switched to) go at once
  }

  /**
   * Called after every stored call, with the time Journal.record took and a way to wait until the
   * call is durable everywhere (only asked for when the call started a generation).
   */
  afterCall(outcome: Stored, recordMs: number, everywhere: () => Promise<void>): void {
    const step = outcome.compacted !== null || (this.state === 'staging' && this.journal.staged !== null);
    if (step) this.longestStepMs = Math.max(this.longestStepMs, recordMs);
    else this.longestOtherMs = Math.max(this.longestOtherMs, recordMs);
    const started = outcome.compacted ?? outcome.snapshot;
    if (started) {
      this.gens.push({
        generation: started.generation,
        takenAt: started.takenAt,
        complete: true,
        pages: new Set(started.addresses.map((a) => a.toString('hex'))),
        packs: new Set(started.packNames),
      });
      if (outcome.compacted) {
        this.compactions++;
        this.last = {
          generation: started.generation,
          at: new Date().toISOString(),
          pages: started.addresses.length,
          newPages: started.addresses.length - started.reusedPages,
          packBytes: started.packBytes,
          buildMs: Math.round(this.buildMs),
        };
      }
      this.state = 'pruning';
      everywhere().then(
        () => this.prune(),
        (err: unknown) => this.fail(`the new generation ${started.generation} is not durable everywhere (${(err as Error).message}); old generations stay`),
      );
      return;
    }
    if (this.state === 'idle' && this.due()) {
      this.journal.requestCompaction();
      this.state = 'staging';
    } else if (this.state === 'staging' && this.journal.staged) {
      this.state = 'building';
      void this.build(this.journal.staged);
    } else if ((this.state === 'staging' || this.state === 'ready') && !this.journal.compacting) {
      this.state = 'idle';
    }
  }

  status(): CompactionStatus {
    const kept = this.gens.filter((g) => g.complete).length;
    return {
      state: this.state,
      compactions: this.compactions,
      generationsKept: kept,
      lastCompaction: this.last,
      lastError: this.lastError,
      longestRecordMs: { withCompactionStep: round2(this.longestStepMs), others: round2(this.longestOtherMs) },
    };
  }

  /**
   * The plugin stops. A compaction under way is given up at once: its staged copy of the database
   * and the packs it wrote (no record names them) are removed, so a clean stop leaves nothing
   * behind (a crash leaves them to the next start, which removes them).
   */
  close(): void {
    this.closed = true;
    if (this.state !== 'staging' && this.state !== 'building' && this.state !== 'ready') return;
    this.journal.onCompactionNotice = () => undefined;
    this.journal.abandonCompaction('lnbackup is stopping');
    if (this.retentionPaused) return;
    try {
      this.journal.removePacks(this.unusedPacks(0));
    } catch (err) {
      this.log('unusual', `the packs of the compaction given up at stop were not removed (${(err as Error).message}); the next start removes them`);
    }
  }

  /** The vault's packs that no generation from `keep` on uses. */
  private unusedPacks(keep: number): string[] {
    const live = livePacks(this.gens, keep);
    return this.journal.pages.packNames.filter((name) => !live.has(name));
  }

  private due(): boolean {
    const g = this.journal.growth;
    return g.callBytes > Math.max(this.settings.compactMinBytes, this.settings.compactRatio * g.dbBytes);
  }

  private async build(staged: StagedDatabase): Promise<void> {
    const startedAt = performance.now();
    const sparse = this.journal.pages.sparsePacks(livePages(this.gens, 0), SPARSE_SHARE);
    const builder = new PagedSnapshotBuilder(staged, this.journal.pages, this.journal.pageKey, sparse, true);
    try {
      let snapshot = null;
      while (snapshot === null) {
        if (this.closed || this.journal.staged !== staged) return this.idle();
        snapshot = builder.step(SLICE_MS);
        await builder.written(); // a pack write under way (off the event loop)
        if (snapshot === null) await new Promise((resolve) => setImmediate(resolve));
      }
      this.buildMs = performance.now() - startedAt;
      await this.journal.protectPacks(snapshot.packs);
      const stores = this.destinations().flatMap((d) => snapshot.packs.map((p) => d.storePack(p.name, p.bytes)));
      await Promise.all(stores);
      if (this.closed || this.journal.staged !== staged) return this.idle();
      this.journal.offer(snapshot);
      this.state = 'ready';
    } catch (err) {
      this.journal.abandonCompaction((err as Error).message);
      this.fail(`compaction failed: ${(err as Error).message}`);
      this.prune();
    } finally {
      builder.close();
    }
  }

  private prune(): void {
    this.state = 'idle';
    if (this.closed || this.retentionPaused) return;
    try {
      const keep = firstKept(this.gens, this.settings);
      const dead = this.unusedPacks(keep);
      const result = this.journal.prune(keep, dead);
      this.gens = this.gens.filter((g) => g.generation >= keep);
      if (result.removedSegments > 0 || dead.length > 0) {
        this.log('debug', `retention: removed generations below ${keep} (${result.removedBytes} bytes) and ${dead.length} unused page pack(s)`);
      }
      for (const d of this.destinations()) {
        d.prune(keep, dead).catch((err: unknown) => this.log('unusual', `retention at ${d.name} failed: ${(err as Error).message}`));
      }
    } catch (err) {
      this.lastError = `retention failed: ${(err as Error).message}`;
      this.log('unusual', this.lastError);
    }
    this.state = 'idle';
  }

  /** Back to idle after a compaction was given up; the packs it wrote, which nothing uses, go now. */
  private idle(): void {
    this.state = 'idle';
    this.prune();
  }

  private fail(message: string): void {
    this.lastError = message;
    this.log('unusual', message);
    this.state = 'idle';
  }
}
