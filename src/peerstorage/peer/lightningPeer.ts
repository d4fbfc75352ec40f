// The minimal Lightning peer: enough BOLT #1 over a plain BOLT #8 connection to exchange `init`
// (offering option_provide_storage, bit 43, and refusing a peer that requires a feature we do not
// know), answer pings, take the peer's `peer_storage_retrieval` (type 9), send `peer_storage`
// (type 7) and leave. It never touches channels: it sends no `channel_reestablish` and ignores the
// one a real node sends (docs/PEER-STORAGE.md: init, 7, 9, then channel_reestablish on every
// connection). Every wait has a timeout.
import { DecodeError } from '../../util/bytes.js';
import { CORE_LIGHTNING_REQUIRED_BITS, OPTION_PROVIDE_STORAGE, checkRequired, featureField, offers } from '../wire/features.js';
import { initFeatures, type Init } from '../wire/init.js';
import { decodeMessage, encodeMessage, type LightningMessage } from '../wire/message.js';
import { pongFor } from '../wire/ping.js';
import { describeData } from '../wire/warningError.js';
import { NoiseSocket, PeerConnectionError, PeerTimeoutError, type NoiseSocketOptions } from './noiseSocket.js';

/** What we put in our `init`: option_provide_storage, optional (bit 43), and nothing else. */
export const OUR_FEATURES = featureField([OPTION_PROVIDE_STORAGE + 1]);

/** The even bits we accept a peer requiring: Core Lightning's (channels and payments, never used here) and peer storage. */
export const UNDERSTOOD_REQUIRED_BITS: readonly number[] = [...CORE_LIGHTNING_REQUIRED_BITS, OPTION_PROVIDE_STORAGE];

/**
 * Even message types a real node sends that this peer knows of and has no use for: BOLT #2's
 * channel_reestablish (136) and BOLT #7's channel_announcement (256) and channel_update (258).
 * Any other unknown even type ends the connection (BOLT #1).
 */
const IGNORED_EVEN_TYPES: ReadonlySet<number> = new Set([136, 256, 258]);

export const DEFAULT_INIT_TIMEOUT_MS = 10_000;

export interface PeerAddress {
  readonly nodeId: Buffer;
  readonly host: string;
  readonly port: number;
}

export interface PeerOptions extends NoiseSocketOptions {
  /** How long to wait for the peer's `init` (default 10 s). */
  readonly initTimeoutMs?: number;
}

/** What the peer said, kept for reports: its init, warnings, the type 7 it sent us (which we do not store), and the types we ignored. */
export interface PeerNotes {
  init: Init | null;
  readonly warnings: string[];
  theirStorage: Buffer | null;
  readonly ignoredTypes: Set<number>;
}

export class LightningPeer {
  readonly notes: PeerNotes = { init: null, warnings: [], theirStorage: null, ignoredTypes: new Set() };
  private retrieved: Buffer | null = null;

  private constructor(
    private readonly socket: NoiseSocket,
    readonly address: string,
  ) {}

  /** Connects as the node `localKey`, and exchanges `init`. */
  static async connect(localKey: Buffer, peer: PeerAddress, options: PeerOptions = {}): Promise<LightningPeer> {
    const socket = await NoiseSocket.connect(peer.host, peer.port, localKey, peer.nodeId, options);
    return LightningPeer.start(socket, `${peer.nodeId.toString('hex')}@${peer.host}:${peer.port}`, options);
  }

  /** Runs the BOLT #1 start on a connection accepted as the responder (the simulated peers). */
  static async accepted(socket: NoiseSocket, options: PeerOptions = {}): Promise<LightningPeer> {
    return LightningPeer.start(socket, socket.remotePublicKey.toString('hex'), options);
  }

  private static async start(socket: NoiseSocket, address: string, options: PeerOptions): Promise<LightningPeer> {
    const peer = new LightningPeer(socket, address);
    try {
      socket.send(
        encodeMessage({ kind: 'init', globalFeatures: Buffer.alloc(0), features: OUR_FEATURES, networks: null, remoteAddress: null, otherRecords: [] }),
      );
      const first = peer.decode(await socket.receive(options.initTimeoutMs ?? DEFAULT_INIT_TIMEOUT_MS, 'init'));
      if (first?.kind !== 'init')
        throw new PeerConnectionError(`${address} sent ${first ? first.kind : 'an ignored message'} before init: BOLT #1 says init comes first`);
      checkRequired(initFeatures(first), UNDERSTOOD_REQUIRED_BITS);
      peer.notes.init = first;
    } catch (err) {
      peer.warnAndClose(err);
      throw err instanceof DecodeError ? new PeerConnectionError(`${address}: ${err.message}`) : err;
    }
    return peer;
  }

  /** BOLT #1: a warning on the whole connection (zero channel id) saying why we leave, then close. */
  private warnAndClose(err: unknown): void {
    const text = Buffer.from(err instanceof Error ? err.message : String(err)).subarray(0, 1000);
    try {
      this.send({ kind: 'warning', channelId: Buffer.alloc(32), data: text });
    } catch {
      // The connection is already over.
    }
    void this.socket.close();
  }

  /** Whether the peer's init offers to store our blob (option_provide_storage, bit 42 or 43). */
  get providesStorage(): boolean {
    return this.notes.init !== null && offers(initFeatures(this.notes.init), OPTION_PROVIDE_STORAGE);
  }

  send(m: LightningMessage): void {
    this.socket.send(encodeMessage(m));
  }

  /** Sends our blob for the peer to keep (type 7). */
  sendPeerStorage(blob: Buffer): void {
    this.send({ kind: 'peer_storage', blob });
  }

  /**
   * Reads messages for up to `waitMs`, answering pings, until the peer's `peer_storage_retrieval`
   * arrives: its blob, or null when the peer sent none in that time (it holds nothing for us).
   */
  async retrieval(waitMs: number): Promise<Buffer | null> {
    const deadline = Date.now() + waitMs;
    while (this.retrieved === null) {
      const left = deadline - Date.now();
      if (left <= 0) return null;
      let raw: Buffer;
      try {
        raw = await this.socket.receive(left, 'peer_storage_retrieval');
      } catch (err) {
        if (err instanceof PeerTimeoutError) return null;
        throw err;
      }
      this.handle(raw);
    }
    return this.retrieved;
  }

  /** Reads and handles one message (answering a ping); resolves with what it was, or null if ignored. */
  async next(timeoutMs: number, what: string): Promise<LightningMessage | null> {
    return this.handle(await this.socket.receive(timeoutMs, what));
  }

  /** Leaves: our side ends after what is queued was sent. No channel message was ever sent. */
  close(): Promise<void> {
    return this.socket.close();
  }

  get closed(): Promise<void> {
    return this.socket.closed;
  }

  private decode(raw: Buffer): LightningMessage | null {
    if (raw.length >= 2 && IGNORED_EVEN_TYPES.has(raw.readUInt16BE(0))) {
      this.notes.ignoredTypes.add(raw.readUInt16BE(0));
      return null;
    }
    const m = decodeMessage(raw);
    if (m.kind !== 'unknown') return m;
    this.notes.ignoredTypes.add(m.type);
    return null;
  }

  private handle(raw: Buffer): LightningMessage | null {
    let m: LightningMessage | null;
    try {
      m = this.decode(raw);
    } catch (err) {
      this.warnAndClose(err);
      throw err instanceof DecodeError ? new PeerConnectionError(`${this.address} sent a message we refuse: ${err.message}`) : err;
    }
    if (m === null) return null;
    switch (m.kind) {
      case 'ping': {
        const pong = pongFor(m);
        if (pong) this.send({ kind: 'pong', ...pong });
        break;
      }
      case 'peer_storage_retrieval':
        this.retrieved = m.blob;
        break;
      case 'peer_storage':
        this.notes.theirStorage = m.blob;
        break;
      case 'warning':
        this.notes.warnings.push(describeData(m.data));
        break;
      case 'error':
        void this.socket.close();
        throw new PeerConnectionError(`${this.address} sent an error: ${describeData(m.data)}`);
      case 'init':
        void this.socket.close();
        throw new PeerConnectionError(`${this.address} sent a second init`);
      default:
        break;
    }
    return m;
  }
}
