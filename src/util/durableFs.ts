// Small durability helpers: fsync a directory, cut a file durably, and write a file atomically (temp, fsync, rename,
// fsync of the directory; on the event loop or on the thread pool), so a crash leaves either the old file or the
// new one, never a mix.
import fs from 'node:fs';
import path from 'node:path';

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600, tmp = `${file}.tmp-${process.pid}`): void {
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDir(path.dirname(file));
}

let tempCounter = 0;
/** Temp files being written now: removed if the process exits meanwhile (a kill leaves them to the next writer or scrub). */
const tempsInFlight = new Set<string>();
let exitHook = false;

/**
 * writeFileAtomic with the writes and fsyncs on libuv's thread pool: the event loop stays free.
 * The temp file (by default `<file>.tmp-<pid>-<n>`) is removed if the write fails or the process exits.
 */
export async function writeFileAtomicAsync(file: string, data: Buffer, mode = 0o600, tmp = `${file}.tmp-${process.pid}-${++tempCounter}`): Promise<void> {
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const t of tempsInFlight) fs.rmSync(t, { force: true });
    });
  }
  tempsInFlight.add(tmp);
  try {
    const out = await fs.promises.open(tmp, 'w', mode);
    try {
      await out.writeFile(data);
      await out.sync();
    } finally {
      await out.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (err) {
    await fs.promises.rm(tmp, { force: true });
    throw err;
  } finally {
    tempsInFlight.delete(tmp);
  }
  const dir = await fs.promises.open(path.dirname(file), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** Reads a small file, refusing one larger than `maxBytes` before reading it whole. */
export function readBoundedFile(file: string, maxBytes: number): Buffer {
  const size = fs.statSync(file).size;
  if (size > maxBytes) throw new Error(`${file} is ${size} bytes, more than the ${maxBytes} allowed`);
  return fs.readFileSync(file);
}

/** Cuts a file to `length` bytes and fsyncs it. */
export function truncateDurably(file: string, length: number): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.ftruncateSync(fd, length);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
