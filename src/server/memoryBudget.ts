// The server-wide memory budget: one count of the bytes every connection makes the server hold at
// once beyond a fixed small amount (fragments of messages being received, messages queued for a
// session, records not yet durable, pieces of page packs being received or written, replies to
// reads not yet handed to the kernel). What would pass the limit is refused (TooBusy, or the
// connection is closed for fragments and queues), so no number of connections, admitted or not,
// can make the server hold more than the budget (docs/PROTOCOL.md, "Limits and abuse").
import type { BufferBudget } from '../transport/connection.js';

export const DEFAULT_MEMORY_BUDGET_BYTES = 512 * 1024 * 1024;
/** What fits in one transport frame: a small take (a usual record, a request). */
export const SMALL_TAKE_BYTES = 65534;

export class MemoryBudget implements BufferBudget {
  private held = 0;
  private most = 0;
  /** Takes refused so far. */
  refusals = 0;
  /**
   * A share kept for small takes only (an eighth of the limit, beyond it): when bulk buffers
   * (unfinished messages, pack uploads, large replies) have spent the limit, a client sending
   * usual records and requests still gets them handled.
   */
  readonly reserveBytes: number;

  constructor(readonly limitBytes: number) {
    this.reserveBytes = Math.floor(limitBytes / 8);
  }

  /** A bulk take: refused once the limit would be passed. */
  take(bytes: number): boolean {
    return this.takeWithin(bytes, this.limitBytes);
  }

  /** A take of at most SMALL_TAKE_BYTES (bulk ones are take()): it may use the reserve. */
  takeSmall(bytes: number): boolean {
    return bytes <= SMALL_TAKE_BYTES ? this.takeWithin(bytes, this.limitBytes + this.reserveBytes) : this.take(bytes);
  }

  private takeWithin(bytes: number, room: number): boolean {
    if (this.held + bytes > room) {
      this.refusals++;
      return false;
    }
    this.held += bytes;
    if (this.held > this.most) this.most = this.held;
    return true;
  }

  give(bytes: number): void {
    this.held = Math.max(0, this.held - bytes);
  }

  /** For status: held now, the most held, the limit (and the reserve beyond it for small takes), refusals. */
  get figures(): { heldBytes: number; mostHeldBytes: number; limitBytes: number; reserveBytes: number; refusals: number } {
    return { heldBytes: this.held, mostHeldBytes: this.most, limitBytes: this.limitBytes, reserveBytes: this.reserveBytes, refusals: this.refusals };
  }
}
