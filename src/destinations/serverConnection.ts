// What a remote destination needs of its connection to an lnbackup server (docs/PROTOCOL.md), one
// line of contract each. ServerClient (serverClient.ts) is the implementation over the transport;
// the remote destination sees only this, so its leveling, send window and pack upload can be read
// (and driven) without the wire.
import type { PackSummary, WireRecord } from '../protocol/messages.js';
import type { RemoteAddress } from './remoteUrl.js';
import type { RecordsPage, ServerClientOptions, ServerError, VaultState, Welcome } from './serverClient.js';

export interface ServerConnection {
  /** The server's Welcome (its limits), once the handshake is done. */
  readonly welcome: Welcome | null;
  /** False once the connection closed or failed. */
  readonly isOpen: boolean;
  /** Opens (or creates) the vault with its sealed identity; resolves with where the server's copy ends. */
  openVault(vaultId: Buffer, identity: Buffer): Promise<VaultState>;
  /** Reads records from `fromSeq` on, at most about `maxBytes`. */
  readRecords(vaultId: Buffer, fromSeq: bigint, maxBytes: number): Promise<RecordsPage>;
  /** Sends one record (pipelined): its durability comes as an ack (onAck), its refusal as onAppendError. */
  append(vaultId: Buffer, record: WireRecord): void;
  /** Uploads a page pack; resolves once it is durable on the server. */
  putPack(vaultId: Buffer, name: string, bytes: Buffer): Promise<void>;
  /** The packs the server holds for the vault, with their sizes. */
  listPacks(vaultId: Buffer): Promise<PackSummary[]>;
  /** Downloads a whole pack (of `expectedBytes`, when known). */
  downloadPack(vaultId: Buffer, name: string, expectedBytes?: number): Promise<Buffer>;
  /** Removes the packs named. */
  deletePacks(vaultId: Buffer, names: readonly string[]): Promise<void>;
  /** Retention: removes the generations below `keepFromGeneration`; resolves with the copy's state after. */
  prune(vaultId: Buffer, keepFromGeneration: number): Promise<VaultState>;
  /** Called with each cumulative ack: every record of the vault up to `seq` is durable. */
  onAck(handler: (vaultId: Buffer, seq: bigint) => void): void;
  /** Called when the server refuses an append. */
  onAppendError(handler: (error: ServerError) => void): void;
  /** Called once when the connection ends (null: closed cleanly). */
  onClose(handler: (error: Error | null) => void): void;
  /** Closes cleanly. */
  close(): void;
  /** Ends the connection at once, failing what is pending with `error`. */
  destroy(error?: Error): void;
}

/** Opens an authenticated connection to a server (ServerClient.connect). */
export type ConnectServer = (address: RemoteAddress, transportSeed: Buffer, options: ServerClientOptions) => Promise<ServerConnection>;
