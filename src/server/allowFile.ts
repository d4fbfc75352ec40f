// The server's allow file, <data>/allowed-keys: node keys admitted besides those given with --allow,
// one per line (66 hex digits; `#` starts a comment). `lnbackup server allow` writes it (atomically)
// and the running server picks it up within a second or two, without a restart: new connections
// are judged by the new list. Read with a size limit; a line that is not a valid key is skipped and
// reported, the others still count.
import fs from 'node:fs';
import path from 'node:path';
import { parsePublicKeyHex } from '../transport/keys.js';
import { readBoundedFile, writeFileAtomic } from '../util/durableFs.js';

export const ALLOW_FILE = 'allowed-keys';
/** 10,000 keys fit in under 700 KiB. */
const MAX_ALLOW_FILE_BYTES = 1024 * 1024;
/** How often the running server looks at the file. */
const WATCH_INTERVAL_MS = 1000;

export interface AllowFile {
  /** Valid keys, lowercase, without repeats, in the file's order. */
  readonly keys: string[];
  /** Lines that were skipped, with why (line numbers from 1). */
  readonly problems: string[];
}

export function allowFilePath(dataDir: string): string {
  return path.join(dataDir, ALLOW_FILE);
}

/** The file's keys; an absent file holds none. */
export function readAllowFile(dataDir: string): AllowFile {
  const file = allowFilePath(dataDir);
  if (!fs.existsSync(file)) return { keys: [], problems: [] };
  let text: string;
  try {
    text = readBoundedFile(file, MAX_ALLOW_FILE_BYTES).toString('utf8');
  } catch (err) {
    return { keys: [], problems: [`${file}: ${(err as Error).message}`] };
  }
  const keys = new Set<string>();
  const problems: string[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.replace(/#.*$/, '').trim();
    if (line === '') return;
    try {
      parsePublicKeyHex(line);
      keys.add(line.toLowerCase());
    } catch (err) {
      problems.push(`${file}:${i + 1}: ${(err as Error).message}`);
    }
  });
  return { keys: [...keys], problems };
}

/** Replaces the file's keys (atomically, durably). */
export function writeAllowFile(dataDir: string, keys: readonly string[]): void {
  const header = '# Node keys this lnbackup server admits besides --allow (lnbackup server allow). One per line.\n';
  writeFileAtomic(allowFilePath(dataDir), header + keys.map((k) => `${k}\n`).join(''), 0o600);
}

/** Calls `onChange` with the file's contents whenever it changes; returns a function that stops watching. */
export function watchAllowFile(dataDir: string, onChange: (file: AllowFile) => void): () => void {
  const file = allowFilePath(dataDir);
  const listener = (now: fs.Stats, before: fs.Stats): void => {
    if (now.mtimeMs !== before.mtimeMs || now.size !== before.size || now.ino !== before.ino) onChange(readAllowFile(dataDir));
  };
  fs.watchFile(file, { interval: WATCH_INTERVAL_MS, persistent: false }, listener);
  return () => fs.unwatchFile(file, listener);
}
