// One authenticated connection from a node to an lnbackup server: the encrypted transport with the
// server's key pinned from its URL, the Hello/Welcome exchange, requests matched to their answers by
// request id (OpenVault, ReadRecords, ListVaults, the page-pack requests, Prune), and appends sent
// without waiting (their Acks and
// Errors go to handlers). A watchdog pings a quiet server and cuts a connection on which nothing at
// all arrives (and nothing queued drains) while something is outstanding, so a black-holed TCP
// connection never stalls the node.
import {
  DecodeError,
  ErrorCode,
  MAX_PACK_BYTES,
  MAX_PACK_CHUNK_BYTES,
  MAX_PACK_NAME_BYTES,
  MAX_PACKS_PER_MESSAGE,
  MAX_RECORD_BYTES,
  MessageType,
  PROTOCOL_VERSION,
  decodeMessage,
  encodeMessage,
  messageName,
  type Message,
  type MessageOf,
  type PackSummary,
  type VaultSummary,
  type WireRecord,
} from '../protocol/messages.js';
import { SecureConnection, TransportError } from '../transport/connection.js';
import { privateKeyFromSeed, publicKeyOf } from '../transport/keys.js';
import { parseRemoteUrl, type RemoteAddress } from './remoteUrl.js';
import type { ServerConnection } from './serverConnection.js';

export const CLIENT_AGENT = 'lnbackup-cln/0.1.0';
/** The largest message this client takes: a page of records, or one record of the largest size. */
const MAX_MESSAGE_BYTES = MAX_RECORD_BYTES + 1024 * 1024;
/** Room for a PutPack's other fields in a message. */
const PUT_PACK_OVERHEAD = 1024;
/** Packs a listing may hold in all (a bound against a server that never says done). */
export const MAX_PACKS_LISTED = 1_000_000;

export interface ServerClientOptions {
  /** For the transport handshake, and again for Hello/Welcome (default 10 s). */
  readonly handshakeTimeoutMs?: number;
  /** Send a Ping when nothing was received for this long (default 5 s). */
  readonly pingAfterMs?: number;
  /** Cut the connection when nothing at all arrived for this long while something is outstanding (default 15 s). */
  readonly deadAfterMs?: number;
  readonly agent?: string;
}

export type VaultState = MessageOf<MessageType.VaultState>;
export type RecordsPage = MessageOf<MessageType.Records>;
export type Welcome = MessageOf<MessageType.Welcome>;

/** An Error message from the server, with what the operator can do about it. */
export class ServerError extends Error {
  constructor(
    readonly code: ErrorCode,
    /** For OutOfOrder: the server's last seq. */
    readonly seq: bigint,
    message: string,
  ) {
    super(message);
  }
}

/** The server broke the protocol (a message that cannot be decoded, or is not expected now). */
export class ProtocolError extends Error {}

function describeServerError(url: string, clientKey: string, m: MessageOf<MessageType.Error>): string {
  const said = m.message ? ` (the server said: ${m.message})` : '';
  switch (m.code) {
    case ErrorCode.UnsupportedVersion:
      return `${url} speaks no protocol version this node does (it speaks ${PROTOCOL_VERSION})${said}: upgrade lnbackup on the node or on the server`;
    case ErrorCode.NotAllowed:
      return `${url} does not allow this node's transport key ${clientKey}${said}: ask the server's operator to add that key to the server's allow-list (the node prints it, before or after init, with \`lnbackup destination key --hsm-secret <its hsm_secret>\`)`;
    case ErrorCode.UnknownVault:
      return `${url} holds no vault ${m.vaultId.toString('hex')} for this node's key${said}`;
    case ErrorCode.OutOfOrder:
      return `${url} refused an append that does not follow its last record ${m.seq}${said}`;
    case ErrorCode.QuotaExceeded:
      return `${url}: this node's storage quota on the server is full${said}; ask the server's operator to raise it, or use another server`;
    case ErrorCode.StorageUnavailable:
      return `${url} cannot store records right now${said}; nothing was acknowledged`;
    case ErrorCode.TooBusy:
      return `${url} is too busy${said}`;
    case ErrorCode.IdentityMismatch:
      return `${url} holds a vault with this vault id whose identity (VAULT.json) differs from this node's${said}: the server's copy is not this vault`;
    case ErrorCode.BadMessage:
      return `${url} rejected a message from this node as malformed${said}: the server and the node may run incompatible lnbackup versions`;
    case ErrorCode.PackConflict:
      return `${url} holds a page pack of that name with other contents${said}: the server's copy is not this vault's`;
    case ErrorCode.UnknownPack:
      return `${url} does not hold that page pack${said}`;
    default:
      return `${url} reported an internal error (code ${m.code})${said}`;
  }
}

interface Pending {
  readonly expect: MessageType;
  readonly resolve: (m: Message) => void;
  readonly reject: (err: Error) => void;
}

/** Appends sent and acknowledged per vault (acks are cumulative), for the watchdog. */
interface AppendTrack {
  readonly vaultId: Buffer;
  sent: bigint;
  acked: bigint;
}

export class ServerClient implements ServerConnection {
  /** The server's Welcome (its limits). */
  welcome: Welcome | null = null;
  private readonly pending = new Map<number, Pending>();
  private readonly tracks: AppendTrack[] = [];
  private nextRequestId = 1;
  private helloWaiter: Pending | null = null;
  private ackHandler: ((vaultId: Buffer, seq: bigint) => void) | null = null;
  private appendErrorHandler: ((error: ServerError) => void) | null = null;
  private closeHandler: ((error: Error | null) => void) | null = null;
  private closed: { error: Error | null } | null = null;
  private receivedSinceTick = false;
  private lastReceivedAt = Date.now();
  private lastPingAt = 0;
  private pingOutstanding = false;
  /** Bytes queued on the socket at the last tick: a queue that drains shows the server is reading. */
  private lastBuffered = 0;
  private readonly watchdog: NodeJS.Timeout;
  private readonly pingAfterMs: number;
  private readonly deadAfterMs: number;

  private constructor(
    private readonly connection: SecureConnection,
    readonly address: RemoteAddress,
    /** This node's transport public key (hex), for messages to the operator. */
    readonly clientKey: string,
    options: ServerClientOptions,
  ) {
    this.pingAfterMs = options.pingAfterMs ?? 5000;
    this.deadAfterMs = options.deadAfterMs ?? 15_000;
    const tickMs = Math.max(20, Math.min(1000, Math.floor(this.pingAfterMs / 5)));
    this.watchdog = setInterval(() => this.tick(), tickMs);
    this.watchdog.unref();
    connection.onMessage((buf) => this.receive(buf));
    connection.onClose((error) => this.finished(error));
  }

  /** Connects, authenticates both ends (the server's key is pinned by the URL) and agrees on the protocol version. */
  static async connect(url: string | RemoteAddress, transportSeed: Buffer, options: ServerClientOptions = {}): Promise<ServerClient> {
    const address = typeof url === 'string' ? parseRemoteUrl(url) : url;
    const localKey = privateKeyFromSeed(transportSeed);
    const timeoutMs = options.handshakeTimeoutMs ?? 10_000;
    const connection = await SecureConnection.connect(address.host, address.port, localKey, address.publicKey, {
      handshakeTimeoutMs: timeoutMs,
      maxMessageBytes: MAX_MESSAGE_BYTES,
    });
    const client = new ServerClient(connection, address, publicKeyOf(localKey).toString('hex'), options);
    const timer = setTimeout(() => client.destroy(new TransportError(`${address.url} did not answer Hello within ${timeoutMs} ms`)), timeoutMs);
    try {
      const welcome = (await new Promise<Message>((resolve, reject) => {
        if (client.closed !== null) return reject(client.closed.error ?? new TransportError(`${address.url} closed the connection before Hello`));
        client.helloWaiter = { expect: MessageType.Welcome, resolve, reject };
        client.send({ type: MessageType.Hello, versions: [PROTOCOL_VERSION], agent: options.agent ?? CLIENT_AGENT });
      })) as Welcome;
      if (welcome.version !== PROTOCOL_VERSION) {
        throw new ProtocolError(`${address.url} chose protocol version ${welcome.version}, which this node did not offer`);
      }
      client.welcome = welcome;
      return client;
    } catch (err) {
      client.destroy(err as Error);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  get url(): string {
    return this.address.url;
  }

  get isOpen(): boolean {
    return this.closed === null;
  }

  /** Bytes queued on the socket, not yet sent. */
  get bufferedBytes(): number {
    return this.connection.bufferedBytes;
  }

  /** Opens a vault (creating it when `identity` is given and the server has none): its state on the server. */
  openVault(vaultId: Buffer, identity: Buffer): Promise<VaultState> {
    return this.request(MessageType.VaultState, (requestId) => ({ type: MessageType.OpenVault, requestId, vaultId, identity }));
  }

  /** One page of records from `fromSeq` on (at least one if any). */
  readRecords(vaultId: Buffer, fromSeq: bigint, maxBytes: number): Promise<RecordsPage> {
    return this.request(MessageType.Records, (requestId) => ({ type: MessageType.ReadRecords, requestId, vaultId, fromSeq, maxBytes }));
  }

  /** The vaults this node's key owns on the server. */
  async listVaults(): Promise<readonly VaultSummary[]> {
    const list = await this.request(MessageType.VaultList, (requestId) => ({ type: MessageType.ListVaults, requestId }));
    return list.vaults;
  }

  /**
   * Stores a page pack: sent in pieces (each waits for the server's answer); resolves once the
   * server said the whole pack is durable. Rejects with ServerError (PackConflict, QuotaExceeded,
   * StorageUnavailable, ...) or the connection's error.
   */
  async putPack(vaultId: Buffer, name: string, bytes: Buffer): Promise<void> {
    if (bytes.length > MAX_PACK_BYTES) throw new Error(`pack ${name} is ${bytes.length} bytes, more than the ${MAX_PACK_BYTES} a server takes`);
    const limit = this.welcome?.maxMessageBytes ?? MAX_PACK_CHUNK_BYTES;
    const piece = Math.min(MAX_PACK_CHUNK_BYTES, limit - PUT_PACK_OVERHEAD);
    if (piece < 1) throw new Error(`${this.url} takes messages of at most ${limit} bytes, too few for a piece of a pack`);
    let offset = 0;
    do {
      const part = bytes.subarray(offset, offset + piece);
      const at = offset;
      const reply = await this.request(MessageType.PackStored, (requestId) => ({
        type: MessageType.PutPack,
        requestId,
        vaultId,
        name,
        totalBytes: bytes.length,
        offset: at,
        bytes: part,
      }));
      offset += part.length;
      if (reply.received !== offset) {
        throw new ProtocolError(`${this.url} says it holds ${reply.received} bytes of pack ${name} after ${offset} were sent`);
      }
    } while (offset < bytes.length);
  }

  /** Every pack the server holds for the vault, by name (asked a page at a time). */
  async listPacks(vaultId: Buffer): Promise<PackSummary[]> {
    const out: PackSummary[] = [];
    let after = '';
    for (;;) {
      const page = await this.request(MessageType.PackList, (requestId) => ({ type: MessageType.ListPacks, requestId, vaultId, after }));
      for (const p of page.packs) {
        if (p.name <= after || p.name.length > MAX_PACK_NAME_BYTES) {
          throw new ProtocolError(`${this.url} listed pack ${JSON.stringify(p.name.slice(0, 80))} out of order (after ${JSON.stringify(after)})`);
        }
        after = p.name;
        out.push(p);
      }
      if (out.length > MAX_PACKS_LISTED) throw new ProtocolError(`${this.url} lists more than ${MAX_PACKS_LISTED} packs for one vault`);
      if (page.done) return out;
      if (page.packs.length === 0) throw new ProtocolError(`${this.url} sent an empty page of packs that is not the last`);
    }
  }

  /** Up to `maxBytes` of a pack from `offset`. */
  readPack(vaultId: Buffer, name: string, offset: number, maxBytes: number): Promise<MessageOf<MessageType.PackData>> {
    return this.request(MessageType.PackData, (requestId) => ({ type: MessageType.ReadPack, requestId, vaultId, name, offset, maxBytes }));
  }

  /** A whole pack, read in pieces; `expectedBytes` (from the listing) must be its size. */
  async downloadPack(vaultId: Buffer, name: string, expectedBytes?: number): Promise<Buffer> {
    const pieces: Buffer[] = [];
    let offset = 0;
    let total: number | null = null;
    for (;;) {
      const d = await this.readPack(vaultId, name, offset, MAX_PACK_CHUNK_BYTES);
      if (d.offset !== offset) throw new ProtocolError(`${this.url} answered a read of pack ${name} from byte ${offset} with bytes from ${d.offset}`);
      if (total !== null && d.totalBytes !== total) throw new ProtocolError(`${this.url} changed the size of pack ${name} while it was read`);
      total = d.totalBytes;
      if (expectedBytes !== undefined && total !== expectedBytes) {
        throw new ProtocolError(`${this.url} listed pack ${name} as ${expectedBytes} bytes but holds ${total}`);
      }
      pieces.push(Buffer.from(d.bytes));
      offset += d.bytes.length;
      if (offset >= total) break;
      if (d.bytes.length === 0) throw new ProtocolError(`${this.url} sent no bytes of pack ${name} from byte ${offset} of ${total}`);
    }
    return Buffer.concat(pieces, total);
  }

  /** Removes packs of the vault (names absent there are ignored). */
  async deletePacks(vaultId: Buffer, names: readonly string[]): Promise<void> {
    for (let i = 0; i < names.length; i += MAX_PACKS_PER_MESSAGE) {
      const batch = names.slice(i, i + MAX_PACKS_PER_MESSAGE);
      await this.request(MessageType.PacksDeleted, (requestId) => ({ type: MessageType.DeletePacks, requestId, vaultId, names: batch }));
    }
  }

  /** Removes the vault's generations below `keepFromGeneration` (never its newest): its state afterwards. */
  prune(vaultId: Buffer, keepFromGeneration: number): Promise<VaultState> {
    return this.request(MessageType.VaultState, (requestId) => ({ type: MessageType.Prune, requestId, vaultId, keepFromGeneration }));
  }

  /** Sends a record without waiting; its Ack (or Error) goes to the handlers. A no-op once the connection is closing. */
  append(vaultId: Buffer, record: WireRecord): void {
    if (this.closed !== null) return;
    const welcome = this.welcome;
    const message = encodeMessage({ type: MessageType.Append, vaultId, record });
    if (welcome !== null && message.length > welcome.maxMessageBytes) {
      throw new Error(`record ${record.seq} (${record.bytes.length} bytes) is larger than ${this.url} accepts (${welcome.maxMessageBytes} bytes a message)`);
    }
    this.track(vaultId).sent = record.seq;
    this.sendRaw(message);
  }

  /** Every Ack: all of the vault's records up to `seq` are durable on the server. */
  onAck(handler: (vaultId: Buffer, seq: bigint) => void): void {
    this.ackHandler = handler;
  }

  /** Errors that answer no request (appends refused); without a handler they close the connection. */
  onAppendError(handler: (error: ServerError) => void): void {
    this.appendErrorHandler = handler;
  }

  /** Called once when the connection ends: null for a clean close. */
  onClose(handler: (error: Error | null) => void): void {
    this.closeHandler = handler;
    if (this.closed !== null) process.nextTick(handler, this.closed.error);
  }

  /** Sends what is queued, then closes. */
  close(): void {
    this.connection.close();
  }

  destroy(error?: Error): void {
    this.connection.destroy(error);
  }

  private request<T extends MessageType>(expect: T, make: (requestId: number) => Message): Promise<MessageOf<T>> {
    if (this.closed !== null) return Promise.reject(this.closed.error ?? new TransportError(`the connection to ${this.url} is closed`));
    const requestId = this.nextRequestId;
    this.nextRequestId = this.nextRequestId >= 0xffffffff ? 1 : this.nextRequestId + 1;
    return new Promise<MessageOf<T>>((resolve, reject) => {
      this.pending.set(requestId, { expect, resolve: resolve as (m: Message) => void, reject });
      this.send(make(requestId));
    });
  }

  private send(message: Message): void {
    this.sendRaw(encodeMessage(message));
  }

  private sendRaw(message: Buffer): void {
    try {
      this.connection.send(message);
    } catch (err) {
      // The connection is closing; its close handler reports why.
      this.connection.destroy(err as Error);
    }
  }

  private track(vaultId: Buffer): AppendTrack {
    for (const t of this.tracks) if (t.vaultId.equals(vaultId)) return t;
    const t: AppendTrack = { vaultId: Buffer.from(vaultId), sent: 0n, acked: 0n };
    this.tracks.push(t);
    return t;
  }

  private receive(buf: Buffer): void {
    this.receivedSinceTick = true;
    this.pingOutstanding = false;
    let m: Message;
    try {
      m = decodeMessage(buf);
    } catch (err) {
      if (!(err instanceof DecodeError)) throw err;
      this.destroy(
        new ProtocolError(`${this.url} sent a message this node cannot decode (${err.message}): the server is faulty or runs an incompatible version`),
      );
      return;
    }
    switch (m.type) {
      case MessageType.Ack: {
        const t = this.track(m.vaultId);
        if (m.seq > t.acked) t.acked = m.seq;
        this.ackHandler?.(m.vaultId, m.seq);
        return;
      }
      case MessageType.Ping:
        this.send({ type: MessageType.Pong, nonce: m.nonce });
        return;
      case MessageType.Pong:
        return;
      case MessageType.Welcome:
        return this.answer(this.helloWaiter, m, () => (this.helloWaiter = null));
      case MessageType.VaultState:
      case MessageType.Records:
      case MessageType.VaultList:
      case MessageType.PackStored:
      case MessageType.PackList:
      case MessageType.PackData:
      case MessageType.PacksDeleted:
        return this.answer(this.pending.get(m.requestId), m, () => this.pending.delete(m.requestId));
      case MessageType.Error:
        return this.serverError(m);
      default:
        this.destroy(new ProtocolError(`${this.url} sent a ${messageName(m.type)} message, which a server never sends`));
    }
  }

  private answer(waiter: Pending | null | undefined, m: Message, done: () => void): void {
    if (!waiter || waiter.expect !== m.type) {
      this.destroy(new ProtocolError(`${this.url} sent a ${messageName(m.type)} message that answers no request of this node`));
      return;
    }
    done();
    waiter.resolve(m);
  }

  private serverError(m: MessageOf<MessageType.Error>): void {
    const error = new ServerError(m.code, m.seq, describeServerError(this.url, this.clientKey, m));
    const request = m.requestId !== 0 ? this.pending.get(m.requestId) : undefined;
    if (request) {
      this.pending.delete(m.requestId);
      request.reject(error);
    } else if (this.helloWaiter) {
      const waiter = this.helloWaiter;
      this.helloWaiter = null;
      waiter.reject(error);
    } else if (this.appendErrorHandler) {
      this.appendErrorHandler(error);
    } else {
      this.destroy(error);
    }
  }

  /** Something is awaited from the server: an answer, an ack or a pong. */
  private outstanding(): boolean {
    if (this.pending.size > 0 || this.helloWaiter !== null || this.pingOutstanding) return true;
    for (const t of this.tracks) if (t.sent > t.acked) return true;
    return false;
  }

  private tick(): void {
    const now = Date.now();
    const buffered = this.connection.bufferedBytes;
    // A large message on a slow link is answered only once all of it arrived: while the socket's
    // queue drains, the server is reading, and the connection is alive.
    if (this.receivedSinceTick || buffered < this.lastBuffered) {
      this.receivedSinceTick = false;
      this.lastReceivedAt = now;
    }
    this.lastBuffered = buffered;
    const quiet = now - this.lastReceivedAt;
    if (quiet >= this.deadAfterMs && this.outstanding()) {
      this.destroy(
        new TransportError(`nothing arrived from ${this.url} for ${Math.round(quiet / 1000)} s while an answer was awaited: the connection is dead`),
      );
    } else if (quiet >= this.pingAfterMs && now - this.lastPingAt >= this.pingAfterMs) {
      this.lastPingAt = now;
      this.pingOutstanding = true;
      this.send({ type: MessageType.Ping, nonce: BigInt(now) });
    }
  }

  private finished(error: Error | null): void {
    if (this.closed !== null) return;
    this.closed = { error };
    clearInterval(this.watchdog);
    const reason = error ?? new TransportError(`the connection to ${this.url} closed`);
    const waiters = [...this.pending.values(), ...(this.helloWaiter ? [this.helloWaiter] : [])];
    this.pending.clear();
    this.helloWaiter = null;
    for (const w of waiters) w.reject(reason);
    this.closeHandler?.(error);
  }
}
