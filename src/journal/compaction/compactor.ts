// The compaction driver for a running node: it makes the transitions that happen between calls
// (transitions.ts holds the state and all of them). After each call it checks how much the current
// generation has grown; past the threshold (a share of the database's size) it requests a
// compaction, which the journal stages at the next call; it builds the paged snapshot in short
// slices between calls (so no hook waits long; new packs are written on the thread pool), stores
// the new packs at every destination, and offers the snapshot, which the journal switches to at the
// next call. Once the new generation is durable at every destination, generations beyond retention
// and the packs no kept generation uses are removed: locally and at each destination. Retention
// never runs while a generation started (by a switch or by a snapshot taken inside a call) is not
// yet durable everywhere, whatever else ends meanwhile (a build given up, a build that failed):
// until then the older generations are the only copy some destination (or, with deferSync, the
// disk itself) is sure to hold.
import type { Log } from '../../util/log.js';
import type { Journal, StoredOutcome } from '../journal.js';
import { PagedSnapshotBuilder, type StagedDatabase } from '../pagedSnapshot.js';
import { firstKept, livePacks, livePages, type GenerationPages, type RetentionSettings } from '../retention.js';
import type { CompactionState } from './transitions.js';

/** How long one slice of snapshot building may hold the event loop. */
const SLICE_MS = 4;
/** A pack with less than this share of its pages in use has them stored again by the next snapshot. */
const SPARSE_SHARE = 0.75;

const round2 = (ms: number): number => Math.round(ms * 100) / 100;

/** What compaction needs of a destination other than the journal's own vault (destinations/destination.ts). */
export interface PackHolder {
  readonly name: string;
  storePack(name: string, bytes: Buffer): Promise<void>;
  prune(keepFromGeneration: number, deadPacks: readonly string[]): Promise<void>;
}

/** How each state shows in status (the names operators have seen since the start). */
const SHOWN_AS: Record<CompactionState['name'], CompactionStatus['state']> = {
  idle: 'idle',
  'given-up': 'idle',
  wanted: 'staging',
  staged: 'staging',
  building: 'building',
  ready: 'ready',
  settling: 'pruning',
};

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
  private compactions = 0;
  private last: CompactionStatus['lastCompaction'] = null;
  private lastError: string | null = null;
  private buildMs = 0;
  private longestStepMs = 0;
  private longestOtherMs = 0;
  private closed = false;
  /** A build is under way (possibly given up by the journal but not yet at its next slice): no new compaction meanwhile. */
  private building = false;
  private gens: GenerationPages[];
  private readonly retentionPaused: boolean;
  /** The newest generation started that is not yet durable at every destination: retention waits for it. */
  private unsettled: number | null = null;

  constructor(
    private readonly journal: Journal,
    /** Every destination but the journal's own vault. */
    private readonly destinations: () => readonly PackHolder[],
    private readonly settings: RetentionSettings,
    /** The vault's generations and the pages each uses (kept current here); null: unknown (damage), so nothing is removed. */
    gens: GenerationPages[] | null,
    private readonly log: Log,
  ) {
    this.retentionPaused = gens === null;
    this.gens = gens ?? [];
    journal.compaction.onNotice = (m) => {
      this.lastError = m;
      log('info', m);
    };
    this.prune(); // packs a crash left unused (a snapshot built but never switched to) go at once
  }

  /**
   * Called after every stored call, with the time Journal.record took and a way to wait until the
   * call is durable everywhere (only asked for when the call started a generation).
   */
  afterCall(outcome: StoredOutcome, recordMs: number, everywhere: () => Promise<void>): void {
    const compaction = this.journal.compaction;
    const step = outcome.compacted !== null || compaction.state.name === 'staged';
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
      compaction.generationStarted();
      this.unsettled = started.generation;
      everywhere().then(
        () => this.settle(started.generation),
        (err: unknown) => this.notSettled(started.generation, err as Error),
      );
      return;
    }
    const now = compaction.state.name;
    if (now === 'idle' && !this.building && this.due()) compaction.request();
    else if (now === 'staged') void this.build(compaction.beginBuild());
    else if (now === 'given-up') compaction.givenUpSeen();
  }

  status(): CompactionStatus {
    const kept = this.gens.filter((g) => g.complete).length;
    return {
      state: SHOWN_AS[this.journal.compaction.state.name],
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
    const compaction = this.journal.compaction;
    if (!compaction.active && !this.building) return;
    compaction.onNotice = () => undefined;
    compaction.abandon('lnbackup is stopping');
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
    this.building = true;
    try {
      let snapshot = null;
      while (snapshot === null) {
        if (this.closed || this.journal.compaction.staged !== staged) return this.givenUp();
        snapshot = builder.step(SLICE_MS);
        await builder.written(); // a pack write under way (off the event loop)
        if (snapshot === null) await new Promise((resolve) => setImmediate(resolve));
      }
      this.buildMs = performance.now() - startedAt;
      await this.journal.protectPacks(snapshot.packs);
      const stores = this.destinations().flatMap((d) => snapshot.packs.map((p) => d.storePack(p.name, p.bytes)));
      await Promise.all(stores);
      if (this.closed || this.journal.compaction.staged !== staged) return this.givenUp();
      this.journal.compaction.offer(snapshot);
    } catch (err) {
      this.journal.compaction.abandon((err as Error).message);
      this.fail(`compaction failed: ${(err as Error).message}`);
      this.givenUp();
    } finally {
      this.building = false;
      builder.close();
    }
  }

  /** Generation `generation` is durable at every destination: settled, unless a newer one started since. */
  private settle(generation: number): void {
    if (this.unsettled !== generation) return; // the newer generation's own durability settles it
    this.unsettled = null;
    this.journal.compaction.settled();
    this.prune();
  }

  /**
   * Generation `generation` could not be made durable everywhere: compaction may try again, but
   * retention stays held until a newer generation is durable everywhere.
   */
  private notSettled(generation: number, err: Error): void {
    this.fail(`the new generation ${generation} is not durable everywhere (${err.message}); old generations stay`);
    if (this.unsettled === generation) this.journal.compaction.settled();
  }

  /** Retention, unless a generation started is not yet durable everywhere (or it is paused, or the plugin stops). */
  private prune(): void {
    if (this.closed || this.retentionPaused || this.unsettled !== null) return;
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
  }

  /**
   * A build ended without a snapshot to offer: a compaction the journal gave up becomes idle (one
   * settling stays so), and the packs the build wrote, which nothing uses, go at once (or at
   * the retention that follows the settling).
   */
  private givenUp(): void {
    this.journal.compaction.givenUpSeen();
    this.prune();
  }

  private fail(message: string): void {
    this.lastError = message;
    this.log('unusual', message);
  }
}
