// Reads small secret-bearing files (hsm_secret, key files) with a size limit checked before the read, turning filesystem failures into KeyError messages that never carry file contents.
import fs from 'node:fs';
import { KeyError } from './keyError.js';

/** The largest hsm_secret or key file we accept (a mnemonic hsm_secret is under 300 bytes). */
export const MAX_KEY_MATERIAL_FILE_BYTES = 4096;

/** Explains a filesystem error by its code only (its message could echo the path, never content, but the code is all that helps). */
function describeFsError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  switch (code) {
    case 'ENOENT':
      return 'does not exist';
    case 'EACCES':
    case 'EPERM':
      return 'cannot be read (permission denied); run as the user that owns it';
    case 'EISDIR':
      return 'is a directory, not a file';
    default:
      return `cannot be read (${code ?? 'unknown error'})`;
  }
}

/**
 * Reads `filePath` whole if it is a regular file of at most `MAX_KEY_MATERIAL_FILE_BYTES` bytes.
 * `what` names the file in messages (e.g. "hsm_secret", "key file").
 */
export function readBoundedFile(filePath: string, what: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(filePath, 'r');
  } catch (err) {
    throw new KeyError(`${what} ${filePath} ${describeFsError(err)}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      throw new KeyError(`${what} ${filePath} is not a regular file`);
    }
    if (st.size > MAX_KEY_MATERIAL_FILE_BYTES) {
      throw new KeyError(`${what} ${filePath} is ${st.size} bytes, larger than the ${MAX_KEY_MATERIAL_FILE_BYTES} bytes such a file can be; check the path`);
    }
    // Read at most one byte past the limit, so a file that grows after fstat is still caught.
    const buf = Buffer.alloc(MAX_KEY_MATERIAL_FILE_BYTES + 1);
    let total = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, total, buf.length - total, null);
      if (n === 0) break;
      total += n;
      if (total === buf.length) break;
    }
    if (total > MAX_KEY_MATERIAL_FILE_BYTES) {
      buf.fill(0);
      throw new KeyError(`${what} ${filePath} is larger than the ${MAX_KEY_MATERIAL_FILE_BYTES} bytes such a file can be; check the path`);
    }
    const out = Buffer.from(buf.subarray(0, total));
    buf.fill(0);
    return out;
  } catch (err) {
    if (err instanceof KeyError) throw err;
    throw new KeyError(`${what} ${filePath} ${describeFsError(err)}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** fs.statSync with failures turned into KeyError. */
export function statKeyMaterialFile(filePath: string, what: string): fs.Stats {
  try {
    return fs.statSync(filePath);
  } catch (err) {
    throw new KeyError(`${what} ${filePath} ${describeFsError(err)}`);
  }
}
