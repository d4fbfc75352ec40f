// `lnbackup postgres standby`, on the standby machine: builds a streaming standby of the node's
// primary in an empty folder. Creates a physical replication slot on the primary (so the primary
// keeps the WAL the standby still needs), copies the primary with `pg_basebackup -R` (which writes
// standby.signal and a primary_conninfo carrying application_name = the standby's name, the name
// synchronous_standby_names will list), sets the standby's port, starts it with `pg_ctl`, and waits
// until the primary sees it streaming. A slot this made is dropped again if the copy fails, so no
// inactive slot is left filling the primary's disk.
// https://www.postgresql.org/docs/15/app-pgbasebackup.html, .../warm-standby.html#STREAMING-REPLICATION-SLOTS
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type pg from 'pg';
import { findPostgresBinary } from './binaries.js';
import { connectDsn } from './connect.js';
import { parseDsn, redactDsn, scrubSecret } from './dsn.js';

export interface StandbyOptions {
  /** The primary's DSN, for a role with REPLICATION (or a superuser). */
  primaryDsn: string;
  dataDir: string;
  /** application_name and slot name (default lightningd). */
  name?: string;
  /** The standby's port (default 5433). */
  port?: number;
  /** How long to wait for the standby to stream (default 120 s). */
  timeoutMs?: number;
  /** Progress: one line per step, and the copy's kB done/total. */
  onProgress?: (event: StandbyProgress) => void;
}

export type StandbyProgress = { step: string } | { copiedKb: number; totalKb: number };

export interface StandbyResult {
  name: string;
  dataDir: string;
  port: number;
  slot: string;
  slotCreated: boolean;
  /** The standby's state as the primary reports it once streaming. */
  state: string;
  /** null: the --primary role may not read it (no pg_read_all_stats). */
  syncState: string | null;
  copyMs: number;
  totalMs: number;
  logFile: string;
}

/** Refusals and failures of the setup (exit code 1), with what to do next. */
export class StandbySetupError extends Error {
  override name = 'StandbySetupError';
}

export const DEFAULT_STANDBY_NAME = 'lightningd';
const NAME_RULE = /^[a-z0-9_]{1,63}$/;

export function checkStandbyName(name: string): void {
  if (!NAME_RULE.test(name))
    throw new StandbySetupError(`standby name ${JSON.stringify(name)}: use 1 to 63 lower-case letters, digits or _ (it names the replication slot too)`);
}

/** Builds, starts and waits for the standby. */
export async function setupStandby(o: StandbyOptions): Promise<StandbyResult> {
  const started = performance.now();
  const name = o.name ?? DEFAULT_STANDBY_NAME;
  const port = o.port ?? 5433;
  const progress = o.onProgress ?? (() => undefined);
  checkStandbyName(name);
  const url = parseDsn(o.primaryDsn);
  if (process.getuid?.() === 0) {
    throw new StandbySetupError(
      'PostgreSQL refuses to run as root: run this as the OS user PostgreSQL runs as, e.g. runuser -u postgres -- lnbackup postgres standby …',
    );
  }
  const basebackup = findPostgresBinary('pg_basebackup');
  const pgCtl = findPostgresBinary('pg_ctl');
  if (!basebackup || !pgCtl) throw new StandbySetupError('pg_basebackup and pg_ctl are not installed here (Debian: apt install postgresql)');
  const dataDir = path.resolve(o.dataDir);
  if (fs.existsSync(dataDir) && fs.readdirSync(dataDir).length > 0) {
    throw new StandbySetupError(`${dataDir} is not empty: give a new or empty folder for the standby's data (this never overwrites a cluster)`);
  }

  progress({ step: `connecting to the primary ${redactDsn(o.primaryDsn)}` });
  const client = await connectDsn(o.primaryDsn, { applicationName: 'lnbackup-standby-setup' });
  let slotCreated = false;
  try {
    await checkPrimaryTakesStandby(client);
    slotCreated = await ensureSlot(client, name, progress);
  } finally {
    await client.end().catch(() => undefined);
  }

  const copyStart = performance.now();
  url.searchParams.set('application_name', name);
  // The password goes to pg_basebackup in its environment, not on its command line (which other
  // users of the machine can read in ps); -R still writes it into primary_conninfo.
  const password = decodeURIComponent(url.password);
  url.password = '';
  try {
    progress({ step: `copying the primary into ${dataDir} (pg_basebackup -R, slot ${name})` });
    await runBasebackup(basebackup, url.toString(), password, dataDir, name, progress, o.primaryDsn);
  } catch (err) {
    if (slotCreated) await dropSlot(o.primaryDsn, name);
    throw err;
  }
  const copyMs = performance.now() - copyStart;
  // The copy carries the primary's settings; the standby listens on its own port.
  fs.appendFileSync(path.join(dataDir, 'postgresql.auto.conf'), `port = ${port}\n`);

  const logFile = path.join(dataDir, 'standby.log');
  progress({ step: `starting the standby on port ${port} (pg_ctl start; log ${logFile})` });
  const start = await runProgram(pgCtl, ['-D', dataDir, '-l', logFile, '-w', '-t', '60', 'start'], process.env);
  if (start.code !== 0) throw new StandbySetupError(`pg_ctl could not start the standby (exit ${start.code}): ${start.output.trim()}\n${tail(logFile)}`);

  const seen = await waitStreaming(o.primaryDsn, name, o.timeoutMs ?? 120_000, logFile, progress);
  return {
    name,
    dataDir,
    port,
    slot: name,
    slotCreated,
    state: seen.state,
    syncState: seen.syncState,
    copyMs: Math.round(copyMs),
    totalMs: Math.round(performance.now() - started),
    logFile,
  };
}

async function checkPrimaryTakesStandby(client: pg.Client): Promise<void> {
  const { rows } = await client.query<{ in_recovery: boolean; can_replicate: boolean; wal_level: string; senders: number; usr: string }>(
    `SELECT pg_is_in_recovery() AS in_recovery, current_user AS usr,
            (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user) AS can_replicate,
            current_setting('wal_level') AS wal_level, current_setting('max_wal_senders')::int AS senders`,
  );
  const r = rows[0];
  if (r.in_recovery) throw new StandbySetupError('--primary names a standby (in recovery): give the primary the node writes to');
  if (!r.can_replicate)
    throw new StandbySetupError(`role ${r.usr} may not replicate: on the primary, ALTER ROLE "${r.usr}" REPLICATION; (or use a role that has it)`);
  if (r.wal_level === 'minimal')
    throw new StandbySetupError('the primary has wal_level = minimal: ALTER SYSTEM SET wal_level = replica; and restart it (see `lnbackup postgres primary`)');
  if (r.senders === 0) throw new StandbySetupError('the primary has max_wal_senders = 0: ALTER SYSTEM SET max_wal_senders = 10; and restart it');
}

/** Creates the physical slot, or reuses an inactive one of that name; true when it created it. */
async function ensureSlot(client: pg.Client, name: string, progress: (e: StandbyProgress) => void): Promise<boolean> {
  const { rows } = await client.query<{ active: boolean; slot_type: string }>('SELECT active, slot_type FROM pg_replication_slots WHERE slot_name = $1', [
    name,
  ]);
  if (rows.length > 0) {
    if (rows[0].slot_type !== 'physical') throw new StandbySetupError(`the primary has a ${rows[0].slot_type} slot named ${name}: choose another --name`);
    if (rows[0].active)
      throw new StandbySetupError(`slot ${name} on the primary is in use by a running standby: choose another --name, or stop that standby first`);
    progress({ step: `reusing the primary's inactive replication slot ${name}` });
    return false;
  }
  progress({ step: `creating the physical replication slot ${name} on the primary` });
  await client.query('SELECT pg_create_physical_replication_slot($1)', [name]);
  return true;
}

async function dropSlot(dsn: string, name: string): Promise<void> {
  const client = await connectDsn(dsn).catch(() => null);
  if (!client) return;
  await client.query('SELECT pg_drop_replication_slot($1)', [name]).catch(() => undefined);
  await client.end().catch(() => undefined);
}

async function runBasebackup(
  bin: string,
  url: string,
  password: string,
  dataDir: string,
  slot: string,
  progress: (e: StandbyProgress) => void,
  dsn: string,
): Promise<void> {
  const env = password ? { ...process.env, PGPASSWORD: password } : process.env;
  const r = await runProgram(bin, ['-D', dataDir, '-R', '-S', slot, '-X', 'stream', '--checkpoint=fast', '-P', '-d', url], env, (chunk) => {
    for (const m of chunk.matchAll(/(\d+)\/(\d+) kB \(\d+%\)/g)) progress({ copiedKb: Number(m[1]), totalKb: Number(m[2]) });
  });
  if (r.code !== 0) {
    // Leave the folder as empty as it was given.
    if (fs.existsSync(dataDir)) for (const f of fs.readdirSync(dataDir)) fs.rmSync(path.join(dataDir, f), { recursive: true, force: true });
    throw new StandbySetupError(`pg_basebackup failed (exit ${r.code}): ${scrubSecret(r.output.trim().split('\n').slice(-3).join(' '), dsn)}`);
  }
}

/** Runs a program to its end; its stdout and stderr together (the last 64 KiB). */
function runProgram(bin: string, args: string[], env: NodeJS.ProcessEnv, onOutput?: (chunk: string) => void): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let output = '';
    const take = (d: Buffer): void => {
      const text = d.toString();
      output = (output + text).slice(-65536);
      onOutput?.(text);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-8).join('\n');
  } catch {
    return '';
  }
}

/**
 * Waits until the primary sees the standby streaming. A role without pg_read_all_stats sees
 * pg_stat_replication's state as NULL; then the standby counts as streaming once the slot is active
 * and the standby has flushed the WAL the primary had written when the wait began.
 */
async function waitStreaming(
  dsn: string,
  name: string,
  timeoutMs: number,
  logFile: string,
  progress: (e: StandbyProgress) => void,
): Promise<{ state: string; syncState: string | null }> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  let target: string | null = null;
  for (;;) {
    const client = await connectDsn(dsn).catch(() => null);
    if (client) {
      try {
        target ??= (await client.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn;
        const { rows } = await client.query<{ state: string | null; sync_state: string | null }>(
          'SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1',
          [name],
        );
        const row = rows[0];
        if (row?.state === 'streaming') return { state: row.state, syncState: row.sync_state };
        if (row && row.state === null) {
          const slot = await client.query<{ done: boolean }>(
            'SELECT active AND restart_lsn >= $1::pg_lsn AS done FROM pg_replication_slots WHERE slot_name = $2',
            [target, name],
          );
          if (slot.rows[0]?.done) return { state: 'streaming', syncState: null };
        }
        const now = row ? `the primary sees standby ${name}${row.state ? ` in state ${row.state}` : ''}` : `the primary does not see standby ${name} yet`;
        if (now !== last) progress({ step: `${now}; waiting for it to stream` });
        last = now;
      } finally {
        await client.end().catch(() => undefined);
      }
    }
    if (Date.now() > deadline)
      throw new StandbySetupError(
        `the standby did not stream within ${timeoutMs / 1000} s (it keeps running; its log ${logFile} ends with):\n${tail(logFile)}`,
      );
    await new Promise((r) => setTimeout(r, 250));
  }
}
