// An lnbackup server as a destination. The node's records are sent pipelined (a window of
// unacknowledged records) over one ServerClient connection, and a call resolves only once the
// server acknowledged its last record. Where the server's copy ends is always taken from the
// server's own answer (VaultState), at start and after every reconnect: a server that is behind
// (it never got records, or lost some it had acknowledged) is brought level from memory or from
// the local vault files; one whose last record differs from the node's (diverged) is never written
// again; one that is ahead is reported by start(), so that its records can be proven and adopted.
import { sealIdentity } from '../vault/identityEnvelope.js';
import { readRawRecords, rawRecordHash, type RawRecord } from '../vault/rawRecords.js';
import type { VaultKeys } from '../vault/keys.js';
import type { SealedRecord } from '../vault/sealer.js';
import { ErrorCode, type WireRecord } from '../server/protocol.js';
import { DestinationFailedError, type Destination, type DestinationState, type DestinationStatus, type StoredCall } from './destination.js';
import { parseRemoteUrl, type RemoteAddress } from './remoteUrl.js';
import { ProtocolError, ServerClient, ServerError, type ServerClientOptions, type VaultState } from './serverClient.js';

export type NoticeLevel = 'info' | 'unusual' | 'broken';

/** Where the local chain ends. */
export interface LocalTail {
  readonly lastSeq: bigint;
  readonly lastHash: Buffer;
}

export type StartResult =
  /** The server holds records beyond the local tail: prove and adopt them (adoptRecords), then call start() again. */
  | { readonly ahead: true; readonly serverLastSeq: bigint; readonly records: readonly WireRecord[] }
  /**
   * connected: the server agrees with the local vault and is brought level in the background.
   * Otherwise the deadline passed or the server refused (lastError says why); it keeps retrying in
   * the background and store() calls wait.
   */
  | {
      readonly ahead: false;
      readonly connected: boolean;
      readonly serverLastSeq: bigint | null;
      /** Bytes the server held at that moment. */
      readonly serverBytes: bigint | null;
      readonly lastError: string | null;
    };

/** One agreement with the server on where its copy ends (for diagnostics and tests). */
export interface SyncEvent {
  /** Where the server's copy ended (its VaultState). */
  readonly serverLastSeq: bigint;
  /** Highest seq sent on the previous connection (0n before the first). */
  readonly lastSent: bigint;
  /** Highest seq the server had acknowledged before. */
  readonly acked: bigint;
}

export interface RemoteTiming {
  /** First reconnect delay; doubles up to backoffMaxMs (50 ms, 1 s). */
  readonly backoffMinMs: number;
  readonly backoffMaxMs: number;
  /** Retry delay after a refusal (quota full, key not allowed, identity mismatch): 5 s. */
  readonly refusedRetryMs: number;
  /** At most one log line per kind of problem in this time (10 s); the first is logged at once. */
  readonly logEveryMs: number;
}

export interface RemoteOptions {
  /** lnbackup://<server key>@host:port, or its parsed form. */
  readonly url: string | RemoteAddress;
  /** The local vault: where records the server lacks are read from. */
  readonly vaultDir: string;
  /** The vault's VAULT.json bytes (the server gets them sealed: see vault/identityEnvelope.ts). */
  readonly identity: Buffer;
  readonly vaultId: Buffer;
  readonly keys: VaultKeys;
  readonly onNotice?: (level: NoticeLevel, message: string) => void;
  /** Records sent and not yet acknowledged, at most (default 64; also bounded by the server's limit). */
  readonly window?: number;
  /** Bytes sent and not yet acknowledged, at most (default 8 MiB; one record always fits). */
  readonly windowBytes?: number;
  /** Bytes of unacknowledged records kept in memory; older ones are read back from the vault (default 64 MiB). */
  readonly memoryBytes?: number;
  readonly client?: ServerClientOptions;
  readonly timing?: Partial<RemoteTiming>;
  /** Bytes of records newly acknowledged (progress of transfers). */
  readonly onDurable?: (bytes: number) => void;
  readonly onSync?: (event: SyncEvent) => void;
}

const DEFAULT_TIMING: RemoteTiming = { backoffMinMs: 50, backoffMaxMs: 1000, refusedRetryMs: 5000, logEveryMs: 10_000 };
/** Records read from the local vault at a time when resending. */
const LOCAL_PAGE_BYTES = 1 << 20;
/** Records asked of the server at a time when it is ahead. */
const FETCH_PAGE_BYTES = 1 << 20;

/** A first-in first-out queue that frees its head in place and compacts now and then. */
class Fifo<T> {
  private items: (T | undefined)[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  peek(): T | undefined {
    return this.items[this.head];
  }

  at(index: number): T {
    return this.items[this.head + index] as T;
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items.length = 0;
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  /** Empties the queue, returning what it held. */
  clear(): T[] {
    const rest = this.items.slice(this.head) as T[];
    this.items = [];
    this.head = 0;
    return rest;
  }
}

interface Waiter {
  readonly seq: bigint;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

interface StartWaiter {
  readonly resolve: (result: StartResult) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout | null;
}

export class RemoteDestination implements Destination {
  readonly kind = 'server' as const;
  readonly name: string;
  private readonly address: RemoteAddress;
  private readonly vaultDir: string;
  private readonly identity: Buffer;
  private readonly vaultId: Buffer;
  private readonly transportSeed: Buffer;
  private readonly notify: (level: NoticeLevel, message: string) => void;
  private readonly window: number;
  private readonly memoryBytes: number;
  private readonly timing: RemoteTiming;
  private readonly clientOptions: ServerClientOptions;
  private readonly onDurable: ((bytes: number) => void) | undefined;
  private readonly onSync: ((event: SyncEvent) => void) | undefined;

  // The chain as handed to this destination.
  private started = false;
  private newest = 0n;
  private newestHash: Buffer = Buffer.alloc(0);
  /** Records handed by store() and not acknowledged (the oldest may have been dropped: they are in the vault). */
  private readonly memory = new Fifo<SealedRecord>();
  private memoryHeld = 0;
  /** Records read back from the local vault for resending. */
  private filePage: readonly RawRecord[] = [];

  // The server's copy.
  /** Highest seq durable on the server, as far as it told (VaultState, then Acks). */
  private acked = 0n;
  /** Highest seq the server ever acknowledged in this run. */
  private highestAcked = 0n;
  private nextToSend = 1n;
  /** Sizes of the records sent and not yet acknowledged on this connection. */
  private readonly inflight = new Fifo<number>();
  private inflightBytes = 0;
  private sendWindow: number;
  private windowBytes: number;
  /** The newest record when the server last agreed: catching up until it is acknowledged. */
  private catchUpTo = 0n;
  private lastSent = 0n;

  private readonly waiters = new Fifo<Waiter>();
  private caughtUpWaiters: Waiter[] = [];
  private startWaiter: StartWaiter | null = null;
  /** A start() waits for the first agreement: a server ahead is reported, not failed. */
  private startMode = false;

  /** The connection records go over (the server agreed on the tail). */
  private client: ServerClient | null = null;
  /** A connection being set up. */
  private connecting: ServerClient | null = null;
  private loop: Promise<void> | null = null;
  /** After reporting a server ahead: no connection until start() is called again. */
  private parked = false;
  /** The current session is dropped on purpose (a new start): reconnect at once. */
  private restart = false;
  private wake: (() => void) | null = null;
  private backoffMs: number;
  private failure: DestinationFailedError | null = null;
  /** close() was called (it may still wait for acks). */
  private closing: Promise<void> | null = null;
  /** Closed: no more connections. */
  private stopped = false;
  private lastError: string | null = null;
  private lastDurableAt: number | null = null;
  private readonly loggedAt = new Map<string, number>();
  /** A problem was logged since the server last agreed. */
  private troubled = false;

  constructor(options: RemoteOptions) {
    this.address = typeof options.url === 'string' ? parseRemoteUrl(options.url) : options.url;
    this.name = this.address.url;
    this.vaultDir = options.vaultDir;
    this.identity = sealIdentity(options.keys, options.vaultId.toString('hex'), options.identity);
    this.vaultId = options.vaultId;
    this.transportSeed = options.keys.transport;
    this.notify = options.onNotice ?? (() => {});
    this.window = Math.max(1, options.window ?? 64);
    this.sendWindow = this.window;
    this.windowBytes = Math.max(1, options.windowBytes ?? 8 * 1024 * 1024);
    this.memoryBytes = options.memoryBytes ?? 64 * 1024 * 1024;
    this.timing = { ...DEFAULT_TIMING, ...options.timing };
    this.backoffMs = this.timing.backoffMinMs;
    this.clientOptions = options.client ?? {};
    this.onDurable = options.onDurable;
    this.onSync = options.onSync;
  }

  /**
   * Connects (retrying with backoff) and agrees with the server on where its copy ends, from the
   * server's answer. Resolves once that is known (ahead, or level and catching up in the
   * background), when the server refuses this node (lastError; retried every 5 s in the
   * background), or at `deadline` (ms since the epoch; null: no deadline) if the server cannot be
   * reached. Rejects (DestinationFailedError) when the server's copy diverged: nothing is sent.
   * May be called again after an `ahead` result, with the tail after adoption; never while store()
   * calls are pending.
   */
  start(localTail: LocalTail, deadline: number | null): Promise<StartResult> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closing !== null) return Promise.reject(new DestinationFailedError(this.name, `${this.name} is closed`));
    if (this.waiters.length > 0 || this.startWaiter !== null) {
      return Promise.reject(new Error(`${this.name}: start() called while records or another start() are pending`));
    }
    this.started = true;
    this.newest = localTail.lastSeq;
    this.newestHash = localTail.lastHash;
    this.memory.clear();
    this.memoryHeld = 0;
    this.filePage = [];
    this.startMode = true;
    this.parked = false;
    const result = new Promise<StartResult>((resolve, reject) => {
      const timer = deadline === null ? null : setTimeout(() => this.resolveStart(this.notConnected()), Math.max(0, deadline - Date.now()));
      this.startWaiter = { resolve, reject, timer };
    });
    // A connection that agreed on an earlier tail must agree again on this one.
    const current = this.client ?? this.connecting;
    if (current !== null) {
      this.restart = true;
      current.destroy();
    }
    this.wake?.();
    this.loop ??= this.run();
    return result;
  }

  store(call: StoredCall): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closing !== null || !this.started) {
      return Promise.reject(new DestinationFailedError(this.name, `${this.name} is ${this.started ? 'closed' : 'not started'}`));
    }
    const records = call.records;
    for (let i = 0; i < records.length; i++) {
      const r = records[i];
      if (r.seq !== this.newest + 1n) {
        this.fail(`record ${r.seq} was handed to ${this.name} after record ${this.newest}: records must come in chain order`);
        return Promise.reject(this.failure);
      }
      this.memory.push(r);
      this.memoryHeld += r.bytes.length;
      this.newest = r.seq;
      this.newestHash = r.hash;
    }
    while (this.memoryHeld > this.memoryBytes && this.memory.length > 1) this.memoryHeld -= this.memory.shift()!.bytes.length;
    if (this.acked >= this.newest) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ seq: this.newest, resolve, reject }));
    this.pump();
    return done;
  }

  /** Resolves once the server acknowledged every record handed to this destination. */
  caughtUp(): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.acked >= this.newest) return Promise.resolve();
    return new Promise((resolve, reject) => this.caughtUpWaiters.push({ seq: this.newest, resolve, reject }));
  }

  status(): DestinationStatus {
    const state: DestinationState =
      this.failure !== null ? 'failed' : this.client === null ? 'stalled' : this.acked < this.catchUpTo ? 'catching-up' : 'ok';
    return {
      name: this.name,
      kind: this.kind,
      state,
      durableSeq: this.acked.toString(),
      lagRecords: Number(this.newest > this.acked ? this.newest - this.acked : 0n),
      lastError: this.lastError,
      lastDurableAt: this.lastDurableAt === null ? null : new Date(this.lastDurableAt).toISOString(),
    };
  }

  /** Waits up to `graceMs` for the records in flight to be acknowledged, then disconnects. Pending store() calls are rejected. */
  close(graceMs: number): Promise<void> {
    this.closing ??= this.shutdown(graceMs);
    return this.closing;
  }

  private async shutdown(graceMs: number): Promise<void> {
    if (graceMs > 0 && this.failure === null && this.acked < this.newest) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.caughtUp().catch(() => undefined), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
    }
    this.stopped = true;
    const closed = new DestinationFailedError(this.name, `${this.name} was closed before it acknowledged records up to ${this.newest} (it holds ${this.acked})`);
    this.settleAll(closed);
    this.resolveStart(this.notConnected());
    this.client?.close();
    this.connecting?.close();
    this.wake?.();
  }

  // -- the connection loop -----------------------------------------------------------------------

  private async run(): Promise<void> {
    while (!this.stopped && this.failure === null) {
      if (this.parked) {
        await this.sleep(null);
        continue;
      }
      this.restart = false;
      let ended: Error | null;
      try {
        ended = await this.session();
      } catch (err) {
        ended = err instanceof Error ? err : new Error(String(err));
      }
      if (this.stopped || this.failure !== null) break;
      if (this.restart || this.parked) continue;
      await this.sleep(this.problem(ended));
    }
    this.loop = null;
  }

  /** One connection: connect, open the vault, agree on the tail, then send until it ends. Resolves with why it ended. */
  private async session(): Promise<Error | null> {
    const client = await ServerClient.connect(this.address, this.transportSeed, this.clientOptions);
    if (this.stopped || this.failure !== null) {
      client.close();
      return null;
    }
    this.connecting = client;
    try {
      const ended = new Promise<Error | null>((resolve) => client.onClose(resolve));
      client.onAck((vaultId, seq) => {
        if (this.client === client) this.acknowledged(vaultId, seq);
      });
      client.onAppendError((err) => client.destroy(err));
      const state = await client.openVault(this.vaultId, this.identity);
      if (state.lastSeq > this.newest) {
        if (this.startMode) await this.reportAhead(client, state);
        else this.fail(this.aheadMessage(state.lastSeq));
        client.close();
        return null;
      }
      const diverged = this.disagreement(state);
      if (diverged !== null) {
        this.fail(diverged);
        client.close();
        return null;
      }
      this.connecting = null;
      this.level(client, state);
      return await ended;
    } catch (err) {
      client.destroy(err as Error);
      throw err;
    } finally {
      if (this.connecting === client) this.connecting = null;
      if (this.client === client) {
        this.client = null;
        this.lastSent = this.nextToSend - 1n;
        this.inflight.clear();
        this.inflightBytes = 0;
      }
    }
  }

  /** The server agrees with the node up to its last record: resume from there. */
  private level(client: ServerClient, state: VaultState): void {
    const serverLast = state.lastSeq;
    this.onSync?.({ serverLastSeq: serverLast, lastSent: this.lastSent, acked: this.acked });
    const missing = this.newest - serverLast;
    const sending = missing > 0n ? `sending the ${missing} record(s) it lacks` : 'it lacks none';
    if (serverLast < this.highestAcked) {
      this.note(
        'lost',
        'broken',
        `${this.name} LOST RECORDS IT HAD ACKNOWLEDGED (acked up to ${this.highestAcked}, now holds ${serverLast}); resending them from the local vault`,
      );
    } else if (this.troubled) {
      this.notify('info', `${this.name} is reachable again and holds records up to ${serverLast}; ${sending}`);
    } else if (this.startMode && missing > 0n) {
      this.notify('info', `${this.name} holds records up to ${serverLast}; ${sending}`);
    }
    this.troubled = false;
    this.lastError = null;
    if (serverLast > this.highestAcked) this.highestAcked = serverLast;
    this.acked = serverLast;
    this.nextToSend = serverLast + 1n;
    this.catchUpTo = this.newest;
    this.sendWindow = Math.max(1, Math.min(this.window, client.welcome?.maxPendingAppends ?? this.window));
    if (missing === 0n) this.backoffMs = this.timing.backoffMinMs;
    this.client = client;
    this.released();
    this.resolveStart({ ahead: false, connected: true, serverLastSeq: serverLast, serverBytes: state.bytes, lastError: null });
    this.pump();
  }

  /** The server holds records the node does not: fetch them for the caller to prove and adopt. */
  private async reportAhead(client: ServerClient, state: VaultState): Promise<void> {
    const records: WireRecord[] = [];
    let next = this.newest + 1n;
    fetch: while (next <= state.lastSeq) {
      const page = await client.readRecords(this.vaultId, next, FETCH_PAGE_BYTES);
      for (const r of page.records) {
        if (next > state.lastSeq) break;
        records.push(r);
        // An out-of-place record is handed on as it is: the proof (adopt.ts) refuses it by name.
        if (r.seq !== next) break fetch;
        next++;
      }
      if (page.records.length === 0 || page.done) break;
    }
    if (records.length === 0) {
      this.fail(`${this.name} says it holds records up to ${state.lastSeq}, beyond this node's ${this.newest}, but sends none of them: its answers are not consistent, so it is not used`);
      return;
    }
    this.parked = true;
    if (!this.resolveStart({ ahead: true, serverLastSeq: state.lastSeq, records })) this.fail(this.aheadMessage(state.lastSeq));
  }

  private aheadMessage(serverLast: bigint): string {
    return (
      `${this.name} holds records up to ${serverLast}, beyond this node's newest record ${this.newest}: another node writes to this vault ` +
      `with the same key, or the server's copy is not this node's history. It is not used in this run; restart lightningd so that ` +
      `lnbackup proves and adopts its records, or remove it from the destinations`
    );
  }

  /** Why the server's copy is not a prefix of the node's chain, or null when it is. */
  private disagreement(state: VaultState): string | null {
    const seq = state.lastSeq;
    if (seq === 0n) return null;
    let local: Buffer | null;
    try {
      local = this.localHash(seq);
    } catch (err) {
      return `cannot compare ${this.name}'s copy with the local vault: ${(err as Error).message}`;
    }
    if (local === null) {
      return (
        `${this.name} holds records up to ${seq}, but the local vault at ${this.vaultDir} no longer holds record ${seq} to compare it with, ` +
        'so the server copy cannot be continued: delete that vault on the server (or use another server) and add it again'
      );
    }
    if (!local.equals(state.lastHash)) {
      return (
        `${this.name} holds a different record ${seq} than this node (its hash differs): the server's copy diverged from this node's vault ` +
        'and must not be used; nothing was sent to it. Remove it from the destinations, or delete that vault on the server and add the server again'
      );
    }
    return null;
  }

  private localHash(seq: bigint): Buffer | null {
    if (seq === this.newest) return this.newestHash;
    const head = this.memory.peek();
    if (head !== undefined && seq >= head.seq) return this.memory.at(Number(seq - head.seq)).hash;
    const [r] = readRawRecords(this.vaultDir, seq, 1, { untilSeq: seq });
    return r?.seq === seq ? rawRecordHash(r.bytes) : null;
  }

  // -- the hot path ------------------------------------------------------------------------------

  /** Sends what the window allows. */
  private pump(): void {
    const client = this.client;
    if (client === null) return;
    try {
      while (this.nextToSend <= this.newest && this.inflight.length < this.sendWindow) {
        const record = this.recordAt(this.nextToSend);
        const size = record.bytes.length;
        if (this.inflight.length > 0 && this.inflightBytes + size > this.windowBytes) break;
        client.append(this.vaultId, record);
        this.inflight.push(size);
        this.inflightBytes += size;
        this.nextToSend++;
      }
    } catch (err) {
      this.fail(`cannot send record ${this.nextToSend} to ${this.name}: ${(err as Error).message}`);
    }
  }

  /** A record to send: from memory, or read back from the local vault. */
  private recordAt(seq: bigint): WireRecord {
    const head = this.memory.peek();
    if (head !== undefined && seq >= head.seq) return this.memory.at(Number(seq - head.seq));
    let page = this.filePage;
    if (page.length === 0 || seq < page[0].seq || seq > page[page.length - 1].seq) {
      page = this.filePage = readRawRecords(this.vaultDir, seq, LOCAL_PAGE_BYTES, { untilSeq: this.newest });
      if (page.length === 0 || page[0].seq !== seq) {
        throw new Error(`the local vault at ${this.vaultDir} no longer holds record ${seq}, which the server lacks`);
      }
    }
    return page[Number(seq - page[0].seq)];
  }

  private acknowledged(vaultId: Buffer, seq: bigint): void {
    if (seq <= this.acked || !vaultId.equals(this.vaultId)) return;
    if (seq >= this.nextToSend) {
      this.client?.destroy(new ProtocolError(`${this.name} acknowledged record ${seq}, which was never sent to it`));
      return;
    }
    let bytes = 0;
    for (let n = seq - this.acked; n > 0n; n--) bytes += this.inflight.shift() ?? 0;
    this.inflightBytes -= bytes;
    this.acked = seq;
    if (seq > this.highestAcked) this.highestAcked = seq;
    this.lastDurableAt = Date.now();
    this.backoffMs = this.timing.backoffMinMs;
    this.onDurable?.(bytes);
    this.released();
    this.pump();
  }

  /** Lets go of what the server holds now: records in memory, waiting calls. */
  private released(): void {
    const acked = this.acked;
    for (let r = this.memory.peek(); r !== undefined && r.seq <= acked; r = this.memory.peek()) {
      this.memoryHeld -= r.bytes.length;
      this.memory.shift();
    }
    for (let w = this.waiters.peek(); w !== undefined && w.seq <= acked; w = this.waiters.peek()) {
      this.waiters.shift();
      w.resolve();
    }
    const page = this.filePage;
    if (page.length > 0 && page[page.length - 1].seq <= acked) this.filePage = [];
    if (acked >= this.newest && this.caughtUpWaiters.length > 0) {
      const waiting = this.caughtUpWaiters;
      this.caughtUpWaiters = [];
      for (const w of waiting) w.resolve();
    }
  }

  // -- problems ----------------------------------------------------------------------------------

  /** Logs why the session ended (rate-limited) and says how long to wait before reconnecting. */
  private problem(err: Error | null): number {
    const backoff = (): number => {
      const delay = this.backoffMs;
      this.backoffMs = Math.min(delay * 2, this.timing.backoffMaxMs);
      return delay;
    };
    const every = `retrying every ${Math.round(this.timing.refusedRetryMs / 1000)} s`;
    if (err instanceof ServerError) {
      switch (err.code) {
        case ErrorCode.QuotaExceeded:
          this.note('quota', 'unusual', `${err.message}. Records wait on the node until there is room (${every})`);
          this.resolveStart(this.notConnected());
          return this.timing.refusedRetryMs;
        case ErrorCode.NotAllowed:
        case ErrorCode.IdentityMismatch:
        case ErrorCode.UnknownVault:
        case ErrorCode.UnsupportedVersion:
          this.note('refused', 'broken', `${err.message}; no record is backed up there until that is fixed (${every})`);
          this.resolveStart(this.notConnected());
          return this.timing.refusedRetryMs;
        case ErrorCode.BadMessage:
          // The same bytes would be refused again: a bug on one side, not worth a tight loop.
          this.note('bad-message', 'broken', `${err.message}; this is a bug in lnbackup on the node or the server: report it (${every})`);
          return this.timing.refusedRetryMs;
        case ErrorCode.OutOfOrder:
          this.note('resync', 'unusual', `${err.message}; resuming from the server's state`);
          return backoff();
        case ErrorCode.TooBusy:
          if (err.seq !== 0n) this.windowBytes = Math.max(1, Math.floor(this.windowBytes / 2));
          this.note('busy', 'unusual', `${err.message}; retrying`);
          return backoff();
        default:
          this.note(`server-${err.code}`, 'unusual', `${err.message}; retrying`);
          return backoff();
      }
    }
    const what = err === null ? `${this.name} closed the connection` : err instanceof ProtocolError ? err.message : `${this.name}: ${err.message}`;
    this.note('connection', 'unusual', `${what}; reconnecting`);
    return backoff();
  }

  /** Records the problem; logs it unless one of its kind was logged in the last logEveryMs. */
  private note(kind: string, level: NoticeLevel, message: string): void {
    this.lastError = message;
    const now = Date.now();
    const last = this.loggedAt.get(kind);
    if (last !== undefined && now - last < this.timing.logEveryMs) return;
    this.loggedAt.set(kind, now);
    this.troubled = true;
    this.notify(level, message);
  }

  /** The server can never take records again in this run. */
  private fail(message: string): void {
    if (this.failure !== null) return;
    this.failure = new DestinationFailedError(this.name, message);
    this.lastError = message;
    this.notify('broken', message);
    const start = this.startWaiter;
    if (start !== null) {
      this.startWaiter = null;
      if (start.timer) clearTimeout(start.timer);
      start.reject(this.failure);
    }
    this.settleAll(this.failure);
    this.client?.close();
    this.connecting?.close();
    this.wake?.();
  }

  private settleAll(err: Error): void {
    for (const w of this.waiters.clear()) w.reject(err);
    const waiting = this.caughtUpWaiters;
    this.caughtUpWaiters = [];
    for (const w of waiting) w.reject(err);
  }

  private resolveStart(result: StartResult): boolean {
    const w = this.startWaiter;
    if (w === null) return false;
    this.startWaiter = null;
    this.startMode = false;
    if (w.timer) clearTimeout(w.timer);
    w.resolve(result);
    return true;
  }

  private notConnected(): StartResult {
    return {
      ahead: false,
      connected: false,
      serverLastSeq: null,
      serverBytes: null,
      lastError: this.lastError ?? `${this.name} could not be reached in time`,
    };
  }

  /** Waits `ms` (null: until woken). */
  private sleep(ms: number | null): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === null ? null : setTimeout(() => this.wake?.(), ms);
      this.wake = () => {
        this.wake = null;
        if (timer) clearTimeout(timer);
        resolve();
      };
    });
  }
}
