// An lnbackup server as a destination. The node's records are sent pipelined (a window of
// unacknowledged records) over one ServerClient connection, and a call resolves only once the
// server acknowledged its last record. Where the server's copy ends is always taken from the
// server's own answer (VaultState), at start and after every reconnect: a server that is behind
// (it never got records, or lost some it had acknowledged) is brought level from memory or from
// the local vault files; one whose last record differs from the node's (diverged) is never written
// again; one that is ahead is reported by start(), so that its records can be proven and adopted.
// Page packs go over the same connection: at every start() the local vault's packs the server lacks
// are uploaded before any record, later packs as storePack() or store() hands them (records that refer to a
// pack are held back until it is durable there); retention (prune) is sent in the background.
// A server holding nothing gets the records from the local vault's first kept one (the node's own
// retention may have removed the generations before it).
// The parts: remoteLeveling.ts (agreeing with the server: behind, diverged, ahead), remotePacks.ts
// (the pack uploader and retention), remoteProblems.ts (why a session ended, what to do), and here
// the send window (pump, acks) and the reconnect loop (sessions, backoff, rate-limited notices),
// over a ServerConnection (serverConnection.ts).
import { sealIdentity } from '../vault/identityEnvelope.js';
import { Fifo } from '../util/fifo.js';
import { AckLedger } from './ackLedger.js';
import { readRawRecords, rawRecordHash, type RawRecord } from '../vault/rawRecords.js';
import { listSegments } from '../vault/segments.js';
import type { VaultKeys } from '../vault/keys.js';
import type { ChainPosition, SealedRecord } from '../vault/sealer.js';
import type { WireRecord } from '../protocol/messages.js';
import { DestinationFailedError, type Destination, type DestinationState, type DestinationStatus, type StoredCall } from './destination.js';
import { parseRemoteUrl, type RemoteAddress } from './remoteUrl.js';
import { ProtocolError, ServerClient, type ServerClientOptions, type VaultState } from './serverClient.js';
import type { ConnectServer, ServerConnection } from './serverConnection.js';
import { aheadMessage, disagreement, fetchAhead, prunedPastMessage } from './remoteLeveling.js';
import { sessionEnd } from './remoteProblems.js';
import { PackUploader } from './remotePacks.js';
import type { EpochMs } from '../util/clock.js';

export type NoticeLevel = 'info' | 'unusual' | 'broken';

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
  /** A page pack is durable on the server: `uploaded` false when it held it already (progress of transfers). */
  readonly onPackDurable?: (name: string, bytes: number, uploaded: boolean) => void;
  readonly onSync?: (event: SyncEvent) => void;
  /** How to reach the server (default: ServerClient.connect over the transport). */
  readonly connect?: ConnectServer;
}

const DEFAULT_TIMING: RemoteTiming = { backoffMinMs: 50, backoffMaxMs: 1000, refusedRetryMs: 5000, logEveryMs: 10_000 };
/** Records read from the local vault at a time when resending. */
const LOCAL_PAGE_BYTES = 1 << 20;

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
  readonly vaultDir: string;
  private readonly identity: Buffer;
  readonly vaultId: Buffer;
  private readonly transportSeed: Buffer;
  private readonly notify: (level: NoticeLevel, message: string) => void;
  private readonly window: number;
  private readonly memoryBytes: number;
  readonly timing: RemoteTiming;
  private readonly clientOptions: ServerClientOptions;
  private readonly onDurable: ((bytes: number) => void) | undefined;
  readonly onPackDurable: ((name: string, bytes: number, uploaded: boolean) => void) | undefined;
  private readonly onSync: ((event: SyncEvent) => void) | undefined;
  private readonly connect: ConnectServer;

  /** Page packs and retention. */
  private readonly packs: PackUploader;

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
  /** Highest seq the server ever acknowledged (in this run, or before it: the ledger). */
  private highestAcked: bigint;
  private readonly ackLedger: AckLedger;
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
  private client: ServerConnection | null = null;
  /** A connection being set up. */
  private connecting: ServerConnection | null = null;
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
    this.ackLedger = new AckLedger(options.vaultDir, options.vaultId.toString('hex'), this.address.publicKey);
    this.highestAcked = this.ackLedger.ackedSeq;
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
    this.onPackDurable = options.onPackDurable;
    this.onSync = options.onSync;
    this.connect = options.connect ?? ((address, seed, o) => ServerClient.connect(address, seed, o));
    this.packs = new PackUploader({
      name: this.name,
      vaultId: this.vaultId,
      vaultDir: this.vaultDir,
      timing: this.timing,
      done: () => this.stopped || this.failure !== null,
      caughtUp: () => this.acked >= this.newest,
      note: (kind, level, message) => this.note(kind, level, message),
      fail: (message) => this.fail(message),
      pump: () => this.pump(),
      onPackDurable: this.onPackDurable,
    });
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
  start(localTail: Pick<ChainPosition, 'lastSeq' | 'lastHash'>, deadline: EpochMs | null): Promise<StartResult> {
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
    this.packs.resync();
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
    // Records that refer to packs wait until the packs are durable on the server.
    const packs = call.packs ?? [];
    if (packs.length > 0 && records.length > 0) this.packs.gate(records[0].seq, packs);
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

  /**
   * Uploads a page pack; resolves once the server said it is durable. Transient failures
   * (connection lost, storage unavailable) are retried across reconnects; rejects with
   * DestinationFailedError when the server refuses it for good (quota full, a pack of that name
   * with other contents) or the destination fails or closes.
   */
  storePack(name: string, bytes: Buffer): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.closing !== null) return Promise.reject(new DestinationFailedError(this.name, `${this.name} is closed`));
    return this.packs.store(name, bytes);
  }

  /**
   * Retention at the server: removes its generations below `keepFromGeneration` (it never removes
   * its newest one), then the packs named, once the server holds generation `keepFromGeneration`
   * (before that its kept generation may still use them). Best effort, in the background, retried
   * across reconnects; never holds back records. Resolves once done, or when the destination
   * closes or fails (never rejects): the caller need not wait for it.
   */
  prune(keepFromGeneration: number, deadPacks: readonly string[]): Promise<void> {
    if (this.failure !== null || this.closing !== null) return Promise.resolve();
    return this.packs.prune(keepFromGeneration, deadPacks);
  }

  /** Resolves once the server acknowledged every record handed to this destination. */
  caughtUp(): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.acked >= this.newest) return Promise.resolve();
    return new Promise((resolve, reject) => this.caughtUpWaiters.push({ seq: this.newest, resolve, reject }));
  }

  status(): DestinationStatus {
    const state: DestinationState = this.failure !== null ? 'failed' : this.client === null ? 'stalled' : this.acked < this.catchUpTo ? 'catching-up' : 'ok';
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
    if (graceMs > 0 && this.failure === null && (this.acked < this.newest || this.packs.busy)) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all([this.caughtUp().catch(() => undefined), this.packs.allStored()]),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs))),
      ]);
      clearTimeout(timer);
    }
    this.stopped = true;
    const closed = new DestinationFailedError(
      this.name,
      `${this.name} was closed before it acknowledged records up to ${this.newest} (it holds ${this.acked})`,
    );
    this.settleAll(closed);
    this.packs.settle(new DestinationFailedError(this.name, `${this.name} was closed before it stored every page pack`));
    this.resolveStart(this.notConnected());
    this.client?.close();
    this.connecting?.close();
    this.wake?.();
    await this.ackLedger.flush();
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
    const client = await this.connect(this.address, this.transportSeed, this.clientOptions);
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
        if (state.firstSeq > this.newest + 1n) this.fail(prunedPastMessage(this.name, this.newest, state));
        else if (this.startMode) await this.reportAhead(client, state);
        else this.fail(aheadMessage(this.name, state.lastSeq, this.newest));
        client.close();
        return null;
      }
      const diverged = disagreement(this.name, this.vaultDir, state, (seq) => this.localHash(seq));
      if (diverged !== null) {
        this.fail(diverged);
        client.close();
        return null;
      }
      // A server that lost records may have lost packs too: check them again.
      if (state.lastSeq < this.highestAcked) this.packs.serverLost();
      if (!(await this.packs.syncWith(client))) {
        client.close();
        return null;
      }
      if (this.stopped || this.failure !== null || this.restart) {
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
        this.packs.disconnected(client);
        this.lastSent = this.nextToSend - 1n;
        this.inflight.clear();
        this.inflightBytes = 0;
      }
    }
  }

  /** The server agrees with the node up to its last record: resume from there. */
  private level(client: ServerConnection, state: VaultState): void {
    const serverLast = state.lastSeq;
    this.onSync?.({ serverLastSeq: serverLast, lastSent: this.lastSent, acked: this.acked });
    // A server that holds nothing starts at the local vault's first kept record (the node's
    // retention may have removed the generations before it); otherwise right after its last.
    const from = serverLast === 0n ? this.localFirstSeq() : serverLast + 1n;
    const missing = this.newest - (from - 1n);
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
    if (serverLast > this.highestAcked) {
      this.highestAcked = serverLast;
      this.ackLedger.note(serverLast);
    }
    this.acked = from - 1n;
    this.nextToSend = from;
    this.catchUpTo = this.newest;
    this.sendWindow = Math.max(1, Math.min(this.window, client.welcome?.maxPendingAppends ?? this.window));
    if (missing === 0n) this.backoffMs = this.timing.backoffMinMs;
    this.client = client;
    this.released();
    this.resolveStart({ ahead: false, connected: true, serverLastSeq: serverLast, serverBytes: state.bytes, lastError: null });
    this.pump();
    this.packs.connected(client);
  }

  /** The first record the local vault holds (1 when it holds none: the node starts from there). */
  private localFirstSeq(): bigint {
    const first = listSegments(this.vaultDir)[0]?.firstSeq;
    const head = this.memory.peek()?.seq;
    if (first !== undefined && first > 1n) return head !== undefined && head < first ? head : first;
    return 1n;
  }

  /** The server holds records the node does not: fetch them for the caller to prove and adopt. */
  private async reportAhead(client: ServerConnection, state: VaultState): Promise<void> {
    const records = await fetchAhead(client, this.vaultId, this.vaultDir, this.newest, state);
    if (records.length === 0) {
      this.fail(
        `${this.name} says it holds records up to ${state.lastSeq}, beyond this node's ${this.newest}, but sends none of them: its answers are not consistent, so it is not used`,
      );
      return;
    }
    this.parked = true;
    if (!this.resolveStart({ ahead: true, serverLastSeq: state.lastSeq, records })) this.fail(aheadMessage(this.name, state.lastSeq, this.newest));
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
    // Records that refer to packs not yet durable on the server wait for them.
    const gate = this.packs.gatedFrom;
    try {
      while (this.nextToSend <= this.newest && this.inflight.length < this.sendWindow && (gate === null || this.nextToSend < gate)) {
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
    if (seq > this.highestAcked) {
      this.highestAcked = seq;
      this.ackLedger.note(seq);
    }
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
    const end = sessionEnd(this.name, err, `retrying every ${Math.round(this.timing.refusedRetryMs / 1000)} s`);
    if (end.halveWindow) this.windowBytes = Math.max(1, Math.floor(this.windowBytes / 2));
    this.note(end.kind, end.level, end.message);
    if (end.endsStart) this.resolveStart(this.notConnected());
    if (end.wait === 'refused') return this.timing.refusedRetryMs;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(delay * 2, this.timing.backoffMaxMs);
    return delay;
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
    this.packs.settle(this.failure);
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
