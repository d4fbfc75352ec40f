// Page pack files: the immutable files under <vault>/pages that hold a paged snapshot's database
// pages (their content is sealed by the node: journal/pagePack.ts; to storage they are opaque
// bytes). Named by a random id, written atomically (temp, fsync, rename, fsync of the folder), never
// changed afterwards, removed only by retention. The node's local vault and the server's file
// store both keep packs through this module.
import fs from 'node:fs';
import path from 'node:path';
import { fsyncDir, writeFileAtomic, writeFileAtomicAsync } from '../util/durableFs.js';
import { protectFile } from './redundancy/parity.js';
import { removeWithSidecars } from './segments.js';

export const PAGES_DIR = 'pages';
/** Largest pack file accepted anywhere (a writer makes them at most 8 MiB). */
export const MAX_PACK_BYTES = 64 * 1024 * 1024;
const NAME = /^p-[0-9a-f]{32}\.pack$/;

export interface PackFile {
  readonly name: string;
  readonly path: string;
  readonly bytes: number;
}

export function isPackName(name: string): boolean {
  return NAME.test(name);
}

export function pagesDir(vaultDir: string): string {
  return path.join(vaultDir, PAGES_DIR);
}

/** The vault's pack files, by name; other files in the folder are ignored. */
export function listPacks(vaultDir: string): PackFile[] {
  const dir = pagesDir(vaultDir);
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter(isPackName)
    .sort()
    .map((name) => {
      const p = path.join(dir, name);
      return { name, path: p, bytes: fs.statSync(p).size };
    });
}

/**
 * Where a new pack goes (its folder made, durably), or null when a pack of that name already holds
 * these bytes; a pack of that name with other bytes is an error.
 */
function newPackFile(vaultDir: string, name: string, bytes: Buffer): string | null {
  if (!isPackName(name)) throw new Error(`${JSON.stringify(name)} is not a pack name`);
  if (bytes.length > MAX_PACK_BYTES) throw new Error(`pack ${name} is ${bytes.length} bytes, more than ${MAX_PACK_BYTES}`);
  const dir = pagesDir(vaultDir);
  const file = path.join(dir, name);
  if (fs.existsSync(file)) {
    if (fs.statSync(file).size === bytes.length && fs.readFileSync(file).equals(bytes)) return null;
    throw new Error(`pack ${name} already exists with other contents`);
  }
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(dir, { recursive: true });
    fsyncDir(vaultDir);
  }
  return file;
}

/** A pack's temp file while it is written (a dot file: listPacks passes over it, removeStalePackTemps removes it). */
const tempOf = (file: string): string => path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);

/** Writes a pack durably on the event loop (inside a hook); an existing pack of that name must hold the same bytes. */
export function writePack(vaultDir: string, name: string, bytes: Buffer): string {
  const file = newPackFile(vaultDir, name, bytes);
  if (file !== null) writeFileAtomic(file, bytes, 0o600, tempOf(file));
  return path.join(pagesDir(vaultDir), name);
}

/** writePack with the write and the fsyncs on the thread pool (between hooks, on a server). */
export async function writePackAsync(vaultDir: string, name: string, bytes: Buffer): Promise<string> {
  const file = newPackFile(vaultDir, name, bytes);
  if (file !== null) await writeFileAtomicAsync(file, bytes, 0o600, tempOf(file));
  return path.join(pagesDir(vaultDir), name);
}

/**
 * Writes `<pack>.parity` (docs/FORMAT.md, "Redundancy") for a pack already written by writePack:
 * Reed-Solomon on the thread pool, written atomically and durably. Await it before counting the
 * pack as stored. A pack left without parity (a crash in between) gets it at the next writer open
 * or from `lnbackup scrub --repair`.
 */
export function protectPack(file: string): Promise<void> {
  return protectFile(file, MAX_PACK_BYTES);
}

/** writePack, then protectPack: the pack and its parity, both durable. */
export async function writeProtectedPack(vaultDir: string, name: string, bytes: Buffer): Promise<string> {
  const file = await writePackAsync(vaultDir, name, bytes);
  if (!fs.existsSync(file + '.parity')) await protectPack(file);
  return file;
}

/** Removes packs (and whatever protects them); names that are absent are ignored. */
export function deletePacks(vaultDir: string, names: readonly string[]): void {
  const dir = pagesDir(vaultDir);
  let removed = false;
  for (const name of names) {
    if (!isPackName(name)) throw new Error(`${JSON.stringify(name)} is not a pack name`);
    removed = removeWithSidecars(path.join(dir, name)) || removed;
  }
  if (removed) fsyncDir(dir);
}

/** Removes temp files left by a writer that died mid-write. */
export function removeStalePackTemps(vaultDir: string): void {
  const dir = pagesDir(vaultDir);
  if (!fs.existsSync(dir)) return;
  for (const name of fs.readdirSync(dir)) if (name.startsWith('.p-') && name.includes('.tmp-')) fs.rmSync(path.join(dir, name), { force: true });
}
