// Finding PostgreSQL's programs (pg_basebackup, pg_ctl, initdb, postgres): on PATH, else in
// Debian's /usr/lib/postgresql/<major>/bin (newest major first), where the packages put them.
import fs from 'node:fs';
import path from 'node:path';

const DEBIAN_ROOT = '/usr/lib/postgresql';

/** The program's path, or null when it is nowhere to be found. */
export function findPostgresBinary(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  const versions = fs.existsSync(DEBIAN_ROOT)
    ? fs
        .readdirSync(DEBIAN_ROOT)
        .filter((v) => /^\d+$/.test(v))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  for (const v of versions) {
    const p = path.join(DEBIAN_ROOT, v, 'bin', name);
    if (fs.existsSync(p)) return p;
  }
  return null;
}
