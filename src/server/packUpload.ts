// A page pack being received in pieces on one connection (PutPack, docs/PROTOCOL.md): the pieces
// in order, the client's quota reservation of the whole pack (made at the first piece, even under
// a name the vault holds, since it may be deleted before the last piece lands) and the pieces'
// charge to the server's memory budget, both given back once, when the pack is written, refused
// or abandoned.
import type { ClientLedger, Verdict } from './clientLedger.js';
import type { MemoryBudget } from './memoryBudget.js';

export class PackUpload {
  private readonly pieces: Buffer[] = [];
  private receivedBytes = 0;
  private chargedBytes = 0;
  private released = false;

  private constructor(
    /** The vault as the client names it, and where the store keeps it. */
    readonly vaultId: string,
    readonly stored: string,
    readonly name: string,
    readonly totalBytes: number,
    private readonly client: string,
    private readonly ledger: ClientLedger,
    private readonly budget: MemoryBudget,
  ) {}

  /** Reserves the whole pack against the client's quota: the upload, or the refusal. */
  static begin(
    at: { vaultId: string; stored: string; name: string; totalBytes: number },
    client: string,
    ledger: ClientLedger,
    budget: MemoryBudget,
  ): PackUpload | Extract<Verdict, { ok: false }> {
    const verdict = ledger.reserveBytes(client, at.totalBytes);
    if (!verdict.ok) return verdict;
    return new PackUpload(at.vaultId, at.stored, at.name, at.totalBytes, client, ledger, budget);
  }

  get received(): number {
    return this.receivedBytes;
  }

  get whole(): boolean {
    return this.receivedBytes === this.totalBytes;
  }

  /** Does a piece at `offset` of this pack continue what was received? */
  continuedBy(vaultId: string, name: string, totalBytes: number, offset: number): boolean {
    return vaultId === this.vaultId && name === this.name && totalBytes === this.totalBytes && offset === this.receivedBytes;
  }

  /** Keeps the next piece; false (nothing kept) when the memory budget is spent. */
  add(piece: Buffer): boolean {
    if (!this.budget.take(piece.length)) return false;
    this.chargedBytes += piece.length;
    this.pieces.push(piece);
    this.receivedBytes += piece.length;
    return true;
  }

  /** The whole pack in one buffer (the charge stays until release: the buffer is held while it is written). */
  bytes(): Buffer {
    const out = Buffer.concat(this.pieces, this.totalBytes);
    this.pieces.length = 0;
    return out;
  }

  /** The reservation and the charge are over: the pack was written (the store counts it now), refused or abandoned. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.pieces.length = 0;
    this.ledger.releaseBytes(this.client, this.totalBytes);
    this.budget.give(this.chargedBytes);
  }
}
