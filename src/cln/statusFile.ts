// lnbackup-status.json in the node's network directory: the plugin's state for operators and
// monitoring without going through lightningd (which may be stalled waiting for us). Written
// atomically, at most once a second while calls flow, and at once when a stall starts or ends or
// something fails.
import path from 'node:path';
import { writeFileAtomic } from '../util/durableFs.js';

export const STATUS_FILE = 'lnbackup-status.json';
const MIN_INTERVAL_MS = 1000;

export class StatusFile {
  private lastWrite = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly networkDir: string,
    private readonly snapshot: () => object,
  ) {}

  get path(): string {
    return path.join(this.networkDir, STATUS_FILE);
  }

  /** Something changed: write soon (at most once a second). */
  touch(): void {
    if (this.timer || this.closed) return;
    const wait = Math.max(0, this.lastWrite + MIN_INTERVAL_MS - Date.now());
    this.timer = setTimeout(() => this.writeNow(), wait);
    this.timer.unref();
  }

  /** Something important changed (a stall, a failure): write at once. */
  writeNow(): void {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.lastWrite = Date.now();
    try {
      writeFileAtomic(this.path, JSON.stringify({ updatedAt: new Date().toISOString(), ...this.snapshot() }, null, 2) + '\n', 0o644);
    } catch {
      // Status is best effort: a full disk must not stop the backup itself.
    }
  }

  /** Writes the final state once, then no more. */
  close(): void {
    if (this.closed) return;
    this.writeNow();
    this.closed = true;
  }
}
