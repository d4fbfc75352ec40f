// A minimal lnbackup protocol client for the server tests: one SecureConnection, every message it
// receives kept in an inbox, and promises for the replies (Hello, OpenVault, Append, ReadRecords,
// ListVaults) plus raw sends for malformed input. Test vaults hold real sealed records
// (RecordSealer under keys from a random root), so the server sees exactly what a node sends.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SecureConnection, type ConnectionOptions } from '../../src/transport/connection.js';
import { privateKeyFromSeed, publicKeyOf } from '../../src/transport/keys.js';
import { parseRemoteUrl } from '../../src/destinations/remoteUrl.js';
import { decodeMessage, encodeMessage, MessageType, PROTOCOL_VERSION, type Message, type MessageOf } from '../../src/protocol/messages.js';
import { createIdentity, identityPath } from '../../src/vault/identity.js';
import { vaultKeysFromRoot, type VaultKeys } from '../../src/vault/keys.js';
import { RecordSealer, type SealedRecord } from '../../src/vault/sealer.js';
import { genesisHash, RecordType } from '../../src/vault/format.js';
import { encodeWrites } from '../../src/journal/payloads.js';

export type ErrorMessage = MessageOf<MessageType.Error>;
export type Reply<T extends MessageType> = MessageOf<T> | ErrorMessage;

/** A node's side for the tests: keys, a transport key, an identity, and a sealer for real records. */
export class TestVault {
  readonly keys: VaultKeys;
  readonly transportKey: Buffer;
  readonly identity: Buffer;
  readonly vaultId: Buffer;
  readonly sealed: SealedRecord[] = [];
  private readonly sealer: RecordSealer;
  private dataVersion = 0;

  constructor(dir: string, root: Buffer = crypto.randomBytes(32)) {
    fs.mkdirSync(dir, { recursive: true });
    this.keys = vaultKeysFromRoot(root);
    this.transportKey = privateKeyFromSeed(this.keys.transport);
    const id = createIdentity(dir, this.keys, null, 4096);
    this.identity = fs.readFileSync(identityPath(dir));
    this.vaultId = Buffer.from(id.vaultId, 'hex');
    this.sealer = new RecordSealer(this.keys.record, this.vaultId, { lastSeq: 0n, lastHash: genesisHash(this.vaultId), generation: 1 });
  }

  get clientPublicKey(): Buffer {
    return publicKeyOf(this.transportKey);
  }

  /** Seals the next record: a Writes record of about `payloadBytes` bytes of SQL, in `generation`. */
  next(payloadBytes = 200, generation = 1): SealedRecord {
    this.dataVersion++;
    const sql = `UPDATE vars SET intval = ${this.dataVersion} WHERE name = '${'x'.repeat(Math.max(0, payloadBytes - 60))}'`;
    const r = this.sealer.seal({ type: RecordType.Writes, generation, dataVersion: this.dataVersion, supersedes: 0n, payload: encodeWrites([sql]) });
    this.sealed.push(r);
    return r;
  }
}

export function testVault(parent: string, name: string): TestVault {
  return new TestVault(path.join(parent, name));
}

export class RawClient {
  /** Every message received and not yet taken by a wait. */
  readonly inbox: Message[] = [];
  /** Resolves with the close error (null for a clean close). */
  readonly closed: Promise<Error | null>;
  isClosed = false;
  private waiters: { match: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];
  private closeWaiters: ((e: Error) => void)[] = [];
  private nextRequestId = 1;

  private constructor(readonly conn: SecureConnection) {
    conn.onMessage((buf) => {
      let m: Message;
      try {
        m = decodeMessage(buf);
      } catch (err) {
        conn.destroy(err as Error);
        return;
      }
      const i = this.waiters.findIndex((w) => w.match(m));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m);
      else this.inbox.push(m);
    });
    this.closed = new Promise((resolve) =>
      conn.onClose((err) => {
        this.isClosed = true;
        for (const w of this.closeWaiters.splice(0)) w(new Error(`connection closed${err ? `: ${err.message}` : ''}`));
        resolve(err);
      }),
    );
  }

  static async connect(url: string, clientKey: Buffer, options: ConnectionOptions = {}): Promise<RawClient> {
    const a = parseRemoteUrl(url);
    return new RawClient(await SecureConnection.connect(a.host, a.port, clientKey, a.publicKey, options));
  }

  /** Connects and says Hello; throws unless Welcome comes back. */
  static async ready(url: string, clientKey: Buffer, options: ConnectionOptions = {}): Promise<RawClient> {
    const c = await RawClient.connect(url, clientKey, options);
    const w = await c.hello();
    if (w.type !== MessageType.Welcome) throw new Error(`Hello refused: ${w.message}`);
    return c;
  }

  send(m: Message): void {
    this.conn.send(encodeMessage(m));
  }

  sendRaw(buf: Buffer): void {
    this.conn.send(buf);
  }

  /** The first message (in the inbox or still to come) that matches. */
  waitFor(match: (m: Message) => boolean, timeoutMs = 30_000, what = 'a message'): Promise<Message> {
    const i = this.inbox.findIndex(match);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0]);
    if (this.isClosed) return Promise.reject(new Error(`connection closed while waiting for ${what}`));
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (m: Message) => {
          clearTimeout(timer);
          resolve(m);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiters.push(waiter);
      this.closeWaiters.push((e) => {
        clearTimeout(timer);
        reject(new Error(`${e.message} while waiting for ${what}`));
      });
    });
  }

  /** The next Error message of any kind. */
  nextError(timeoutMs = 30_000): Promise<ErrorMessage> {
    return this.waitFor((m) => m.type === MessageType.Error, timeoutMs, 'an Error') as Promise<ErrorMessage>;
  }

  async hello(versions: number[] = [PROTOCOL_VERSION]): Promise<Reply<MessageType.Welcome>> {
    this.send({ type: MessageType.Hello, versions, agent: 'lnbackup-test/0' });
    return (await this.waitFor((m) => m.type === MessageType.Welcome || m.type === MessageType.Error, 30_000, 'Welcome')) as Reply<MessageType.Welcome>;
  }

  private request<T extends MessageType>(build: (requestId: number) => Message, reply: T, what: string): Promise<Reply<T>> {
    const requestId = this.nextRequestId++;
    this.send(build(requestId));
    return this.waitFor((m) => (m.type === reply || m.type === MessageType.Error) && 'requestId' in m && m.requestId === requestId, 30_000, what) as Promise<
      Reply<T>
    >;
  }

  openVault(vaultId: Buffer, identity: Buffer = Buffer.alloc(0)): Promise<Reply<MessageType.VaultState>> {
    return this.request((requestId) => ({ type: MessageType.OpenVault, requestId, vaultId, identity }), MessageType.VaultState, 'VaultState');
  }

  read(vaultId: Buffer, fromSeq = 1n, maxBytes = 1 << 20): Promise<Reply<MessageType.Records>> {
    return this.request((requestId) => ({ type: MessageType.ReadRecords, requestId, vaultId, fromSeq, maxBytes }), MessageType.Records, 'Records');
  }

  /** Every record from `fromSeq` on, over as many ReadRecords as needed. */
  async readAll(vaultId: Buffer, fromSeq = 1n): Promise<MessageOf<MessageType.Records>['records'][number][]> {
    const out: MessageOf<MessageType.Records>['records'][number][] = [];
    for (let from = fromSeq; ;) {
      const r = await this.read(vaultId, from);
      if (r.type === MessageType.Error) throw new Error(`ReadRecords refused: ${r.message}`);
      out.push(...r.records);
      if (r.done || r.records.length === 0) return out;
      from = r.records[r.records.length - 1].seq + 1n;
    }
  }

  list(): Promise<Reply<MessageType.VaultList>> {
    return this.request((requestId) => ({ type: MessageType.ListVaults, requestId }), MessageType.VaultList, 'VaultList');
  }

  /** One PutPack piece; the answer is PackStored (or an Error) for it. */
  putPackPiece(vaultId: Buffer, name: string, totalBytes: number, offset: number, bytes: Buffer): Promise<Reply<MessageType.PackStored>> {
    return this.request(
      (requestId) => ({ type: MessageType.PutPack, requestId, vaultId, name, totalBytes, offset, bytes }),
      MessageType.PackStored,
      'PackStored',
    );
  }

  deletePacks(vaultId: Buffer, names: string[]): Promise<Reply<MessageType.PacksDeleted>> {
    return this.request((requestId) => ({ type: MessageType.DeletePacks, requestId, vaultId, names }), MessageType.PacksDeleted, 'PacksDeleted');
  }

  prune(vaultId: Buffer, keepFromGeneration: number): Promise<Reply<MessageType.VaultState>> {
    return this.request((requestId) => ({ type: MessageType.Prune, requestId, vaultId, keepFromGeneration }), MessageType.VaultState, 'VaultState');
  }

  /** Sends an Append without waiting. */
  appendNoWait(vaultId: Buffer, r: { seq: bigint; generation: number; bytes: Buffer }): void {
    this.send({ type: MessageType.Append, vaultId, record: { seq: r.seq, generation: r.generation, bytes: r.bytes } });
  }

  /** The Ack or Error for this vault and seq (an OutOfOrder error carries the server's last seq instead). */
  answerFor(vaultId: Buffer, seq: bigint, timeoutMs = 30_000): Promise<Reply<MessageType.Ack>> {
    return this.waitFor(
      (m) =>
        (m.type === MessageType.Ack && m.vaultId.equals(vaultId) && m.seq === seq) ||
        (m.type === MessageType.Error && m.vaultId.equals(vaultId) && (m.seq === seq || m.requestId === 0)),
      timeoutMs,
      `the answer to seq ${seq}`,
    ) as Promise<Reply<MessageType.Ack>>;
  }

  async append(vaultId: Buffer, r: { seq: bigint; generation: number; bytes: Buffer }): Promise<Reply<MessageType.Ack>> {
    this.appendNoWait(vaultId, r);
    return this.answerFor(vaultId, r.seq);
  }

  async ping(nonce = 7n): Promise<void> {
    this.send({ type: MessageType.Ping, nonce });
    await this.waitFor((m) => m.type === MessageType.Pong && m.nonce === nonce, 30_000, 'Pong');
  }

  close(): void {
    this.conn.close();
  }
}
