// One client connection on the server: a state machine over the protocol's messages
// (src/protocol/messages.ts, docs/PROTOCOL.md). Hello first, then OpenVault / Append / ReadRecords /
// ListVaults / Ping / the pack messages / Prune in any order. Messages are handled one at a time in
// arrival order; an Append is checked (vault opened here, record header, sequence, quota, backlog)
// and handed to the store at once, and its Ack is sent only after the store resolved it, strictly in
// the order the Appends came. A page pack arrives in pieces (PutPack), is gathered in memory (one
// pack at a time per connection) and written by the store once whole; its last PackStored is sent
// only once it is durable, and the connection's other messages go on meanwhile.
// A client only ever sees its own vaults, and vault ids are scoped by owner (storage/vaultScope.ts):
// another key may hold the same id, unseen, so an id can be neither squatted nor probed. The
// VaultBook, shared by all sessions, keeps each open vault's accepted sequence so that two
// connections of one client cannot interleave records.
import { decodeHeader, HEADER_BYTES } from '../vault/format.js';
import { MAX_GENERATION } from '../vault/rawRecords.js';
import { isPackName } from '../vault/packFiles.js';
import {
  decodeMessage,
  encodeMessage,
  ErrorCode,
  MAX_PACK_CHUNK_BYTES,
  MAX_PACKS_PER_MESSAGE,
  MAX_FIRST_SEQ,
  MAX_RECORD_BYTES,
  MAX_RECORDS_PER_MESSAGE,
  MAX_SEQ,
  MAX_VAULTS_PER_LIST,
  messageName,
  MessageType,
  NO_HASH,
  NO_VAULT,
  PROTOCOL_VERSION,
  type Message,
  type MessageOf,
  type WireRecord,
} from '../protocol/messages.js';
import { PackConflictError, StorageUnavailableError, type ServerStore, type StoredPack, type StoredVault } from './storage/store.js';
import type { ClientLedger } from './clientLedger.js';
import type { MemoryBudget } from './memoryBudget.js';
import { PackUpload } from './packUpload.js';
import { envelopeVaultId, scopedVaultId } from './storage/vaultScope.js';
import type { BookEntry, VaultBook } from './vaultBook.js';

export const SERVER_AGENT = 'lnbackup-server/0.1.0';
export const SUPPORTED_VERSIONS: readonly number[] = [PROTOCOL_VERSION];
/** Room kept in a Records message for its fields, so that it stays under maxMessageBytes. */
export const READ_OVERHEAD_BYTES = 64 * 1024;
/** Per record in a Records message: seq, generation, length prefix. */
const RECORD_FRAMING_BYTES = 16;

/** What a session needs of the transport (SecureConnection). */
export interface SessionConnection {
  readonly remotePublicKey: Buffer;
  onMessage(handler: (message: Buffer) => void): void;
  onClose(handler: (error: Error | null) => void): void;
  send(message: Buffer): void;
  readonly bufferedBytes: number;
  /** Messages up to `bytes` are taken from now on (raised once Hello is accepted). */
  setMaxMessageBytes(bytes: number): void;
  /** The transport's memory budget refused a fragment: reading has stopped. */
  onOverBudget(handler: () => void): void;
  /** Resolves once what was sent is handed to the kernel. */
  drained(): Promise<void>;
  close(): void;
  destroy(error?: Error): void;
}

export interface SessionLimits {
  readonly maxMessageBytes: number;
  readonly maxPendingAppends: number;
  /** Bytes of appends accepted and not yet durable, per session. */
  readonly maxPendingBytes: number;
  readonly idleTimeoutMs: number;
  /** Time allowed between the end of the transport handshake and Hello. */
  readonly helloTimeoutMs: number;
}

export interface SessionContext {
  readonly store: ServerStore;
  readonly ledger: ClientLedger;
  readonly book: VaultBook;
  readonly limits: SessionLimits;
  /** What all connections may hold at once (MemoryBudget). */
  readonly budget: MemoryBudget;
  /**
   * One line for the operator's log (never a secret). Lines with a `noisy` category (refusals,
   * protocol violations: what strangers can cause at will) may be thinned out by the server.
   */
  log(line: string, noisy?: string): void;
  /** Something status shows changed. */
  changed(): void;
  /** An append was made durable (for the server's counters). */
  appended(records: number, bytes: number, ms: number): void;
  /** A client was refused for `reason` (metrics: not-allowed, too-busy). */
  refused(reason: string): void;
}

export interface SessionCounters {
  readonly connectedAt: number;
  lastActivityAt: number;
  messages: number;
  /** Successful OpenVault answers. */
  opens: number;
  /** Records acknowledged on this connection. */
  records: number;
  /** Bytes of records acknowledged on this connection. */
  bytes: number;
}

/** The short form of a key for logs: its first 8 hex digits. */
export function shortKey(hex: string): string {
  return `${hex.slice(0, 8)}..`;
}

// ---------------------------------------------------------------------------------------------
// The session

type State = 'hello' | 'ready' | 'closing' | 'closed';

type Outcome =
  { readonly ok: true } | { readonly ok: false; readonly code: ErrorCode; readonly message: string; /** The Error's seq field. */ readonly seq: bigint };

/** An Append waiting for its answer: handed to the store (entry set), or refused at once (entry null). */
interface PendingAppend {
  readonly vaultId: Buffer;
  readonly entry: BookEntry | null;
  readonly seq: bigint;
  readonly bytes: number;
  readonly epoch: number;
  readonly startedAt: number;
  /** null while the store works on it. */
  outcome: Outcome | null;
}

/** A message the client must not send, or cannot send now: answered with BadMessage, then the connection closes. */
class ProtocolViolation extends Error {
  constructor(
    message: string,
    /** What the refused message was about, echoed in the Error. */
    readonly about: { readonly requestId?: number; readonly vaultId?: Buffer; readonly seq?: bigint } = {},
  ) {
    super(message);
  }
}

let nextSessionId = 1;

export class Session {
  readonly id = nextSessionId++;
  /** The client's public key, 66 lowercase hex digits. */
  readonly client: string;
  readonly counters: SessionCounters;
  /** Resolves once the connection is closed. */
  readonly closed: Promise<void>;
  closeError: Error | null = null;
  agent = '';
  /** Hello was accepted (the key is allowed and a version is in common). */
  admitted = false;

  private state: State = 'hello';
  private stopping = false;
  private readonly inbox: Buffer[] = [];
  private inboxBytes = 0;
  private pumping = false;
  private readonly opened = new Map<string, BookEntry>();
  /** Every Append handled and not yet answered, in arrival order (answers go out in this order). */
  private readonly inflight: PendingAppend[] = [];
  /** Of those, the ones handed to the store, and their bytes. */
  private storing = 0;
  private inflightBytes = 0;
  private readonly idleTimer: NodeJS.Timeout;
  private helloTimer: NodeJS.Timeout | null;
  private destroyTimer: NodeJS.Timeout | null = null;
  private drainWaiters: (() => void)[] = [];
  /** The pack being received, and the one being written by the store (at most one each). */
  private upload: PackUpload | null = null;
  private packWrite: Promise<void> | null = null;
  private resolveClosed!: () => void;
  private readonly maxRecordBytes: number;
  private readonly maxOutputBytes: number;

  constructor(
    private readonly conn: SessionConnection,
    private readonly ctx: SessionContext,
    readonly remoteAddress: string,
  ) {
    this.client = conn.remotePublicKey.toString('hex');
    const now = Date.now();
    this.counters = { connectedAt: now, lastActivityAt: now, messages: 0, opens: 0, records: 0, bytes: 0 };
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    this.maxRecordBytes = Math.min(MAX_RECORD_BYTES, ctx.limits.maxMessageBytes);
    this.maxOutputBytes = 4 * ctx.limits.maxMessageBytes;
    this.helloTimer = setTimeout(() => {
      this.ctx.log(`client ${shortKey(this.client)} from ${this.remoteAddress} sent no Hello within ${this.ctx.limits.helloTimeoutMs} ms: closed`, 'violation');
      this.close();
    }, ctx.limits.helloTimeoutMs);
    this.idleTimer = setTimeout(() => this.onIdle(), ctx.limits.idleTimeoutMs);
    conn.onClose((error) => this.onClosed(error));
    conn.onOverBudget(() => {
      ctx.refused('too-busy');
      this.violation(
        ErrorCode.TooBusy,
        `the server is too busy: its memory budget (${ctx.budget.limitBytes} bytes for all connections) is spent, so this message was not taken; retry later`,
      );
    });
    // The key is known since act three: a key that is not allowed is refused before anything it sends is read.
    if (!ctx.ledger.isAllowed(this.client)) {
      this.ctx.log(`client ${shortKey(this.client)} from ${this.remoteAddress} refused: not on the allow-list`, 'refused');
      ctx.refused('not-allowed');
      this.sendError(
        ErrorCode.NotAllowed,
        `client key ${this.client} is not allowed here: the operator must add it with --allow ${this.client} (or 'lnbackup server allow' while it runs)`,
      );
      // Its slot is freed soon, whether or not the peer closes its side.
      this.close(500);
    }
    conn.onMessage((message) => this.onMessage(message));
  }

  get isReady(): boolean {
    return this.state === 'ready';
  }

  get pendingAppends(): number {
    return this.storing;
  }

  /** Where the store keeps this client's vault `vaultId`, open on this connection (ids are scoped by owner: storage/vaultScope.ts). */
  private stored(vaultId: string): string {
    const entry = this.opened.get(vaultId);
    if (!entry) throw new Error(`vault ${vaultId} is not open on this connection`);
    return entry.vaultId;
  }

  /** Vaults this session has open (hex ids). */
  get openVaults(): string[] {
    return [...this.opened.keys()];
  }

  /**
   * For the server's stop: takes no new message, lets every message already received be handled
   * (Appends are stored and acknowledged or refused), then closes the connection.
   */
  async shutdown(graceMs = 5_000): Promise<void> {
    this.stopping = true;
    if (this.state === 'hello') this.close();
    if (this.state !== 'closed') {
      await this.drained();
      this.close(graceMs);
    }
    await this.closed;
  }

  // -- arrival ---------------------------------------------------------------------------------

  private onMessage(message: Buffer): void {
    if (this.state === 'closing' || this.state === 'closed' || this.stopping) return;
    this.counters.lastActivityAt = Date.now();
    this.counters.messages++;
    this.idleTimer.refresh();
    // A well-behaved client waits for its appends' acks and its requests' replies; this bounds
    // what one that does not can make the server hold.
    const maxQueued = this.ctx.limits.maxPendingAppends + 64;
    if (this.inbox.length >= maxQueued || this.inboxBytes + message.length > this.maxOutputBytes) {
      this.violation(ErrorCode.TooBusy, `more than ${maxQueued} messages or ${this.maxOutputBytes} bytes sent without waiting for the replies`);
      return;
    }
    if (!this.ctx.budget.takeSmall(message.length)) {
      this.violation(
        ErrorCode.TooBusy,
        `the server is too busy: its memory budget (${this.ctx.budget.limitBytes} bytes for all connections) is spent; retry later`,
      );
      return;
    }
    this.inbox.push(message);
    this.inboxBytes += message.length;
    if (!this.pumping) void this.pump();
  }

  private async pump(): Promise<void> {
    this.pumping = true;
    try {
      while (this.inbox.length > 0 && (this.state === 'hello' || this.state === 'ready')) {
        const raw = this.inbox.shift()!;
        this.inboxBytes -= raw.length;
        this.ctx.budget.give(raw.length);
        const pending = this.handle(raw);
        if (pending) await pending;
      }
    } catch (err) {
      if (err instanceof ProtocolViolation) {
        this.violation(ErrorCode.BadMessage, err.message, err.about.requestId, err.about.vaultId, err.about.seq);
      } else {
        this.ctx.log(`client ${shortKey(this.client)}: internal error: ${(err as Error).message}`);
        this.violation(ErrorCode.Internal, 'internal server error; reconnect and resume from VaultState');
      }
    } finally {
      this.pumping = false;
      this.checkDrained();
    }
  }

  private handle(raw: Buffer): Promise<void> | void {
    let m: Message;
    try {
      m = decodeMessage(raw, this.maxRecordBytes);
    } catch (err) {
      throw new ProtocolViolation(`malformed message: ${(err as Error).message}`);
    }
    if (this.state === 'hello') {
      if (m.type !== MessageType.Hello) throw new ProtocolViolation(`the first message must be Hello, got ${messageName(m.type)}`);
      return this.hello(m);
    }
    switch (m.type) {
      case MessageType.Hello:
        throw new ProtocolViolation('Hello was already received on this connection');
      case MessageType.Append:
        return this.append(m);
      case MessageType.Ping:
        this.send({ type: MessageType.Pong, nonce: m.nonce });
        return;
      case MessageType.OpenVault:
        if (this.stopping) return this.stoppingReply(m.requestId, m.vaultId);
        return this.openVault(m);
      case MessageType.ReadRecords:
        if (this.stopping) return this.stoppingReply(m.requestId, m.vaultId);
        return this.readRecords(m);
      case MessageType.ListVaults:
        if (this.stopping) return this.stoppingReply(m.requestId, NO_VAULT);
        return this.listVaults(m);
      case MessageType.PutPack:
        if (this.stopping) {
          this.abortUpload();
          return this.stoppingReply(m.requestId, m.vaultId);
        }
        return this.putPack(m);
      case MessageType.ListPacks:
        if (this.stopping) return this.stoppingReply(m.requestId, m.vaultId);
        return this.listPacks(m);
      case MessageType.ReadPack:
        if (this.stopping) return this.stoppingReply(m.requestId, m.vaultId);
        return this.readPack(m);
      case MessageType.DeletePacks:
        if (this.stopping) return this.stoppingReply(m.requestId, m.vaultId);
        return this.deletePacks(m);
      case MessageType.Prune:
        if (this.stopping) return this.stoppingReply(m.requestId, m.vaultId);
        return this.prune(m);
      default:
        throw new ProtocolViolation(`${messageName(m.type)} is a message only the server sends`);
    }
  }

  // -- handlers --------------------------------------------------------------------------------

  private hello(m: MessageOf<MessageType.Hello>): void {
    if (this.helloTimer) clearTimeout(this.helloTimer);
    this.helloTimer = null;
    this.agent = m.agent.replace(/[^\x20-\x7e]/g, '?').slice(0, 64);
    const common = m.versions.filter((v) => SUPPORTED_VERSIONS.includes(v));
    if (common.length === 0) {
      this.violation(
        ErrorCode.UnsupportedVersion,
        `no protocol version in common: the client speaks ${m.versions.join(', ') || 'none'}, this server ${SUPPORTED_VERSIONS.join(', ')}; upgrade the older side`,
      );
      return;
    }
    this.state = 'ready';
    this.admitted = true;
    this.conn.setMaxMessageBytes(this.ctx.limits.maxMessageBytes);
    this.send({
      type: MessageType.Welcome,
      version: Math.max(...common),
      agent: SERVER_AGENT,
      maxMessageBytes: this.ctx.limits.maxMessageBytes,
      maxPendingAppends: this.ctx.limits.maxPendingAppends,
    });
    this.ctx.log(`client ${shortKey(this.client)} connected from ${this.remoteAddress} (${this.agent || 'no agent'})`);
    this.ctx.changed();
  }

  private async openVault(m: MessageOf<MessageType.OpenVault>): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    const { store, ledger, book } = this.ctx;
    const refuse = (code: ErrorCode, message: string): void => this.sendError(code, message, m.requestId, m.vaultId);
    if (m.vaultId.equals(NO_VAULT)) {
      throw new ProtocolViolation('OpenVault of the all-zero vault id, which means "no vault" in errors: a vault id is random', { requestId: m.requestId });
    }
    await book.exclusive(vaultId, async () => {
      // This client's vault is kept under its owner-scoped id, or, stored by an earlier version,
      // under the plain id (storage/vaultScope.ts).
      let stored: string;
      try {
        stored = (await store.getVault(vaultId))?.owner === this.client ? vaultId : scopedVaultId(this.client, vaultId);
      } catch (err) {
        return this.storageError(err, m.requestId, m.vaultId, 0n);
      }
      const known = book.get(stored);
      if (known && known.owner !== this.client) return refuse(ErrorCode.UnknownVault, unknownVaultMessage(vaultId));
      if (known && known.pending > 0 && !(await book.idle(known, 30_000))) {
        return refuse(ErrorCode.TooBusy, `appends to vault ${vaultId} are still being made durable; try again`);
      }
      let v: StoredVault | null;
      try {
        v = await store.getVault(stored);
        if (v === null) {
          if (m.identity.length === 0) return refuse(ErrorCode.UnknownVault, unknownVaultMessage(vaultId));
          checkIdentity(m.identity, vaultId, m.requestId, m.vaultId);
          const verdict = ledger.reserveVault(this.client);
          if (!verdict.ok) return refuse(ErrorCode.QuotaExceeded, `cannot create vault ${vaultId}: ${verdict.reason}`);
          try {
            v = await store.createVault(this.client, stored, Buffer.from(m.identity));
          } finally {
            ledger.settleVault(this.client);
          }
          this.ctx.log(`client ${shortKey(this.client)} created vault ${vaultId}`);
        } else if (v.owner !== this.client) {
          return refuse(ErrorCode.UnknownVault, unknownVaultMessage(vaultId));
        } else if (m.identity.length > 0 && !m.identity.equals(v.identity)) {
          return refuse(
            ErrorCode.IdentityMismatch,
            `vault ${vaultId} on this server has another identity (VAULT.json) than the one sent: it is not the same vault, or its VAULT.json was changed`,
          );
        }
      } catch (err) {
        if (err instanceof ProtocolViolation) throw err;
        return this.storageError(err, m.requestId, m.vaultId, 0n);
      }
      let entry = this.opened.get(vaultId);
      if (entry) this.ctx.book.detach(entry);
      entry = book.attach(v);
      this.opened.set(vaultId, entry);
      this.counters.opens++;
      this.sendVaultState(m.requestId, m.vaultId, v);
      this.ctx.changed();
    });
  }

  private append(m: MessageOf<MessageType.Append>): void {
    const { seq, bytes, generation } = m.record;
    const vaultId = m.vaultId.toString('hex');
    const entry = this.opened.get(vaultId);
    const refuse = (code: ErrorCode, message: string, errorSeq = seq): void => this.refuseAppend(m.vaultId, seq, { ok: false, code, message, seq: errorSeq });
    if (!entry) return refuse(ErrorCode.UnknownVault, notOpenMessage(vaultId));
    let sealedLength: number;
    try {
      const header = decodeHeader(bytes);
      if (header.seq !== seq) throw new Error(`its header says seq ${header.seq}`);
      sealedLength = header.sealedLength;
    } catch (err) {
      throw new ProtocolViolation(`Append of seq ${seq} to vault ${vaultId}: not a valid lnbackup record (${(err as Error).message})`, {
        vaultId: m.vaultId,
        seq,
      });
    }
    if (HEADER_BYTES + sealedLength !== bytes.length) {
      throw new ProtocolViolation(
        `Append of seq ${seq} to vault ${vaultId}: the record is ${bytes.length} bytes but its header says ${HEADER_BYTES + sealedLength}`,
        { vaultId: m.vaultId, seq },
      );
    }
    if (generation < 1 || generation > MAX_GENERATION) {
      throw new ProtocolViolation(`Append of seq ${seq} to vault ${vaultId}: generation ${generation} is not from 1 to ${MAX_GENERATION}`, {
        vaultId: m.vaultId,
        seq,
      });
    }
    const { maxPendingAppends, maxPendingBytes } = this.ctx.limits;
    if (this.storing >= maxPendingAppends || (this.storing > 0 && this.inflightBytes + bytes.length > maxPendingBytes)) {
      return refuse(
        ErrorCode.TooBusy,
        `${this.storing} appends (${this.inflightBytes} bytes) on this connection are not durable yet (at most ${maxPendingAppends} / ${maxPendingBytes} bytes): wait for their acks, then send seq ${seq} again`,
      );
    }
    if (entry.failed) {
      return refuse(ErrorCode.StorageUnavailable, `an earlier append to vault ${vaultId} failed: reconnect and resume from VaultState`);
    }
    // A vault that holds no record takes any first seq up to MAX_FIRST_SEQ: a node whose own vault
    // was pruned (its first record starts a generation) is copied from its first kept record.
    if (entry.lastSeq === 0n ? seq < 1n || seq > MAX_FIRST_SEQ : seq > MAX_SEQ) {
      throw new ProtocolViolation(
        `Append of seq ${seq} to vault ${vaultId}: ${entry.lastSeq === 0n ? `a vault's first record has a seq from 1 to ${MAX_FIRST_SEQ}` : `seq ${MAX_SEQ} is the largest a vault holds`}`,
        { vaultId: m.vaultId, seq },
      );
    }
    if (entry.lastSeq !== 0n && seq !== entry.lastSeq + 1n) {
      return refuse(
        ErrorCode.OutOfOrder,
        `Append of seq ${seq} does not follow the last record of vault ${vaultId} on this server (${entry.lastSeq}); nothing was stored: send seq ${entry.lastSeq + 1n}`,
        entry.lastSeq,
      );
    }
    if (generation < entry.lastGeneration) {
      throw new ProtocolViolation(
        `Append of seq ${seq} to vault ${vaultId}: generation ${generation} is older than the vault's generation ${entry.lastGeneration}`,
        { vaultId: m.vaultId, seq },
      );
    }
    const verdict = this.ctx.ledger.reserveBytes(this.client, bytes.length);
    if (!verdict.ok) return refuse(ErrorCode.QuotaExceeded, `seq ${seq} not stored: ${verdict.reason}`);
    if (!this.ctx.budget.takeSmall(bytes.length)) {
      this.ctx.ledger.releaseBytes(this.client, bytes.length);
      return refuse(
        ErrorCode.TooBusy,
        `the server is too busy: its memory budget for records not yet durable is spent; wait for the acks, then send seq ${seq} again`,
      );
    }
    entry.lastSeq = seq;
    entry.lastGeneration = generation;
    entry.pending++;
    const p: PendingAppend = { vaultId: m.vaultId, entry, seq, bytes: bytes.length, epoch: entry.epoch, startedAt: Date.now(), outcome: null };
    this.inflight.push(p);
    this.storing++;
    this.inflightBytes += p.bytes;
    const record: WireRecord = { seq, generation, bytes };
    let stored: Promise<void>;
    try {
      stored = this.ctx.store.append(entry.vaultId, [record]);
    } catch (err) {
      stored = Promise.reject(err);
    }
    stored.then(
      () => this.appendDone(p, null),
      (err: unknown) => this.appendDone(p, err instanceof Error ? err : new Error(String(err))),
    );
  }

  /** Answers an Append refused before the store: at once, or after the answers of earlier Appends. */
  private refuseAppend(vaultId: Buffer, seq: bigint, outcome: Outcome): void {
    if (this.inflight.length === 0) {
      if (!outcome.ok) this.sendError(outcome.code, outcome.message, 0, vaultId, outcome.seq);
      return;
    }
    if (this.inflight.length >= 2 * this.ctx.limits.maxPendingAppends + 64) {
      this.violation(ErrorCode.TooBusy, `more than ${this.inflight.length} appends sent without waiting for their answers`);
      return;
    }
    this.inflight.push({ vaultId, entry: null, seq, bytes: 0, epoch: 0, startedAt: 0, outcome });
  }

  private appendDone(p: PendingAppend, err: Error | null): void {
    const entry = p.entry!;
    const durable = err === null;
    if (durable && entry.epoch === p.epoch) {
      p.outcome = { ok: true };
      this.ctx.appended(1, p.bytes, Date.now() - p.startedAt);
    } else {
      // The first failure of the vault stops every append handed over before it from being
      // acknowledged (even one the store still completes): the client resumes from VaultState.
      const first = err !== null && entry.epoch === p.epoch;
      if (first) {
        entry.epoch++;
        entry.failed = true;
        this.ctx.log(`vault ${p.vaultId.toString('hex')} of client ${shortKey(this.client)}: append of seq ${p.seq} failed: ${err.message}`);
      }
      p.outcome = {
        ok: false,
        code: !first || err instanceof StorageUnavailableError ? ErrorCode.StorageUnavailable : ErrorCode.Internal,
        message: first
          ? `seq ${p.seq} could not be made durable (${err.message}): reconnect and resume from VaultState`
          : `an earlier append to vault ${p.vaultId.toString('hex')} failed, so seq ${p.seq} is not acknowledged: reconnect and resume from VaultState`,
        seq: p.seq,
      };
    }
    this.ctx.ledger.releaseBytes(this.client, p.bytes);
    this.ctx.budget.give(p.bytes);
    this.ctx.book.settled(entry);
    this.flushAcks();
  }

  /** Sends the outcome of every settled append at the head of the queue, in arrival order. */
  private flushAcks(): void {
    let acked = false;
    while (this.inflight.length > 0 && this.inflight[0].outcome !== null) {
      const p = this.inflight.shift()!;
      if (p.entry) {
        this.storing--;
        this.inflightBytes -= p.bytes;
      }
      const outcome = p.outcome!;
      if (outcome.ok) {
        if (this.state === 'closing' || this.state === 'closed') continue;
        this.counters.records++;
        this.counters.bytes += p.bytes;
        this.send({ type: MessageType.Ack, vaultId: p.vaultId, seq: p.seq });
        acked = true;
      } else {
        this.sendError(outcome.code, outcome.message, 0, p.vaultId, outcome.seq);
      }
    }
    if (acked) this.ctx.changed();
    this.checkDrained();
  }

  private async readRecords(m: MessageOf<MessageType.ReadRecords>): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    if (!this.opened.has(vaultId)) return this.sendError(ErrorCode.UnknownVault, notOpenMessage(vaultId), m.requestId, m.vaultId);
    if (!(await this.outputRoom())) return;
    const { maxMessageBytes } = this.ctx.limits;
    const budget = Math.max(1, Math.min(m.maxBytes, maxMessageBytes - READ_OVERHEAD_BYTES));
    const stored = this.stored(vaultId);
    return this.chargedReply(budget, m.requestId, m.vaultId, () => this.readRecordsUpTo(m, stored, budget));
  }

  private async readRecordsUpTo(m: MessageOf<MessageType.ReadRecords>, stored: string, budget: number): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    const { maxMessageBytes } = this.ctx.limits;
    let lastSeq: bigint;
    let found: { seq: bigint; generation: number; bytes: Buffer }[];
    try {
      const v = await this.ctx.store.getVault(stored);
      lastSeq = v?.lastSeq ?? 0n;
      found = await this.ctx.store.readRecords(stored, m.fromSeq, budget);
    } catch (err) {
      return this.storageError(err, m.requestId, m.vaultId, m.fromSeq);
    }
    const records: WireRecord[] = [];
    let total = 0;
    for (const r of found) {
      const size = r.bytes.length + RECORD_FRAMING_BYTES;
      if (records.length > 0 && (total + size > budget || records.length >= MAX_RECORDS_PER_MESSAGE)) break;
      if (records.length === 0 && size > maxMessageBytes - READ_OVERHEAD_BYTES) {
        return this.sendError(
          ErrorCode.Internal,
          `record ${r.seq} of vault ${vaultId} is ${r.bytes.length} bytes, more than this server's message limit of ${maxMessageBytes} allows: restart the server with a larger limit to read it`,
          m.requestId,
          m.vaultId,
          r.seq,
        );
      }
      records.push({ seq: r.seq, generation: r.generation, bytes: r.bytes });
      total += size;
    }
    const done = records.length === 0 || records[records.length - 1].seq >= lastSeq;
    this.send({ type: MessageType.Records, requestId: m.requestId, vaultId: m.vaultId, done, records });
  }

  private async listVaults(m: MessageOf<MessageType.ListVaults>): Promise<void> {
    let vaults: StoredVault[];
    try {
      vaults = await this.ctx.store.listVaults(this.client);
    } catch (err) {
      return this.storageError(err, m.requestId, NO_VAULT, 0n);
    }
    this.send({
      type: MessageType.VaultList,
      requestId: m.requestId,
      vaults: vaults
        .filter((v) => v.owner === this.client)
        .slice(0, MAX_VAULTS_PER_LIST)
        .map((v) => ({
          vaultId: Buffer.from(envelopeVaultId(v.identity) ?? v.vaultId, 'hex'),
          firstSeq: v.firstSeq,
          lastSeq: v.lastSeq,
          bytes: BigInt(v.bytes),
          lastWriteAt: BigInt(v.lastWriteAt ?? 0),
        })),
    });
  }

  // -- page packs and retention ----------------------------------------------------------------

  /** One piece of a pack; the last one has the whole pack written and answered once durable. */
  private async putPack(m: MessageOf<MessageType.PutPack>): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    if (!this.opened.has(vaultId)) {
      this.abortUpload();
      return this.sendError(ErrorCode.UnknownVault, notOpenMessage(vaultId), m.requestId, m.vaultId);
    }
    if (!isPackName(m.name)) {
      throw new ProtocolViolation(`PutPack for vault ${vaultId}: ${JSON.stringify(m.name)} is not a pack name (p-<32 hex digits>.pack)`, {
        requestId: m.requestId,
        vaultId: m.vaultId,
      });
    }
    let u = this.upload;
    if (m.offset === 0) {
      this.abortUpload();
      const begun = PackUpload.begin(
        { vaultId, stored: this.stored(vaultId), name: m.name, totalBytes: m.totalBytes },
        this.client,
        this.ctx.ledger,
        this.ctx.budget,
      );
      if (!(begun instanceof PackUpload)) return this.sendError(ErrorCode.QuotaExceeded, `pack ${m.name} not stored: ${begun.reason}`, m.requestId, m.vaultId);
      u = this.upload = begun;
    } else if (!u || !u.continuedBy(vaultId, m.name, m.totalBytes, m.offset)) {
      const have = u && u.vaultId === vaultId && u.name === m.name ? u.received : 0;
      return this.sendError(
        ErrorCode.OutOfOrder,
        `PutPack of ${m.name} at byte ${m.offset} does not continue what this connection received of it (${have} bytes): send the pack again from byte 0`,
        m.requestId,
        m.vaultId,
        BigInt(have),
      );
    }
    if (!u.add(m.bytes)) {
      this.abortUpload();
      return this.sendError(
        ErrorCode.TooBusy,
        `the server is too busy: its memory budget for packs being received is spent; send pack ${m.name} again from byte 0 later`,
        m.requestId,
        m.vaultId,
      );
    }
    if (!u.whole) {
      this.send({ type: MessageType.PackStored, requestId: m.requestId, received: u.received });
      return;
    }
    this.upload = null;
    // One pack written at a time per connection; other messages are handled meanwhile.
    if (this.packWrite) await this.packWrite;
    this.packWrite = this.writePack(u, u.bytes(), m.requestId, m.vaultId).finally(() => {
      this.packWrite = null;
      this.checkDrained();
    });
  }

  private async writePack(u: PackUpload, bytes: Buffer, requestId: number, vaultIdBytes: Buffer): Promise<void> {
    try {
      await this.ctx.store.putPack(u.stored, u.name, bytes);
    } catch (err) {
      if (err instanceof PackConflictError) return this.sendError(ErrorCode.PackConflict, err.message, requestId, vaultIdBytes);
      return this.storageError(err, requestId, vaultIdBytes, 0n);
    } finally {
      // Stored (the store counts it now), held already, or not stored.
      u.release();
    }
    this.send({ type: MessageType.PackStored, requestId, received: u.totalBytes });
    this.ctx.changed();
  }

  /** Forgets a pack being received (its quota reservation and memory too). */
  private abortUpload(): void {
    this.upload?.release();
    this.upload = null;
  }

  private async listPacks(m: MessageOf<MessageType.ListPacks>): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    if (!this.opened.has(vaultId)) return this.sendError(ErrorCode.UnknownVault, notOpenMessage(vaultId), m.requestId, m.vaultId);
    if (!(await this.outputRoom())) return;
    let all: StoredPack[];
    try {
      all = await this.ctx.store.listPacks(this.stored(vaultId));
    } catch (err) {
      return this.storageError(err, m.requestId, m.vaultId, 0n);
    }
    const after = all.filter((p) => p.name > m.after).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const packs = after.slice(0, MAX_PACKS_PER_MESSAGE).map((p) => ({ name: p.name, bytes: p.bytes }));
    this.send({ type: MessageType.PackList, requestId: m.requestId, done: packs.length === after.length, packs });
  }

  private async readPack(m: MessageOf<MessageType.ReadPack>): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    if (!this.opened.has(vaultId)) return this.sendError(ErrorCode.UnknownVault, notOpenMessage(vaultId), m.requestId, m.vaultId);
    if (!isPackName(m.name)) {
      throw new ProtocolViolation(`ReadPack for vault ${vaultId}: ${JSON.stringify(m.name)} is not a pack name`, {
        requestId: m.requestId,
        vaultId: m.vaultId,
      });
    }
    if (!(await this.outputRoom())) return;
    const budget = Math.max(1, Math.min(m.maxBytes, MAX_PACK_CHUNK_BYTES, this.ctx.limits.maxMessageBytes - READ_OVERHEAD_BYTES));
    const stored = this.stored(vaultId);
    return this.chargedReply(budget, m.requestId, m.vaultId, () => this.readPackUpTo(m, stored, budget));
  }

  private async readPackUpTo(m: MessageOf<MessageType.ReadPack>, stored: string, budget: number): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    let piece;
    try {
      piece = await this.ctx.store.readPack(stored, m.name, m.offset, budget);
    } catch (err) {
      return this.storageError(err, m.requestId, m.vaultId, 0n);
    }
    if (piece === null) return this.sendError(ErrorCode.UnknownPack, `vault ${vaultId} holds no pack ${m.name}`, m.requestId, m.vaultId);
    if (m.offset > piece.totalBytes) {
      throw new ProtocolViolation(`ReadPack of ${m.name} from byte ${m.offset}, past its end (${piece.totalBytes} bytes)`, {
        requestId: m.requestId,
        vaultId: m.vaultId,
      });
    }
    this.send({ type: MessageType.PackData, requestId: m.requestId, totalBytes: piece.totalBytes, offset: m.offset, bytes: piece.bytes });
  }

  private async deletePacks(m: MessageOf<MessageType.DeletePacks>): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    if (!this.opened.has(vaultId)) return this.sendError(ErrorCode.UnknownVault, notOpenMessage(vaultId), m.requestId, m.vaultId);
    const bad = m.names.find((n) => !isPackName(n));
    if (bad !== undefined) {
      throw new ProtocolViolation(`DeletePacks for vault ${vaultId}: ${JSON.stringify(bad)} is not a pack name`, {
        requestId: m.requestId,
        vaultId: m.vaultId,
      });
    }
    let freed: number;
    try {
      freed = await this.ctx.store.deletePacks(this.stored(vaultId), m.names);
    } catch (err) {
      return this.storageError(err, m.requestId, m.vaultId, 0n);
    }
    if (freed > 0) this.ctx.log(`client ${shortKey(this.client)}: vault ${vaultId}: removed ${m.names.length} pack name(s), ${freed} bytes`);
    this.send({ type: MessageType.PacksDeleted, requestId: m.requestId });
    this.ctx.changed();
  }

  private async prune(m: MessageOf<MessageType.Prune>): Promise<void> {
    const vaultId = m.vaultId.toString('hex');
    if (!this.opened.has(vaultId)) return this.sendError(ErrorCode.UnknownVault, notOpenMessage(vaultId), m.requestId, m.vaultId);
    let v;
    try {
      v = await this.ctx.store.prune(this.stored(vaultId), m.keepFromGeneration);
    } catch (err) {
      return this.storageError(err, m.requestId, m.vaultId, 0n);
    }
    if (v.removedBytes > 0) {
      this.ctx.log(
        `client ${shortKey(this.client)}: vault ${vaultId}: removed the generations below ${m.keepFromGeneration} (${v.removedBytes} bytes); it now holds records ${v.firstSeq}..${v.lastSeq}`,
      );
    }
    this.sendVaultState(m.requestId, m.vaultId, v);
    this.ctx.changed();
  }

  private sendVaultState(requestId: number, vaultId: Buffer, v: StoredVault): void {
    this.send({
      type: MessageType.VaultState,
      requestId,
      vaultId,
      firstSeq: v.firstSeq,
      lastSeq: v.lastSeq,
      lastHash: v.lastHash ?? NO_HASH,
      lastGeneration: v.lastGeneration,
      bytes: BigInt(v.bytes),
      identity: v.identity,
    });
  }

  private stoppingReply(requestId: number, vaultId: Buffer): void {
    this.sendError(ErrorCode.TooBusy, 'the server is stopping: reconnect later', requestId, vaultId);
  }

  // -- output ----------------------------------------------------------------------------------

  private send(m: Message): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    if (this.conn.bufferedBytes > this.maxOutputBytes) {
      this.ctx.log(`client ${shortKey(this.client)} does not read its replies (${this.conn.bufferedBytes} bytes waiting): connection cut`, 'violation');
      this.destroy();
      return;
    }
    try {
      this.conn.send(encodeMessage(m));
    } catch (err) {
      this.ctx.log(`client ${shortKey(this.client)}: cannot send ${messageName(m.type)}: ${(err as Error).message}`);
      this.destroy();
    }
  }

  private sendError(code: ErrorCode, message: string, requestId = 0, vaultId: Buffer = NO_VAULT, seq = 0n): void {
    this.send({ type: MessageType.Error, code, requestId, vaultId, seq, message });
  }

  private storageError(err: unknown, requestId: number, vaultId: Buffer, seq: bigint): void {
    const message = err instanceof Error ? err.message : String(err);
    this.ctx.log(`client ${shortKey(this.client)}: storage error: ${message}`);
    const code = err instanceof StorageUnavailableError ? ErrorCode.StorageUnavailable : ErrorCode.Internal;
    this.sendError(code, `the server's storage failed (${message}); try again later`, requestId, vaultId, seq);
  }

  /**
   * Runs a read whose reply holds up to `bytes`, charged to the memory budget until the reply is
   * handed to the kernel; TooBusy when the budget is spent.
   */
  private async chargedReply(bytes: number, requestId: number, vaultId: Buffer, read: () => Promise<void>): Promise<void> {
    if (!this.ctx.budget.take(bytes)) {
      return this.sendError(ErrorCode.TooBusy, `the server is too busy: its memory budget for replies is spent; ask again later`, requestId, vaultId);
    }
    try {
      await read();
    } finally {
      void this.conn.drained().then(() => this.ctx.budget.give(bytes));
    }
  }

  /**
   * Waits until the client has read most of what was sent to it; false if the session ended first.
   * A client that reads nothing for the idle timeout is cut.
   */
  private async outputRoom(): Promise<boolean> {
    const deadline = Date.now() + this.ctx.limits.idleTimeoutMs;
    while (this.conn.bufferedBytes > this.ctx.limits.maxMessageBytes) {
      if (this.state !== 'ready' || this.stopping) return false;
      if (Date.now() > deadline) {
        this.ctx.log(
          `client ${shortKey(this.client)} read none of its replies for ${Math.round(this.ctx.limits.idleTimeoutMs / 1000)} s: connection cut`,
          'violation',
        );
        this.destroy();
        return false;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return this.state === 'ready';
  }

  /** Sends an error that ends the conversation, then closes. */
  private violation(code: ErrorCode, message: string, requestId = 0, vaultId: Buffer = NO_VAULT, seq = 0n): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    if (code === ErrorCode.BadMessage || code === ErrorCode.TooBusy || code === ErrorCode.Internal) {
      this.ctx.log(`client ${shortKey(this.client)} from ${this.remoteAddress}: ${message}; connection closed`, 'violation');
    }
    this.sendError(code, message, requestId, vaultId, seq);
    this.close();
  }

  // -- end -------------------------------------------------------------------------------------

  private onIdle(): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    const quietFor = Date.now() - this.counters.lastActivityAt;
    if (this.storing > 0 || this.pumping || this.packWrite !== null || quietFor < this.ctx.limits.idleTimeoutMs) {
      this.idleTimer.refresh();
      return;
    }
    this.ctx.log(`client ${shortKey(this.client)} idle for ${Math.round(quietFor / 1000)} s: connection closed`);
    this.close();
  }

  private dropInbox(): void {
    this.ctx.budget.give(this.inboxBytes);
    this.inbox.length = 0;
    this.inboxBytes = 0;
  }

  /** Ends the connection after what is queued is sent; cut after `graceMs` if the peer does not close. */
  close(graceMs = 5_000): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.state = 'closing';
    this.dropInbox();
    this.conn.close();
    this.destroyTimer = setTimeout(() => this.conn.destroy(), graceMs);
    this.destroyTimer.unref();
  }

  private destroy(): void {
    if (this.state === 'closed') return;
    this.state = 'closing';
    this.conn.destroy();
  }

  private onClosed(error: Error | null): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closeError = error;
    clearTimeout(this.idleTimer);
    if (this.helloTimer) clearTimeout(this.helloTimer);
    if (this.destroyTimer) clearTimeout(this.destroyTimer);
    this.dropInbox();
    this.abortUpload();
    for (const entry of this.opened.values()) this.ctx.book.detach(entry);
    this.opened.clear();
    this.resolveClosed();
    this.checkDrained();
    this.ctx.changed();
  }

  /** Resolves once every received message is handled and every accepted append has its answer. */
  private drained(): Promise<void> {
    return new Promise((resolve) => {
      this.drainWaiters.push(resolve);
      this.checkDrained();
    });
  }

  private checkDrained(): void {
    if (this.drainWaiters.length === 0) return;
    const idle = !this.pumping && this.inbox.length === 0 && this.inflight.length === 0 && this.packWrite === null;
    if (idle || this.state === 'closed') {
      for (const wake of this.drainWaiters.splice(0)) wake();
    }
  }
}

/** The same words for a vault that does not exist and for another client's vault. */
function unknownVaultMessage(vaultId: string): string {
  return `no vault ${vaultId} for this client`;
}

function notOpenMessage(vaultId: string): string {
  return `vault ${vaultId} is not open on this connection: send OpenVault first`;
}

/** A new vault's identity must be the node's VAULT.json for that very vault id. */
function checkIdentity(identity: Buffer, vaultId: string, requestId: number, vaultIdBytes: Buffer): void {
  const about = { requestId, vaultId: vaultIdBytes };
  let parsed: unknown;
  try {
    parsed = JSON.parse(identity.toString('utf8'));
  } catch (err) {
    throw new ProtocolViolation(`OpenVault for ${vaultId}: the identity is not JSON (${(err as Error).message})`, about);
  }
  const id = parsed as { format?: unknown; vaultId?: unknown } | null;
  if (id === null || typeof id !== 'object' || id.format !== 'lnbackup-vault') {
    throw new ProtocolViolation(`OpenVault for ${vaultId}: the identity is not an lnbackup VAULT.json (format 'lnbackup-vault' expected)`, about);
  }
  if (id.vaultId !== vaultId) {
    throw new ProtocolViolation(`OpenVault for ${vaultId}: the identity is that of vault ${JSON.stringify(String(id.vaultId).slice(0, 64))}`, about);
  }
}
