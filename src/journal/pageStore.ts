// The vault's page store: every page of every pack in <vault>/pages, found by content address.
// Opening reads only the packs' indexes; a page is read and checked (authentication, and that its
// bytes have its address) when a restore asks for it. New pages are sealed into new packs, written
// durably before any record refers to them. Retention asks which packs no kept snapshot uses.
import fs from 'node:fs';
import { listPacks, writePack, writePackAsync, type PackFile } from '../vault/packFiles.js';
import type { VaultKeys } from '../vault/keys.js';
import { describeRanges } from '../vault/redundancy/keeper.js';
import type { ReadRepair } from '../vault/redundancy/protectedRead.js';
import { assemblePack, entryRange, newPackName, openPage, PACK_TARGET_BYTES, PageSealer, readPackIndex, type PackIndex, type SealedPage } from './pagePack.js';
import type { PageSource } from './replay.js';

export interface NewPack {
  readonly name: string;
  readonly bytes: Buffer;
}

interface Located {
  readonly pack: string;
  readonly entry: number;
}

/** Reads part of a file (the pack's bytes as stored, or a repaired copy in memory). */
type PackReader = (pack: PackFile) => (offset: number, length: number) => Buffer;

const readFromDisk: PackReader = (pack) => (offset, length) => {
  const fd = fs.openSync(pack.path, 'r');
  try {
    const out = Buffer.alloc(length);
    let got = 0;
    while (got < length) {
      const n = fs.readSync(fd, out, got, length - got, offset + got);
      if (n === 0) throw new Error(`${pack.name} ends before byte ${offset + length}`);
      got += n;
    }
    return out;
  } finally {
    fs.closeSync(fd);
  }
};

/** Reads packs through an in-memory repair: repaired ones from memory, lost bytes refused by name. */
function repairedReader(repair: ReadRepair): PackReader {
  return (pack) => {
    const repaired = repair.overlay.get(pack.path);
    const read = repaired ? (offset: number, length: number): Buffer => repaired.subarray(offset, offset + length) : readFromDisk(pack);
    const lost = repair.lost.get(pack.path) ?? [];
    if (lost.length === 0) return read;
    return (offset, length) => {
      const hit = lost.filter((r) => r.start < offset + length && r.end > offset);
      if (hit.length > 0) throw new Error(`${describeRanges(hit)} of ${pack.name} are damaged beyond what parity can repair`);
      return read(offset, length);
    };
  };
}

export class PageStore implements PageSource {
  private readonly located = new Map<string, Located>();
  private readonly packs = new Map<string, { file: PackFile; index: PackIndex }>();
  /** Packs whose index could not be read (named in `damaged`). */
  readonly damaged: string[] = [];
  private readonly sealer: PageSealer;

  private constructor(
    private readonly vaultDir: string,
    private readonly keys: VaultKeys,
    private readonly vaultId: Buffer,
    private readonly readPack: PackReader,
  ) {
    this.sealer = new PageSealer(keys.record, vaultId);
  }

  /**
   * `repair`: the vault's files checked and repaired in memory (redundancy/protectedRead.ts): a
   * repaired pack is read from memory, and reading bytes of a pack that parity could not rebuild
   * fails naming them.
   */
  static open(vaultDir: string, keys: VaultKeys, vaultId: Buffer, repair?: ReadRepair): PageStore {
    const store = new PageStore(vaultDir, keys, vaultId, repair ? repairedReader(repair) : readFromDisk);
    // Oldest first, so a page stored again (out of a mostly dead pack) is found in its newer pack.
    const files = listPacks(vaultDir)
      .sort((a, b) => fs.statSync(a.path).mtimeMs - fs.statSync(b.path).mtimeMs)
      .map((f) => ({ ...f, bytes: repair?.overlay.get(f.path)?.length ?? f.bytes }));
    for (const file of files) {
      try {
        store.add(file, readPackIndex(file.bytes, store.readPack(file)));
      } catch (err) {
        store.damaged.push(`${file.name}: ${(err as Error).message}`);
      }
    }
    return store;
  }

  /** The pack the page is read from, unless that is one of `unless` (or it is not stored): null. */
  packOf(address: Buffer, unless?: ReadonlySet<string>): string | null {
    const at = this.located.get(address.toString('hex'));
    return at === undefined || (unless?.has(at.pack) ?? false) ? null : at.pack;
  }

  /** Every pack's name. */
  get packNames(): string[] {
    return [...this.packs.keys()];
  }

  page(address: Buffer, pageSize: number): Buffer {
    const hex = address.toString('hex');
    const at = this.located.get(hex);
    if (!at) throw new Error(`page ${hex} is in no pack of the vault${this.damaged.length > 0 ? ` (damaged packs: ${this.damaged.join('; ')})` : ''}`);
    const pack = this.packs.get(at.pack);
    if (!pack) throw new Error(`pack ${at.pack} is gone`);
    if (pack.index.pageSize !== pageSize) throw new Error(`page ${hex} in ${at.pack} has ${pack.index.pageSize} bytes, the snapshot wants ${pageSize}`);
    const range = entryRange(pack.index, at.entry);
    const page = openPage(this.keys.record, this.keys.page, this.vaultId, address, this.readPack(pack.file)(range.offset, range.length));
    if (page === null)
      throw new Error(`page ${hex} in ${at.pack} (bytes ${range.offset}..${range.offset + range.length}) fails authentication: the pack is damaged`);
    return page;
  }

  /** Seals one page for a pack of this vault (a copy of `page` is not needed afterwards). */
  sealPage(address: Buffer, page: Buffer): SealedPage {
    return this.sealer.seal(address, page);
  }

  /** Puts sealed pages into new packs (at most PACK_TARGET_BYTES each), writes them durably, and returns them. */
  writePages(pageSize: number, pages: readonly SealedPage[]): NewPack[] {
    return this.assemble(pageSize, pages).map((p) => this.added(p, writePack(this.vaultDir, p.name, p.bytes)));
  }

  /** writePages with the writes and fsyncs on the thread pool (a compaction, between hooks). */
  async writePagesAsync(pageSize: number, pages: readonly SealedPage[]): Promise<NewPack[]> {
    const out: NewPack[] = [];
    for (const p of this.assemble(pageSize, pages)) out.push(this.added(p, await writePackAsync(this.vaultDir, p.name, p.bytes)));
    return out;
  }

  private assemble(pageSize: number, pages: readonly SealedPage[]): NewPack[] {
    const perPack = Math.max(1, Math.floor(PACK_TARGET_BYTES / pageSize));
    const out: NewPack[] = [];
    for (let i = 0; i < pages.length; i += perPack) out.push({ name: newPackName(), bytes: assemblePack(pageSize, pages.slice(i, i + perPack)) });
    return out;
  }

  /** A pack just written durably at `path`: its pages are found in it from now on. */
  private added(pack: NewPack, path: string): NewPack {
    this.add(
      { name: pack.name, path, bytes: pack.bytes.length },
      readPackIndex(pack.bytes.length, (o, l) => pack.bytes.subarray(o, o + l)),
    );
    return pack;
  }

  /**
   * Packs where less than `share` of the pages are among `live`: a new snapshot stores their live
   * pages again, so they can go once no kept generation uses them (what keeps dead pages bounded).
   */
  sparsePacks(live: ReadonlySet<string>, share: number): Set<string> {
    const out = new Set<string>();
    for (const [name, pack] of this.packs) if (this.usedIn(name, pack.index, live) < share * pack.index.addresses.length) out.add(name);
    return out;
  }

  private usedIn(name: string, index: PackIndex, live: ReadonlySet<string>): number {
    let used = 0;
    for (const a of index.addresses) {
      const hex = a.toString('hex');
      if (live.has(hex) && this.located.get(hex)?.pack === name) used++;
    }
    return used;
  }

  /** Forgets packs that were deleted; their pages are found again in the packs left, if any holds them. */
  forget(names: readonly string[]): void {
    if (!names.some((n) => this.packs.has(n))) return;
    for (const name of names) this.packs.delete(name);
    this.located.clear();
    for (const [name, pack] of this.packs) pack.index.addresses.forEach((a, entry) => this.located.set(a.toString('hex'), { pack: name, entry }));
  }

  /** Bytes of all packs. */
  get bytes(): number {
    let n = 0;
    for (const p of this.packs.values()) n += p.file.bytes;
    return n;
  }

  /** Adds a pack; its pages are read from it from now on (a page stored again moves to the newer pack). */
  private add(file: PackFile, index: PackIndex): void {
    this.packs.set(file.name, { file, index });
    index.addresses.forEach((a, entry) => this.located.set(a.toString('hex'), { pack: file.name, entry }));
  }
}
