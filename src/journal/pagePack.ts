// The content of a page pack (docs/FORMAT.md, "Paged snapshots"): database pages sealed one by one
// under the record key, each bound to its content address and the vault, with the addresses in a
// clear index at the front so a reader finds a page without opening the others. A page's address
// is a keyed hash of its bytes (HMAC-SHA256 under the page key, 16 bytes): equal pages get one
// address and are stored once, and storage learns nothing from the addresses.
import crypto from 'node:crypto';
import { NONCE_BYTES, NoncePool, open, seal, TAG_BYTES } from '../vault/aead.js';
import { FormatError } from '../vault/format.js';
import { MAX_PACK_BYTES } from '../vault/packFiles.js';
import { MAX_PAGE_BYTES, MIN_PAGE_BYTES, PAGE_ADDRESS_BYTES } from './payloads.js';

const MAGIC = Buffer.from('LNBP', 'latin1');
const VERSION = 1;
const HEADER_BYTES = 16;
/** A writer starts a new pack once this many bytes of pages are in it. */
export const PACK_TARGET_BYTES = 8 * 1024 * 1024;

export function pageAddress(pageKey: Buffer, page: Buffer): Buffer {
  return crypto.createHmac('sha256', pageKey).update(page).digest().subarray(0, PAGE_ADDRESS_BYTES);
}

export interface PackIndex {
  readonly pageSize: number;
  readonly addresses: Buffer[];
}

function entryBytes(pageSize: number): number {
  return NONCE_BYTES + pageSize + TAG_BYTES;
}

function pageAad(vaultId: Buffer, address: Buffer): Buffer {
  return Buffer.concat([MAGIC, vaultId, address]);
}

/** A new pack's name: random, so it says nothing about its content. */
export function newPackName(): string {
  return `p-${crypto.randomBytes(16).toString('hex')}.pack`;
}

/** A page sealed for a pack: its address and its entry (nonce, ciphertext, tag). */
export interface SealedPage {
  readonly address: Buffer;
  readonly entry: Buffer;
}

/** Seals pages one at a time for the packs of one vault, each bound to its address and the vault. */
export class PageSealer {
  private readonly nonces = new NoncePool();

  constructor(
    private readonly recordKey: Buffer,
    private readonly vaultId: Buffer,
  ) {}

  seal(address: Buffer, page: Buffer): SealedPage {
    const nonce = Buffer.from(this.nonces.take());
    return { address, entry: seal(this.recordKey, nonce, pageAad(this.vaultId, address), [page], nonce) };
  }
}

/** A pack's bytes: the header, the index of addresses, then the sealed pages (all of `pageSize`). */
export function assemblePack(pageSize: number, pages: readonly SealedPage[]): Buffer {
  const head = Buffer.alloc(HEADER_BYTES + pages.length * PAGE_ADDRESS_BYTES);
  MAGIC.copy(head, 0);
  head[4] = VERSION;
  head.writeUInt32BE(pages.length, 8);
  head.writeUInt32BE(pageSize, 12);
  const parts: Buffer[] = [head];
  pages.forEach((p, i) => {
    if (p.entry.length !== entryBytes(pageSize)) throw new Error(`page ${i} is sealed in ${p.entry.length} bytes, not as a ${pageSize}-byte page`);
    p.address.copy(head, HEADER_BYTES + i * PAGE_ADDRESS_BYTES);
    parts.push(p.entry);
  });
  return Buffer.concat(parts);
}

/** Reads a pack's index from its first bytes (`readAt(offset, length)`), checking every bound. */
export function readPackIndex(fileBytes: number, readAt: (offset: number, length: number) => Buffer): PackIndex {
  if (fileBytes < HEADER_BYTES || fileBytes > MAX_PACK_BYTES) throw new FormatError(`pack is ${fileBytes} bytes, outside the bounds of a pack`);
  const head = readAt(0, HEADER_BYTES);
  if (!head.subarray(0, 4).equals(MAGIC)) throw new FormatError('not a page pack (bad magic)');
  if (head[4] !== VERSION) throw new FormatError(`unsupported page pack version ${head[4]}`);
  const count = head.readUInt32BE(8);
  const pageSize = head.readUInt32BE(12);
  if (pageSize < MIN_PAGE_BYTES || pageSize > MAX_PAGE_BYTES) throw new FormatError(`page size ${pageSize} is out of bounds`);
  const expected = HEADER_BYTES + count * (PAGE_ADDRESS_BYTES + entryBytes(pageSize));
  if (expected !== fileBytes) throw new FormatError(`pack says ${count} pages of ${pageSize} bytes, which does not match its ${fileBytes} bytes`);
  const index = readAt(HEADER_BYTES, count * PAGE_ADDRESS_BYTES);
  const addresses: Buffer[] = [];
  for (let i = 0; i < count; i++) addresses.push(Buffer.from(index.subarray(i * PAGE_ADDRESS_BYTES, (i + 1) * PAGE_ADDRESS_BYTES)));
  return { pageSize, addresses };
}

/** Where entry `i` of a pack lies. */
export function entryRange(index: PackIndex, i: number): { offset: number; length: number } {
  const length = entryBytes(index.pageSize);
  return { offset: HEADER_BYTES + index.addresses.length * PAGE_ADDRESS_BYTES + i * length, length };
}

/** Opens one entry; null when it fails authentication or its bytes do not have its address. */
export function openPage(recordKey: Buffer, pageKey: Buffer, vaultId: Buffer, address: Buffer, entry: Buffer): Buffer | null {
  const page = open(recordKey, entry.subarray(0, NONCE_BYTES), pageAad(vaultId, address), entry.subarray(NONCE_BYTES));
  if (page === null || !pageAddress(pageKey, page).equals(address)) return null;
  return page;
}
