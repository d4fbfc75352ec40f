// The provider's rules (BOLT #1 "Peer Storage", receiver side) as a pure module: which peers'
// blobs we hold, what we hand back, and when a blob is committed, with the clock, the timers and
// the commit (a datastore write in the plugin) injected.
// - Slots: a blob is stored only for a peer that has a slot, made when it has (or had) a channel
//   with us, as Core Lightning's chanbackup does (it creates the slot at CHANNELD_NORMAL). At most
//   `maxPeers` slots; a blob is at most 65531 bytes (BOLT #1).
// - Replace: a new blob replaces the old one ("MUST replace the old blob with the latest received").
// - Cooldown, not a ticker: the first update from a peer is committed at once; any update within
//   `cooldownMs` of the last commit only replaces the newest blob in memory, which is committed
//   when the cooldown ends, and on stop(). A peer flooding updates causes at most one commit per
//   cooldown ("MAY delay storage to ratelimit peer to no more than one update per minute").
// - Retrieval: the newest blob we hold, committed or not, for `peer_storage_retrieval` on every
//   reconnection; none for an empty slot (chanbackup does not send an empty blob either).
// - Collection: a peer's slot is dropped `collectAfterBlocks` (2016) blocks after its last channel
//   closed ("SHOULD keep the blob at least 2016 blocks after the last channel closed").
import { systemClock, type Clock } from '../clock.js';
import { MAX_BLOB_BYTES } from '../wire/peerStorage.js';

/** Writes a peer's blob durably, or removes its slot (blob null). */
export type CommitBlob = (peerId: string, blob: Buffer | null) => Promise<void>;

export interface StoreOptions {
  readonly clock?: Clock;
  readonly cooldownMs?: number;
  readonly maxPeers?: number;
  readonly collectAfterBlocks?: number;
  /** Told of a failed commit; the blob is then kept pending and tried again after a cooldown. */
  readonly onCommitError?: (peerId: string, error: unknown) => void;
}

/** A slot as the plugin loads it at start (from the datastore and lightningd's channel list). */
export interface LoadedSlot {
  readonly peerId: string;
  readonly blob: Buffer;
  readonly openChannels: number;
  /** The block height at which its last channel closed, when it has none open. */
  readonly closedAtHeight: number | null;
}

/** `commit`: the blob is being committed now; `held`: kept in memory until the cooldown ends. */
export type ReceiveResult = 'commit' | 'held' | 'no-slot' | 'too-large' | 'stopped';

interface Slot {
  /** The newest blob received (what a retrieval hands back). */
  newest: Buffer;
  /** Whether `newest` still has to be committed. */
  dirty: boolean;
  lastCommitMs: number | null;
  timer: unknown;
  openChannels: number;
  closedAtHeight: number | null;
}

export const DEFAULT_COOLDOWN_MS = 60_000;
export const DEFAULT_MAX_PEERS = 1000;
export const COLLECT_AFTER_BLOCKS = 2016;

export class PeerBlobStore {
  private readonly slots = new Map<string, Slot>();
  private readonly clock: Clock;
  private readonly cooldownMs: number;
  private readonly maxPeers: number;
  private readonly collectAfterBlocks: number;
  private readonly onCommitError: (peerId: string, error: unknown) => void;
  /** Each peer's commits run one after another, in the order they were started. */
  private readonly chains = new Map<string, Promise<void>>();
  private stopped = false;

  constructor(
    private readonly commit: CommitBlob,
    options: StoreOptions = {},
    loaded: readonly LoadedSlot[] = [],
  ) {
    this.clock = options.clock ?? systemClock;
    this.cooldownMs = options.cooldownMs ?? DEFAULT_COOLDOWN_MS;
    this.maxPeers = options.maxPeers ?? DEFAULT_MAX_PEERS;
    this.collectAfterBlocks = options.collectAfterBlocks ?? COLLECT_AFTER_BLOCKS;
    this.onCommitError = options.onCommitError ?? (() => undefined);
    if (loaded.length > this.maxPeers) throw new RangeError(`${loaded.length} stored slots are more than the ${this.maxPeers} allowed`);
    for (const s of loaded) {
      if (s.blob.length > MAX_BLOB_BYTES) throw new RangeError(`the stored blob of ${s.peerId} is ${s.blob.length} bytes, more than ${MAX_BLOB_BYTES}`);
      this.slots.set(s.peerId, {
        newest: s.blob,
        dirty: false,
        lastCommitMs: null,
        timer: null,
        openChannels: s.openChannels,
        closedAtHeight: s.closedAtHeight,
      });
    }
  }

  /** A channel with the peer reached normal operation: it gets a slot if it has none. */
  channelOpened(peerId: string): 'created' | 'exists' | 'full' {
    const slot = this.slots.get(peerId);
    if (slot) {
      slot.openChannels++;
      slot.closedAtHeight = null;
      return 'exists';
    }
    if (this.slots.size >= this.maxPeers) return 'full';
    const empty = Buffer.alloc(0);
    this.slots.set(peerId, { newest: empty, dirty: false, lastCommitMs: null, timer: null, openChannels: 1, closedAtHeight: null });
    this.startCommit(peerId, empty);
    return 'created';
  }

  /** A channel with the peer closed at this height; the last one starts the collection wait. */
  channelClosed(peerId: string, height: number): void {
    const slot = this.slots.get(peerId);
    if (!slot) return;
    slot.openChannels = Math.max(0, slot.openChannels - 1);
    if (slot.openChannels === 0) slot.closedAtHeight = height;
  }

  /** A `peer_storage` blob from the peer. */
  receive(peerId: string, blob: Buffer): ReceiveResult {
    if (this.stopped) return 'stopped';
    if (blob.length > MAX_BLOB_BYTES) return 'too-large';
    const slot = this.slots.get(peerId);
    if (!slot) return 'no-slot';
    slot.newest = blob;
    const now = this.clock.now();
    if (slot.timer === null && (slot.lastCommitMs === null || now - slot.lastCommitMs >= this.cooldownMs)) {
      this.flush(peerId, slot, true);
      return 'commit';
    }
    slot.dirty = true;
    this.armTimer(peerId, slot, (slot.lastCommitMs ?? now) + this.cooldownMs - now);
    return 'held';
  }

  /** What to send in `peer_storage_retrieval`: the newest blob held, or null for none. */
  retrieve(peerId: string): Buffer | null {
    const newest = this.slots.get(peerId)?.newest;
    return newest !== undefined && newest.length > 0 ? newest : null;
  }

  /** Drops the slots whose last channel closed `collectAfterBlocks` or more blocks before `height`. */
  collect(height: number): string[] {
    const dropped: string[] = [];
    for (const [peerId, slot] of this.slots) {
      if (slot.openChannels > 0 || slot.closedAtHeight === null || height - slot.closedAtHeight < this.collectAfterBlocks) continue;
      if (slot.timer !== null) this.clock.clearTimer(slot.timer);
      this.slots.delete(peerId);
      this.startCommit(peerId, null);
      dropped.push(peerId);
    }
    return dropped;
  }

  /** Commits every held blob now and waits for every commit; nothing is accepted after. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const [peerId, slot] of this.slots) {
      if (slot.timer !== null) this.clock.clearTimer(slot.timer);
      slot.timer = null;
      this.flush(peerId, slot, false);
    }
    while (this.chains.size > 0) await Promise.all([...this.chains.values()]);
  }

  /** The peers that have a slot. */
  peers(): string[] {
    return [...this.slots.keys()];
  }

  private armTimer(peerId: string, slot: Slot, ms: number): void {
    if (slot.timer !== null || this.stopped) return;
    slot.timer = this.clock.setTimer(Math.max(0, ms), () => {
      slot.timer = null;
      if (this.slots.get(peerId) === slot) this.flush(peerId, slot, false);
    });
  }

  private flush(peerId: string, slot: Slot, force: boolean): void {
    if (!force && !slot.dirty) return;
    slot.dirty = false;
    slot.lastCommitMs = this.clock.now();
    this.startCommit(peerId, slot.newest);
  }

  private startCommit(peerId: string, blob: Buffer | null): void {
    const previous = this.chains.get(peerId) ?? Promise.resolve();
    const run: Promise<void> = previous
      .then(() => this.commit(peerId, blob))
      .catch((error: unknown) => this.commitFailed(peerId, blob, error))
      .finally(() => {
        if (this.chains.get(peerId) === run) this.chains.delete(peerId);
      });
    this.chains.set(peerId, run);
  }

  private commitFailed(peerId: string, blob: Buffer | null, error: unknown): void {
    this.onCommitError(peerId, error);
    const slot = this.slots.get(peerId);
    if (!slot || blob === null || slot.newest !== blob || slot.dirty) return;
    slot.dirty = true;
    this.armTimer(peerId, slot, this.cooldownMs);
  }
}
