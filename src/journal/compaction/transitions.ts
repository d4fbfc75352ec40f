// Compaction's one state and every transition it makes, read top to bottom (docs/FORMAT.md,
// "Compaction"). A compaction replaces a generation that has grown long with a new one that starts
// from a paged snapshot, without any hook waiting long:
//
//   idle ──request──▶ wanted ──(a call: stage the database)──▶ staged ──build begins──▶ building
//     ▲                                                                                    │ offer
//     │                                                                                    ▼
//     └── settled ◀── settling ◀──(the driver sees the new generation)◀──(a call: switch)── ready
//
//   A call ends a compaction in given-up: after the switch (the driver then sees the new
//   generation and makes it settling), or when the compaction cannot go on (the stage failed, the
//   carried calls overflow or do not follow the snapshot, a snapshot had to be taken in the call):
//   then idle once the driver has seen the call (so it asks again at the next call, not the same).
//   Only settled() leaves settling, and only once the new generation is durable everywhere: a build
//   given up meanwhile (a snapshot taken inside a call started that generation) leaves it settling.
//
// - wanted → staged happens inside a call, while lightningd holds its transaction open, so the
//   database file is at rest at the version before it (the staged copy is that version).
// - From staged on, every call stored is also kept here (carried): the switch writes the new
//   generation's snapshot records and then every carried call again, each decided anew by the
//   supersede rule, so the new generation holds everything after its snapshot. The carried calls,
//   and then the call itself, are tried on a copy of the rule first: nothing is appended unless all
//   of them follow. So a switch happens only in a call that is then stored, and its records go to
//   every destination with the call's, in chain order; a call that would be refused or left
//   unprotected leaves the compaction ready (the next call tries again).
// - A crash in the middle of the switch leaves a generation cut short (its snapshot ended, not all
//   carried calls written): the generation before it still holds those calls, and Journal.open,
//   restore and retention treat the cut-short one as incomplete (retention.ts, cutShort).
// - settling: a new generation started (by a switch, or a snapshot taken inside a call); retention
//   waits until it is durable at every destination, then the state is idle again.
// - abandon (the driver: a build failed, the plugin stops) or give up (the journal, inside a call):
//   the staging copy goes; the packs the build wrote are unused and go at the next retention.
// The driver (compactor.ts) decides when to request, builds between calls and runs retention; the
// journal makes the call-time transitions (atCall, carry) while it records a call.
import { bumpedFrom } from '../dataVersion.js';
import { clearStaging, snapshotRecords, stageDatabase, type PagedSnapshot, type SnapshotTaken, type StagedDatabase } from '../pagedSnapshot.js';
import type { SupersedeRule } from '../supersede.js';
import type { SealedRecord } from '../../vault/sealer.js';
import type { EpochMs } from '../../util/clock.js';

/** A call as the journal seals it (kept while a compaction is under way, to write again after the switch). */
export interface SavedCall {
  readonly dataVersion: number;
  readonly writes: readonly string[];
  /** When lightningd's call was recorded. */
  readonly at: EpochMs;
}

/** The staged database a compaction builds from and every call stored since it was staged. */
export interface Staging {
  readonly staged: StagedDatabase;
  readonly calls: SavedCall[];
  bytes: number;
}

export type CompactionState =
  | { readonly name: 'idle' }
  /** Stage the database at the next call. */
  | { readonly name: 'wanted' }
  /** Staged by the call just recorded; the build has not begun. */
  | { readonly name: 'staged'; readonly staging: Staging }
  | { readonly name: 'building'; readonly staging: Staging }
  /** Built, its packs durable everywhere: the next call switches to it. */
  | { readonly name: 'ready'; readonly staging: Staging; readonly snapshot: PagedSnapshot }
  /** A new generation started; the old ones go once it is durable at every destination. */
  | { readonly name: 'settling' }
  /** The compaction ended inside the call just recorded; idle once the driver has seen that call. */
  | { readonly name: 'given-up' };

/** Most bytes of calls a compaction carries over from staging to its switch; beyond, it starts over. */
export const MAX_CARRIED_BYTES = 32 * 1024 * 1024;

/** What the switch needs of the journal: where the chain ends, and appending to it. */
export interface CompactingChain {
  readonly vaultDir: string;
  readonly dbPath: string;
  /** The supersede rule as the chain stands now. */
  rule(): SupersedeRule;
  /** The seq of the chain's last record. */
  lastSeq(): bigint;
  appendSnapshot(snapshot: PagedSnapshot): Switched;
  appendCall(call: SavedCall, supersedes: bigint): SealedRecord;
}

/** A new generation as written: what it is, and every record appended for it (its snapshot; after a switch, the carried calls too). */
export interface Switched {
  readonly taken: SnapshotTaken;
  readonly records: readonly SealedRecord[];
}

export class Compaction {
  private current: CompactionState = { name: 'idle' };
  /** Told why a compaction was given up (or could not stage). */
  onNotice: (message: string) => void = () => undefined;

  constructor(private readonly chain: CompactingChain) {}

  get state(): CompactionState {
    return this.current;
  }

  /** A compaction holds (or waits for) a staged database: wanted, staged, building or ready. */
  get active(): boolean {
    const n = this.current.name;
    return n === 'wanted' || n === 'staged' || n === 'building' || n === 'ready';
  }

  /** The staged database a compaction builds from, once a call has staged it. */
  get staged(): StagedDatabase | null {
    return 'staging' in this.current ? this.current.staging.staged : null;
  }

  // --- transitions the driver makes (between calls) ---

  /** idle → wanted: the next call stages the database. */
  request(): void {
    if (this.current.name !== 'idle') throw new Error(`a compaction is requested while one is ${this.current.name}`);
    this.current = { name: 'wanted' };
  }

  /** staged → building: returns what to build from. */
  beginBuild(): StagedDatabase {
    if (this.current.name !== 'staged') throw new Error(`a build begins while the compaction is ${this.current.name}`);
    this.current = { name: 'building', staging: this.current.staging };
    return this.current.staging.staged;
  }

  /** building → ready: hands over a built snapshot (its packs durable everywhere). */
  offer(snapshot: PagedSnapshot): void {
    const s = this.current;
    if ((s.name !== 'building' && s.name !== 'staged') || s.staging.staged !== snapshot.staged)
      throw new Error('the snapshot offered is not of the staged database');
    this.current = { name: 'ready', staging: s.staging, snapshot };
  }

  /** → settling: a new generation started; retention waits for it to be durable everywhere. */
  generationStarted(): void {
    this.current = { name: 'settling' };
  }

  /**
   * settling → idle: the new generation is durable at every destination (or cannot be made so; the
   * driver then keeps the old generations). In any other state nothing changes.
   */
  settled(): void {
    if (this.current.name === 'settling') this.current = { name: 'idle' };
  }

  /** given-up → idle: the driver has seen the call (or the build) that ended the compaction. In any other state nothing changes. */
  givenUpSeen(): void {
    if (this.current.name === 'given-up') this.current = { name: 'idle' };
  }

  /** The driver gives up the compaction in progress → idle (its packs, unused, go at the next retention). */
  abandon(why: string): void {
    if (!this.active) return;
    this.current = { name: 'idle' };
    clearStaging(this.chain.vaultDir);
    this.onNotice(`compaction given up: ${why}`);
  }

  /** The journal, inside a call, gives up the compaction in progress → given-up. */
  giveUp(why: string): void {
    if (!this.active) return;
    this.current = { name: 'given-up' };
    clearStaging(this.chain.vaultDir);
    this.onNotice(`compaction given up: ${why}`);
  }

  /** → idle without a word (the journal closes; a staged copy left is cleared at the next open). */
  drop(): void {
    this.current = { name: 'idle' };
  }

  // --- transitions the journal makes (inside a call, before and after it records the call) ---

  /**
   * At the start of a call: ready → (the switch) → given-up, returning the new generation (the
   * driver then makes it settling), or null: the carried calls do not follow the snapshot (given
   * up), or the call itself would not be appended after them (still ready: no switch in a call that
   * is refused or left unprotected, whose records no destination would get);
   * wanted → staged unless a snapshot is pending
   * inside the calls (the stage is retried at a later call if the file cannot be copied now).
   */
  atCall(snapshotPending: boolean, call: Pick<SavedCall, 'dataVersion' | 'writes'>): Switched | null {
    const s = this.current;
    if (s.name === 'ready') return this.switchGeneration(s.staging, s.snapshot, call);
    if (s.name === 'wanted' && !snapshotPending) this.stage();
    return null;
  }

  /** After a call was appended: a compaction that has staged carries it to its switch. */
  carry(call: SavedCall): void {
    if (!('staging' in this.current)) return;
    const staging = this.current.staging;
    staging.calls.push(call);
    for (const w of call.writes) staging.bytes += w.length;
    if (staging.bytes > MAX_CARRIED_BYTES) this.giveUp(`more than ${MAX_CARRIED_BYTES} bytes of calls came in while the snapshot was built`);
  }

  private stage(): void {
    try {
      this.current = { name: 'staged', staging: { staged: stageDatabase(this.chain.dbPath, this.chain.vaultDir), calls: [], bytes: 0 } };
    } catch (err) {
      // Busy (lightningd's cache spilled into the file) or unreadable: the driver asks again later.
      this.current = { name: 'given-up' };
      this.onNotice(`could not stage the database for compaction (${(err as Error).message}); will try again`);
    }
  }

  /**
   * Switches to the prepared generation: its snapshot, then every call stored since staging, each
   * decided again from the snapshot (tried on a copy of the rule first, with the call under way
   * last, so nothing is appended unless all of them follow and the call is then stored).
   */
  private switchGeneration(staging: Staging, snapshot: PagedSnapshot, call: Pick<SavedCall, 'dataVersion' | 'writes'>): Switched | null {
    const rule = this.chain.rule();
    const trial = rule.clone();
    const generation = rule.generation + 1;
    let seq = this.chain.lastSeq() + BigInt(snapshotRecords(snapshot, generation).length);
    trial.snapshotWritten(generation, snapshot.staged.dataVersion, seq, snapshot.staged.takenAt);
    const supersedes: bigint[] = [];
    for (const carried of staging.calls) {
      const decision = trial.decide(carried.dataVersion, carried.writes);
      if (decision.kind !== 'append') {
        this.current = { name: 'given-up' };
        clearStaging(this.chain.vaultDir);
        this.onNotice(`compaction given up: the calls since the snapshot at version ${snapshot.staged.dataVersion} do not follow it (${decision.reason})`);
        return null;
      }
      seq += 1n;
      trial.appended(seq, carried.dataVersion, bumpedFrom(carried.writes) !== null, decision.supersedes);
      supersedes.push(decision.supersedes);
    }
    // The call under way is decided on the switched chain exactly as the journal decides it next.
    if (trial.decide(call.dataVersion, call.writes).kind !== 'append') return null;
    this.current = { name: 'given-up' }; // settling once the driver sees the new generation
    clearStaging(this.chain.vaultDir);
    const { taken, records } = this.chain.appendSnapshot(snapshot);
    return { taken, records: [...records, ...staging.calls.map((carried, i) => this.chain.appendCall(carried, supersedes[i]))] };
  }
}
