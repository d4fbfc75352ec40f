// A synchronous PostgreSQL pair for the replication tests: a primary and a streaming standby on two
// loopback ports (pg_basebackup -R with a slot), a non-superuser role `node` with a password owning
// database `lightningdb` (as a Core Lightning node would have it), and the primary's
// synchronous_standby_names naming the standby. Both servers stop when the test process exits.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { cliEntry } from './paths.js';
import { after, before } from 'node:test';
import { SkipError, startPostgres, startStandby, type ServerOwner, type TestPostgres } from './postgres.js';
import { until } from './waiting.js';

export const NODE_PASSWORD = 'n0de-Secret-pw';
export const STANDBY_NAME = 'lightningd';

export interface PostgresPair {
  primary: TestPostgres;
  standby: TestPostgres;
  /** The node's wallet DSN: role `node` (with its password) in database lightningdb on the primary. */
  nodeDsn: string;
  /** Runs SQL on the primary as the superuser (in database lightningdb). */
  sql(text: string, params?: unknown[]): Promise<pg.QueryResult>;
  /** Waits until the primary reports the standby streaming as sync. */
  waitSync(timeoutMs?: number): Promise<void>;
  /** Stops both servers. */
  stop(): Promise<void>;
}

/** Runs one statement on a fresh connection to `url`. */
export async function runSql(url: string, text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  client.on('error', () => undefined);
  await client.connect();
  try {
    return await client.query(text, params);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function startPair(): Promise<PostgresPair> {
  const primary = await startPostgres();
  let standby: TestPostgres | null = null;
  try {
    await runSql(primary.url, `CREATE ROLE node LOGIN PASSWORD '${NODE_PASSWORD}'`);
    await runSql(primary.url, 'GRANT pg_monitor TO node');
    await runSql(primary.url, 'CREATE DATABASE lightningdb OWNER node');
    standby = await startStandby(primary, STANDBY_NAME);
    const dbUrl = primary.urlFor('lightningdb');
    const sql = (text: string, params?: unknown[]): Promise<pg.QueryResult> => runSql(dbUrl, text, params);
    const waitSync = async (timeoutMs = 60_000): Promise<void> => {
      await until(
        'the standby streaming as sync',
        async () =>
          (await sql("SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming' AND sync_state = 'sync'", [STANDBY_NAME]))
            .rowCount === 1,
        timeoutMs,
        100,
      );
    };
    await sql(`ALTER SYSTEM SET synchronous_standby_names = '${STANDBY_NAME}'`);
    await sql('SELECT pg_reload_conf()');
    await waitSync();
    const s = standby;
    return {
      primary,
      standby: s,
      nodeDsn: `postgres://node:${NODE_PASSWORD}@127.0.0.1:${primary.port}/lightningdb`,
      sql,
      waitSync,
      async stop() {
        await s.stop();
        await primary.stop();
      },
    };
  } catch (err) {
    await standby?.stop();
    await primary.stop();
    throw err;
  }
}

/** Sets one of the primary's settings (ALTER SYSTEM) and reloads; returns once a new session sees it. */
export async function setSystem(pair: PostgresPair, name: string, value: string): Promise<void> {
  await pair.sql(`ALTER SYSTEM SET ${name} = '${value}'`);
  await pair.sql('SELECT pg_reload_conf()');
  // pg_reload_conf only signals the postmaster.
  await until(
    `${name} = '${value}' reloaded`,
    async () => (await pair.sql('SELECT setting FROM pg_settings WHERE name = $1', [name])).rows[0].setting === value,
    10_000,
    20,
  );
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  json: Record<string, unknown> | null;
}

/** Runs `lnbackup …` as a child process without blocking this one (the servers keep running); as `owner` when given. */
export function lnbackupAsync(args: readonly string[], owner: ServerOwner | null = null, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliEntry, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...(owner ?? {}), cwd: owner ? '/' : process.cwd() });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      let json: Record<string, unknown> | null = null;
      try {
        json = JSON.parse(stdout) as Record<string, unknown>;
      } catch {
        json = null;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

/** Adds a pg_hba.conf line in front of the others and reloads (e.g. to make a role need its password). */
export async function prependHba(server: TestPostgres, line: string): Promise<void> {
  const file = path.join(server.dataDir, 'pg_hba.conf');
  fs.writeFileSync(file, `${line}\n${fs.readFileSync(file, 'utf8')}`);
  await runSql(server.url, 'SELECT pg_reload_conf()');
}

/**
 * One pair for the whole test file: started before its tests, stopped after them. `pair()` is the
 * pair, or null with `skipReason()` saying why (no PostgreSQL on this machine).
 */
export function pairForFile(): { pair: () => PostgresPair | null; skipReason: () => string } {
  let pair: PostgresPair | null = null;
  let skip = '';
  before(async () => {
    try {
      pair = await startPair();
    } catch (err) {
      if (err instanceof SkipError) skip = err.message;
      else throw err;
    }
  });
  after(async () => {
    await pair?.stop();
  });
  return { pair: () => pair, skipReason: () => skip };
}
