// Whole-vault transfers between a vault directory and an lnbackup server. pushVault uploads what the
// server lacks (lnbackup init --remote, destination add), agreeing on the server's tail exactly as
// the running node does (it is a RemoteDestination fed from the vault files; the vault's page packs
// the server lacks go first, then the records). downloadVault writes a server's vault (its page
// packs, then its records) into a directory in the vault format, for restore/verify/status to
// prove: the server is untrusted, so nothing it says counts beyond what the reader proves from
// those files.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readBoundedFile, writeFileAtomic } from '../util/durableFs.js';
import { WrongKeyError } from '../vault/errors.js';
import { genesisHash } from '../vault/format.js';
import { identityPath, openIdentity, vaultIdBytes } from '../vault/identity.js';
import { openSealedIdentity } from '../vault/identityEnvelope.js';
import type { VaultKeys } from '../vault/keys.js';
import { listPacks, MAX_PACK_BYTES, writePackAsync } from '../vault/packFiles.js';
import { RawVaultAppender, rawRecordHash, readRawRecords } from '../vault/rawRecords.js';
import { listSegments } from '../vault/segments.js';
import { MAX_IDENTITY_BYTES } from '../protocol/messages.js';
import { RemoteDestination, type NoticeLevel } from './remote.js';
import type { ChainPosition } from '../vault/sealer.js';
import { ServerClient, type ServerClientOptions } from './serverClient.js';

/** Records asked of the server at a time when downloading. */
const DOWNLOAD_PAGE_BYTES = 1 << 20;

export interface PushOptions {
  readonly vaultDir: string;
  readonly url: string;
  readonly keys: VaultKeys;
  /** Bytes the server holds of the vault, out of the vault's size. */
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly onNotice?: (level: NoticeLevel, message: string) => void;
  /** Give up when the server cannot be reached, or stays unreachable, this long (default 30 s). */
  readonly stallTimeoutMs?: number;
  readonly client?: ServerClientOptions;
}

export interface PushResult {
  /** Records uploaded (the server lacked them). */
  readonly records: number;
  readonly bytes: number;
  /** Page packs uploaded (the server lacked them), and their bytes. */
  readonly packs: number;
  readonly packBytes: number;
  /** The server's last record now. */
  readonly lastSeq: bigint;
}

export interface DownloadOptions {
  readonly url: string;
  readonly keys: VaultKeys;
  /** The vault to download (32 hex digits); needed only when the server holds several for this node. */
  readonly vaultId?: string;
  /** An empty or absent directory to write the vault into. */
  readonly toDir: string;
  readonly onProgress?: (doneBytes: number, totalBytes: number) => void;
  readonly client?: ServerClientOptions;
}

export interface DownloadResult {
  readonly vaultId: string;
  readonly records: number;
  readonly bytes: number;
  /** Page packs downloaded, and their bytes. */
  readonly packs: number;
  readonly packBytes: number;
}

/** Where a vault's chain ends, from the newest segment's headers (a torn tail is left out). */
export function vaultTail(vaultDir: string, vaultId: Buffer): ChainPosition {
  const segments = listSegments(vaultDir);
  for (let i = segments.length - 1; i >= 0; i--) {
    const records = readRawRecords(vaultDir, segments[i].firstSeq, Number.MAX_SAFE_INTEGER);
    const last = records[records.length - 1];
    if (last) return { lastSeq: last.seq, lastHash: rawRecordHash(last.bytes), generation: last.generation };
  }
  return { lastSeq: 0n, lastHash: genesisHash(vaultId), generation: 0 };
}

/** Uploads every record of the vault the server lacks and waits until the server acknowledged them all. */
export async function pushVault(options: PushOptions): Promise<PushResult> {
  const { vaultDir, keys } = options;
  const identity = openIdentity(vaultDir, keys);
  const vaultId = vaultIdBytes(identity);
  const tail = vaultTail(vaultDir, vaultId);
  const total = listSegments(vaultDir).reduce((n, s) => n + fs.statSync(s.path).size, 0) + listPacks(vaultDir).reduce((n, p) => n + p.bytes, 0);
  const stallMs = options.stallTimeoutMs ?? 30_000;
  let done = 0;
  /** Bytes of packs the server holds (it already had them, or they were uploaded). */
  let packsDone = 0;
  let packs = 0;
  let packBytes = 0;
  const progress = (): void => options.onProgress?.(Math.min(done + packsDone, total), total);
  const remote = new RemoteDestination({
    url: options.url,
    vaultDir,
    identity: readBoundedFile(identityPath(vaultDir), MAX_IDENTITY_BYTES),
    vaultId,
    keys,
    onNotice: options.onNotice,
    client: options.client,
    onDurable: (bytes) => {
      done += bytes;
      progress();
    },
    onPackDurable: (_name, bytes, uploaded) => {
      packsDone += bytes;
      if (uploaded) {
        packs++;
        packBytes += bytes;
      }
      progress();
    },
  });
  try {
    const started = await remote.start(tail, Date.now() + stallMs);
    if (started.ahead) {
      throw new Error(
        `${remote.name} holds records up to ${started.serverLastSeq}, more than the vault at ${vaultDir} (up to ${tail.lastSeq}): ` +
          `restore from that server first (lnbackup restore --from ${remote.name}), or use another server`,
      );
    }
    if (!started.connected || started.serverLastSeq === null) throw new Error(`cannot upload the vault to ${remote.name}: ${started.lastError}`);
    const before = Number(started.serverBytes ?? 0n);
    done = before;
    progress();
    await untilCaughtUp(remote, stallMs);
    // A server that held nothing got the records from the vault's first kept one on.
    const from = started.serverLastSeq === 0n ? (listSegments(vaultDir)[0]?.firstSeq ?? 1n) : started.serverLastSeq + 1n;
    const records = tail.lastSeq >= from ? Number(tail.lastSeq - from + 1n) : 0;
    return { records, bytes: done - before, packs, packBytes, lastSeq: tail.lastSeq };
  } finally {
    await remote.close(0);
  }
}

/** Resolves when the server acknowledged everything; rejects when it stays unreachable for `stallMs`. */
async function untilCaughtUp(remote: RemoteDestination, stallMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const stalled = new Promise<never>((_, reject) => {
    let since: number | null = null;
    timer = setInterval(() => {
      const s = remote.status();
      if (s.state !== 'stalled') {
        since = null;
        return;
      }
      since ??= Date.now();
      if (Date.now() - since >= stallMs) {
        reject(new Error(`the upload to ${remote.name} made no progress for ${Math.round(stallMs / 1000)} s: ${s.lastError ?? 'no answer'}`));
      }
    }, 250);
  });
  try {
    await Promise.race([remote.caughtUp(), stalled]);
  } finally {
    clearInterval(timer);
  }
}

/** Writes a server's copy of a vault (VAULT.json and every record) into `toDir`, in the vault format. */
export async function downloadVault(options: DownloadOptions): Promise<DownloadResult> {
  const { toDir, keys } = options;
  if (fs.existsSync(toDir) && fs.readdirSync(toDir).length > 0) throw new Error(`${toDir} is not empty; download into an empty folder`);
  const client = await ServerClient.connect(options.url, keys.transport, options.client);
  try {
    const vaultId = await chooseVault(client, options.vaultId);
    const hex = vaultId.toString('hex');
    const state = await client.openVault(vaultId, Buffer.alloc(0));
    fs.mkdirSync(toDir, { recursive: true });
    let identity;
    try {
      writeFileAtomic(identityPath(toDir), openSealedIdentity(keys, hex, state.identity), 0o644);
      identity = openIdentity(toDir, keys);
    } catch (err) {
      if (!(err instanceof WrongKeyError)) throw err;
      throw new Error(
        `${client.url}'s vault ${hex} belongs to another key: its VAULT.json does not verify with this node's key (wrong hsm_secret or key file?)`,
      );
    }
    if (identity.vaultId !== hex) throw new Error(`${client.url} sent the identity of vault ${identity.vaultId} for vault ${hex}`);
    // The page packs first (the records refer to them), each checked against its listed size and
    // written whole (temporary file, fsync, rename).
    const packList = await client.listPacks(vaultId);
    const packTotal = packList.reduce((n, p) => n + p.bytes, 0);
    const total = Number(state.bytes) + packTotal;
    let packBytes = 0;
    for (const p of packList) {
      if (p.bytes > MAX_PACK_BYTES) throw new Error(`${client.url} lists pack ${p.name} of ${p.bytes} bytes, more than a pack may hold`);
      const data = await client.downloadPack(vaultId, p.name, p.bytes);
      if (data.length !== p.bytes) throw new Error(`${client.url} sent ${data.length} bytes of pack ${p.name}, listed as ${p.bytes}`);
      await writePackAsync(toDir, p.name, data);
      packBytes += data.length;
      options.onProgress?.(Math.min(packBytes, total), total);
    }
    const appender = RawVaultAppender.open(toDir, identity.segmentBytes);
    let records = 0;
    let bytes = 0;
    try {
      let next = state.firstSeq === 0n ? 1n : state.firstSeq;
      while (next <= state.lastSeq) {
        const page = await client.readRecords(vaultId, next, DOWNLOAD_PAGE_BYTES);
        for (const r of page.records) {
          if (next > state.lastSeq) break;
          if (r.seq !== next) throw new Error(`${client.url} answered a read from record ${next} with record ${r.seq}`);
          appender.append(r);
          records++;
          bytes += r.bytes.length;
          next++;
        }
        options.onProgress?.(Math.min(packBytes + bytes, total), total);
        if (page.records.length === 0 || page.done) break;
      }
      if (next <= state.lastSeq) {
        throw new Error(`${client.url} said its copy of vault ${hex} ends at record ${state.lastSeq}, but sent records only up to ${next - 1n}`);
      }
      await appender.flushAsync();
    } finally {
      appender.close();
    }
    return { vaultId: hex, records, bytes, packs: packList.length, packBytes };
  } finally {
    client.close();
  }
}

/** The vault to download: the one asked for, or the only one the server holds for this node. */
async function chooseVault(client: ServerClient, wanted: string | undefined): Promise<Buffer> {
  if (wanted !== undefined) {
    if (!/^[0-9a-fA-F]{32}$/.test(wanted)) throw new Error(`a vault id is 32 hex digits, got ${JSON.stringify(wanted.slice(0, 80))}`);
    return Buffer.from(wanted, 'hex');
  }
  const vaults = await client.listVaults();
  if (vaults.length === 0) throw new Error(`${client.url} holds no vault for this node's key ${client.clientKey}: nothing to download`);
  if (vaults.length > 1) {
    const list = vaults
      .map(
        (v) =>
          `${v.vaultId.toString('hex')} (records ${v.firstSeq}..${v.lastSeq}, ${v.bytes} bytes${v.lastWriteAt > 0n ? `, last write ${new Date(Number(v.lastWriteAt)).toISOString()}` : ''})`,
      )
      .join('; ');
    throw new Error(`${client.url} holds ${vaults.length} vaults for this node's key: ${list}. Choose one with --vault-id`);
  }
  return vaults[0].vaultId;
}

/** Downloads into a temporary folder, runs `use` on it, and removes the folder. */
export async function downloadDir<T>(options: Omit<DownloadOptions, 'toDir'>, use: (dir: string, result: DownloadResult) => T | Promise<T>): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lnbackup-download-'));
  try {
    const result = await downloadVault({ ...options, toDir: dir });
    return await use(dir, result);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
