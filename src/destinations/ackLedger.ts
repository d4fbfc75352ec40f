// What a server has acknowledged of a vault, kept across restarts of the plugin, so that a server
// that comes back without records it had acknowledged before the restart is reported as having
// lost them (not quietly refilled). One small file per server in the vault's `acks/` folder,
// `<server public key>.json`: {"vaultId", "ackedSeq"}. It is a lower bound: written at most once a
// second (atomically, on the thread pool) and when the destination closes, so a crash can only
// make it lag, never claim more than the server acknowledged.
import fs from 'node:fs';
import path from 'node:path';
import { readBoundedFile, writeFileAtomicAsync } from '../util/durableFs.js';

export const ACKS_DIR = 'acks';
const MAX_FILE_BYTES = 4096;
const WRITE_EVERY_MS = 1000;

export class AckLedger {
  private written: bigint;
  private latest: bigint;
  private writing: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private readonly file: string;

  /** What the file says of this vault at `vaultDir` for the server `serverKey` (0 when nothing, or another vault's). */
  constructor(
    private readonly vaultDir: string,
    private readonly vaultId: string,
    serverKey: Buffer,
  ) {
    this.file = path.join(vaultDir, ACKS_DIR, `${serverKey.toString('hex')}.json`);
    this.written = this.read();
    this.latest = this.written;
  }

  /** The highest seq the server is known to have acknowledged of this vault. */
  get ackedSeq(): bigint {
    return this.latest;
  }

  /** The server acknowledged up to `seq`; written within a second. */
  note(seq: bigint): void {
    if (seq <= this.latest) return;
    this.latest = seq;
    this.timer ??= setTimeout(() => {
      this.timer = null;
      void this.flush();
    }, WRITE_EVERY_MS).unref();
  }

  /** Writes what is not written yet; never rejects (a ledger that cannot be written only lags). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.writing = this.writing.then(async () => {
      const seq = this.latest;
      if (seq <= this.written || !fs.existsSync(this.vaultDir)) return;
      try {
        await fs.promises.mkdir(path.dirname(this.file), { recursive: true });
        await writeFileAtomicAsync(this.file, Buffer.from(JSON.stringify({ vaultId: this.vaultId, ackedSeq: seq.toString() }) + '\n'));
        this.written = seq;
      } catch {
        // The vault's disk is full or gone: the ledger lags, which only weakens the check.
      }
    });
    return this.writing;
  }

  private read(): bigint {
    try {
      const parsed = JSON.parse(readBoundedFile(this.file, MAX_FILE_BYTES).toString('utf8')) as { vaultId?: unknown; ackedSeq?: unknown };
      if (parsed.vaultId !== this.vaultId || typeof parsed.ackedSeq !== 'string' || !/^[0-9]{1,20}$/.test(parsed.ackedSeq)) return 0n;
      return BigInt(parsed.ackedSeq);
    } catch {
      return 0n; // no file yet, or a damaged one: nothing known
    }
  }
}
