// The running server's state for the operator: <data>/server-status.json, replaced atomically
// (temporary file, fsync, rename) at most once a second while something changes and once more at
// stop, and read back by `lnbackup server status`. It holds public keys, vault ids, sizes, sequence
// numbers and times; never a private key or a password.
import fs from 'node:fs';
import path from 'node:path';
import { readBoundedFile } from '../util/durableFs.js';
import { processAlive } from '../util/processAlive.js';

export const STATUS_FILE = 'server-status.json';
const MAX_STATUS_BYTES = 64 * 1024 * 1024;

export interface VaultStatus {
  /** The node's vault id. */
  readonly vaultId: string;
  /** Where the store keeps it (its folder under <data>/vaults with the file store): the owner-scoped id. */
  readonly storedAs: string;
  readonly firstSeq: string;
  readonly lastSeq: string;
  readonly lastGeneration: number;
  /** Bytes of records. */
  readonly bytes: number;
  /** Bytes of page packs (absent in files written by older versions). */
  readonly packBytes?: number;
  /** ISO time of the last append, null when never written. */
  readonly lastWriteAt: string | null;
}

export interface ClientStatus {
  readonly publicKey: string;
  /** At least one connection of this client is open. */
  readonly connected: boolean;
  readonly connections: number;
  /** ISO time of the client's last message in this run, null when none. */
  readonly lastActivityAt: string | null;
  /** Records and bytes acknowledged to this client in this run. */
  readonly records: number;
  readonly bytes: number;
  /** Appends accepted and not yet durable (the server's lag for this client). */
  readonly pendingAppends: number;
  readonly vaults: readonly VaultStatus[];
  /** Bytes stored for the client: records and page packs (what the quota counts). */
  readonly totalBytes: number;
}

export interface StoreCounters {
  readonly rounds: number;
  readonly records: number;
  readonly maxRoundMs: number;
  readonly [more: string]: number;
}

/** One scrub of the server's storage (src/vault/redundancy/scrub.ts). */
export interface ScrubRunStatus {
  readonly startedAt: string;
  readonly finishedAt: string;
  readonly files: number;
  readonly bytes: number;
  readonly repairedFiles: number;
  readonly damagedFiles: number;
  readonly unprotectedFiles: number;
  /** Files found damaged and repaired in place. */
  readonly repaired: readonly { readonly vault: string; readonly file: string; readonly fixed: readonly string[] }[];
  /** Files with damage left: what could not be rebuilt (byte ranges, end exclusive). */
  readonly unrecoverable: readonly {
    readonly vault: string;
    readonly file: string;
    readonly ranges: readonly { start: number; end: number }[];
    readonly found: readonly string[];
  }[];
  /** Why the scrub ended early, or null. */
  readonly error: string | null;
}

export interface ServerScrubStatus {
  /** ms between two scrubs; 0 = never. */
  readonly intervalMs: number;
  readonly running: boolean;
  /** ISO time of the next scrub, null when none is planned. */
  readonly nextAt: string | null;
  readonly last: ScrubRunStatus | null;
}

export interface ServerStatus {
  readonly pid: number;
  readonly startedAt: string;
  readonly updatedAt: string;
  readonly url: string;
  readonly publicKey: string;
  readonly listen: string;
  readonly storage: { readonly kind: string; readonly location: string };
  readonly access: { readonly open: boolean; readonly allowListSize: number; readonly quotaBytes: number; readonly maxVaults: number };
  readonly connections: number;
  /** The server-wide memory budget (src/server/memoryBudget.ts). */
  readonly memory: {
    readonly heldBytes: number;
    readonly mostHeldBytes: number;
    readonly limitBytes: number;
    readonly reserveBytes: number;
    readonly refusals: number;
  };
  /** Connections whose transport handshake is not finished. */
  readonly handshaking: number;
  readonly handshakeFailures: number;
  readonly refusedConnections: number;
  readonly clients: readonly ClientStatus[];
  /** The store's group commit figures, null when the store does not report them. */
  readonly storeCounters: StoreCounters | null;
  /** Appends as the sessions saw them: count, bytes, slowest (ms from arrival to durable). */
  readonly appendCounters: { readonly appends: number; readonly records: number; readonly bytes: number; readonly maxAppendMs: number };
  readonly stopping: boolean;
  /** ISO time the server finished stopping; null while it runs. */
  readonly stoppedAt: string | null;
  /** The storage scrub (file storage only; absent in status files of older servers). */
  readonly scrub?: ServerScrubStatus | null;
}

export function statusPath(dataDir: string): string {
  return path.join(dataDir, STATUS_FILE);
}

/** Replaces the status file atomically without blocking the event loop. */
export async function writeStatusFile(dataDir: string, status: ServerStatus): Promise<void> {
  const file = statusPath(dataDir);
  const tmp = `${file}.tmp-${process.pid}`;
  const fh = await fs.promises.open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(JSON.stringify(status, null, 2) + '\n');
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.promises.rename(tmp, file);
}

export interface StatusReading {
  readonly status: ServerStatus;
  /** The server that wrote it is running now. */
  readonly running: boolean;
  /** Why it is not, in words. */
  readonly note: string | null;
}

export function readStatusFile(dataDir: string): StatusReading {
  const file = statusPath(dataDir);
  if (!fs.existsSync(file)) {
    const why = fs.existsSync(dataDir) ? `${dataDir} has no ${STATUS_FILE}` : `${dataDir} does not exist`;
    throw new Error(`no lnbackup server has run with --data ${dataDir} (${why}); start one with 'lnbackup server --data ${dataDir}'`);
  }
  let status: ServerStatus;
  try {
    status = JSON.parse(readBoundedFile(file, MAX_STATUS_BYTES).toString('utf8')) as ServerStatus;
  } catch (err) {
    throw new Error(`${file} is unreadable (${(err as Error).message}); it is rewritten every second while the server runs`);
  }
  if (typeof status !== 'object' || status === null || typeof status.pid !== 'number' || !Array.isArray(status.clients)) {
    throw new Error(`${file} is not an lnbackup server status file`);
  }
  const alive = processAlive(status.pid);
  let note: string | null = null;
  if (status.stoppedAt) note = `the server stopped at ${status.stoppedAt}`;
  else if (!alive) note = `the server (pid ${status.pid}) is not running: it ended without stopping cleanly (killed or crashed) after ${status.updatedAt}`;
  return { status, running: alive && !status.stoppedAt, note };
}

function ago(iso: string | null, now: number): string {
  if (!iso) return 'never';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${iso} (${s} s ago)`;
  if (s < 7200) return `${iso} (${Math.round(s / 60)} min ago)`;
  return `${iso} (${Math.round(s / 3600)} h ago)`;
}

function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = -1;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(1)} ${units[u]}`;
}

function scrubLines(sc: ServerScrubStatus | null, now: number): string[] {
  if (!sc) return [];
  if (sc.intervalMs === 0 && !sc.last) return ['scrub:       never (--scrub-interval 0)'];
  const lines: string[] = [];
  const l = sc.last;
  const next = sc.running ? 'running now' : sc.nextAt ? `next ${sc.nextAt}` : 'none planned';
  if (!l) lines.push(`scrub:       not run yet; ${next}`);
  else {
    lines.push(
      `scrub:       last ${ago(l.finishedAt, now)}: ${l.files} files, ${size(l.bytes)} checked, ${l.repairedFiles} repaired, ${l.damagedFiles} damaged, ${l.unprotectedFiles} unprotected` +
        `${l.error ? ` (ended early: ${l.error})` : ''}; ${next}`,
    );
    for (const r of l.repaired) lines.push(`  repaired:  vault ${r.vault} ${r.file}${r.fixed.length ? `: ${r.fixed.join('; ')}` : ''}`);
    for (const u of l.unrecoverable) {
      const ranges = u.ranges.map((x) => `bytes ${x.start}..${x.end - 1}`).join(', ');
      lines.push(`  DAMAGED:   vault ${u.vault} ${u.file}: ${ranges || u.found.join('; ')}`);
    }
  }
  return lines;
}

/** The human form of `lnbackup server status`. */
export function describeStatus(r: StatusReading, now = Date.now()): string[] {
  const s = r.status;
  const lines = [
    r.running ? `server:      running (pid ${s.pid}) since ${s.startedAt}${s.stopping ? ', STOPPING' : ''}` : `server:      NOT RUNNING: ${r.note}`,
    `url:         ${s.url}`,
    `storage:     ${s.storage.kind} (${s.storage.location})`,
    `access:      ${s.access.open ? 'open to any key' : s.access.allowListSize === 0 ? 'allow-list EMPTY (nobody is admitted)' : `allow-list of ${s.access.allowListSize} key(s)`}; quota ${size(s.access.quotaBytes)} and ${s.access.maxVaults} vaults per client`,
    `connections: ${s.connections} (${s.handshaking} in handshake; ${s.handshakeFailures} failed handshakes, ${s.refusedConnections} refused over the limits)`,
    // (absent from the status file of an older server)
    `memory:      ${s.memory ? `${size(s.memory.heldBytes)} held of a budget of ${size(s.memory.limitBytes)} (+ ${size(s.memory.reserveBytes)} for small messages; at most ${size(s.memory.mostHeldBytes)}; ${s.memory.refusals} refusals)` : 'not reported'}`,
    `appends:     ${s.appendCounters.appends} durable in this run (${size(s.appendCounters.bytes)}), slowest ${s.appendCounters.maxAppendMs.toFixed(1)} ms` +
      (s.storeCounters
        ? `; group commit: ${s.storeCounters.rounds} rounds, ${s.storeCounters.records} records, longest ${s.storeCounters.maxRoundMs.toFixed(1)} ms`
        : ''),
    `status of:   ${ago(s.updatedAt, now)}`,
    ...scrubLines(s.scrub ?? null, now),
    `clients:     ${s.clients.length}`,
  ];
  for (const c of s.clients) {
    lines.push(
      `  ${c.publicKey}: ${c.connected ? `connected (${c.connections})` : 'not connected'}, last activity ${ago(c.lastActivityAt, now)}, ` +
        `${c.records} records / ${size(c.bytes)} acknowledged in this run, ${c.pendingAppends} not yet durable, ${size(c.totalBytes)} stored`,
    );
    for (const v of c.vaults) {
      const packs = v.packBytes ? ` + ${size(v.packBytes)} of page packs` : '';
      lines.push(
        `    vault ${v.vaultId}: records ${v.firstSeq}..${v.lastSeq} (generation ${v.lastGeneration}), ${size(v.bytes)}${packs}, last write ${ago(v.lastWriteAt, now)}`,
      );
    }
  }
  return lines;
}
