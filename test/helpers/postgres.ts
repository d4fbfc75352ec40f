// Throwaway PostgreSQL clusters for the tests: initdb into a temporary folder, one postgres
// process listening on 127.0.0.1 at a free port (trust auth, fsync on), stopped when the test
// process exits; and a streaming standby of such a cluster (pg_basebackup -R, its own port), for
// the replication tests. PostgreSQL refuses to run as root, so as root it runs as the `postgres` OS
// user (which Debian's package creates). Without PostgreSQL the tests are skipped with the reason,
// unless LNBACKUP_REQUIRE_POSTGRES is set (CI), where that is a failure.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, type TestContext } from 'node:test';
import pg from 'pg';
import { findPostgresBinary } from '../../src/postgres/binaries.js';
import { tempDir } from './paths.js';
import { sleep } from './waiting.js';

/** PostgreSQL is not available here; the test should be skipped with this reason. */
export class SkipError extends Error {
  override name = 'SkipError';
}

export interface TestPostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  readonly url: string;
  /** A URL for another database of the same cluster. */
  urlFor(database: string): string;
  /** Creates an empty database and returns its URL. */
  createDatabase(name: string): Promise<string>;
  /** Fast shutdown; waits until the server is gone. */
  stop(): Promise<void>;
  /** SIGKILL of the server (postmaster and every backend), as a crash would. */
  kill9(): void;
  /** Starts the server again on the same port and data (after stop or kill9); waits until it accepts connections. */
  restart(): Promise<void>;
  /** The postmaster's pid (changes on restart). */
  readonly pid: number;
  readonly port: number;
  readonly dataDir: string;
  /** The scratch folder holding the data directory (owned by the OS user the server runs as). */
  readonly dir: string;
  /** The server's log so far (its last `bytes`). */
  logTail(bytes?: number): string;
}

/** The OS user PostgreSQL runs as here: the `postgres` user when the tests run as root, else none (the current user). */
export interface ServerOwner {
  uid: number;
  gid: number;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

function osUser(name: string): { uid: number; gid: number } | null {
  const uid = spawnSync('id', ['-u', name], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', name], { encoding: 'utf8' });
  if (uid.status !== 0 || gid.status !== 0) return null;
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/** The pids whose parent is `pid` (from /proc/<n>/stat: "pid (comm) state ppid ..."). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Throws SkipError when PostgreSQL is missing here (a failure instead when LNBACKUP_REQUIRE_POSTGRES is set). */
function requirePostgres<T>(body: () => Promise<T>): Promise<T> {
  return body().catch((err: unknown) => {
    if (err instanceof SkipError && process.env.LNBACKUP_REQUIRE_POSTGRES) {
      throw new Error(`PostgreSQL is required here (LNBACKUP_REQUIRE_POSTGRES is set) but: ${err.message}`);
    }
    throw err;
  });
}

/** The OS user to run PostgreSQL as (null: this process's own); throws SkipError when PostgreSQL cannot run here. */
export function serverOwner(): ServerOwner | null {
  if (!findPostgresBinary('initdb') || !findPostgresBinary('postgres'))
    throw new SkipError('PostgreSQL is not installed (no initdb/postgres on PATH or under /usr/lib/postgresql/*/bin)');
  const asRoot = process.getuid?.() === 0;
  const user = asRoot ? osUser('postgres') : null;
  if (asRoot && !user) throw new SkipError("running as root and there is no 'postgres' OS user to run PostgreSQL as");
  return user;
}

export interface ServerScratch {
  dir: string;
  socketDir: string;
  /** Registers a kill of a server living in the folder, run at exit before the folder is removed. */
  killAtExit(kill: () => void): void;
}

/** A new temporary folder (with a socket folder inside) owned by the server's OS user. */
export function serverScratch(prefix: string, user: ServerOwner | null): ServerScratch {
  const kills: Array<() => void> = [];
  // Registered before tempDir's removal, so the servers are gone before their folder is.
  process.on('exit', () => kills.forEach((kill) => kill()));
  const dir = tempDir(prefix);
  const socketDir = path.join(dir, 'sock');
  fs.mkdirSync(socketDir);
  if (user) {
    fs.chownSync(dir, user.uid, user.gid);
    fs.chownSync(socketDir, user.uid, user.gid);
  }
  return { dir, socketDir, killAtExit: (kill) => kills.push(kill) };
}

/** Starts a throwaway cluster. Throws SkipError when PostgreSQL (or, as root, its OS user) is missing. */
export function startPostgres(): Promise<TestPostgres> {
  return requirePostgres(async () => {
    const user = serverOwner();
    const scratch = serverScratch('pg', user);
    const { dir } = scratch;
    const dataDir = path.join(dir, 'data');
    const init = spawnSync(findPostgresBinary('initdb') as string, ['-D', dataDir, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync'], {
      encoding: 'utf8',
      cwd: dir,
      ...(user ?? {}),
    });
    if (init.status !== 0) throw new Error(`initdb failed (${init.status}): ${init.stderr || init.stdout}`);
    return runServer({ scratch, dataDir, user });
  });
}

/**
 * Starts a streaming standby of `primary`: pg_basebackup -R with a physical slot named `name` and
 * application_name `name`, then its own server on a free port. The primary's
 * synchronous_standby_names is left as it is.
 */
export function startStandby(primary: TestPostgres, name: string): Promise<TestPostgres> {
  return requirePostgres(async () => {
    const user = serverOwner();
    const basebackup = findPostgresBinary('pg_basebackup');
    if (!basebackup) throw new SkipError('pg_basebackup is not installed');
    const scratch = serverScratch('pg-standby', user);
    const { dir } = scratch;
    const dataDir = path.join(dir, 'data');
    const conn = `host=127.0.0.1 port=${primary.port} user=postgres application_name=${name}`;
    const r = spawnSync(basebackup, ['-D', dataDir, '-R', '-C', '-S', name, '-X', 'stream', '--checkpoint=fast', '--no-sync', '-d', conn], {
      encoding: 'utf8',
      cwd: dir,
      ...(user ?? {}),
    });
    if (r.status !== 0) throw new Error(`pg_basebackup failed (${r.status}): ${r.stderr || r.stdout}`);
    return runServer({ scratch, dataDir, user, hotStandby: true });
  });
}

interface ServerFiles {
  scratch: ServerScratch;
  dataDir: string;
  user: ServerOwner | null;
  /** A standby: accept read-only connections while in recovery. */
  hotStandby?: boolean;
}

async function runServer(files: ServerFiles): Promise<TestPostgres> {
  const { dataDir, user } = files;
  const { dir, socketDir } = files.scratch;
  const postgresBin = findPostgresBinary('postgres') as string;
  const ids = user ?? {};
  // Whatever happens next, the server does not outlive the tests.
  let child: ChildProcess | null = null;
  let pid = 0;
  files.scratch.killAtExit(() => {
    if (pid > 0) killTree(pid);
  });
  const port = await freePort();
  const logFile = path.join(dir, 'postgres.log');
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;

  const launch = async (deadline = Date.now() + 60_000): Promise<void> => {
    const log = fs.openSync(logFile, 'a');
    if (user) fs.fchownSync(log, user.uid, user.gid);
    const args = [
      '-D',
      dataDir,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      `port=${port}`,
      '-c',
      `unix_socket_directories=${socketDir}`,
      '-c',
      'fsync=on',
      '-c',
      'max_connections=40',
      '-c',
      'shared_buffers=16MB',
      // A standby reconnects to a restarted primary within 0.1 s instead of 5 s.
      ...(files.hotStandby ? ['-c', 'hot_standby=on', '-c', 'wal_retrieve_retry_interval=100ms'] : []),
    ];
    const c = spawn(postgresBin, args, { cwd: dir, stdio: ['ignore', log, log], ...ids });
    fs.closeSync(log);
    child = c;
    pid = c.pid ?? 0;
    const exited = new Promise<number | null>((resolve) => c.once('exit', (code) => resolve(code)));
    for (;;) {
      const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
      client.on('error', () => undefined);
      try {
        await client.connect();
        await client.query('SELECT 1');
        await client.end();
        return;
      } catch {
        await client.end().catch(() => undefined);
      }
      const early = await Promise.race([exited, sleep(200).then(() => 'waiting' as const)]);
      if (early !== 'waiting') {
        // A restart right after kill9 may find the old backends still holding shared memory: retry.
        const tail = fs.readFileSync(logFile, 'utf8').slice(-2000);
        if (Date.now() > deadline) throw new Error(`postgres exited (${early}) before accepting connections:\n${tail}`);
        await sleep(500);
        return launch(deadline);
      }
      if (Date.now() > deadline) throw new Error(`postgres did not accept connections within 60 s:\n${fs.readFileSync(logFile, 'utf8').slice(-2000)}`);
    }
  };

  const waitGone = async (p: number): Promise<void> => {
    const c = child;
    if (c && c.exitCode === null && c.signalCode === null) await new Promise((r) => c.once('exit', r));
    for (let i = 0; i < 600 && fs.existsSync(`/proc/${p}`); i++) await sleep(50);
  };

  await launch();

  const urlFor = (database: string): string => `postgres://postgres@127.0.0.1:${port}/${database}`;
  return {
    url,
    urlFor,
    port,
    dataDir,
    dir,
    logTail: (bytes = 4000) => fs.readFileSync(logFile, 'utf8').slice(-bytes),
    get pid() {
      return pid;
    },
    async createDatabase(name: string): Promise<string> {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      return urlFor(name);
    },
    async stop(): Promise<void> {
      const p = pid;
      if (p <= 0) return;
      try {
        process.kill(p, 'SIGINT'); // fast shutdown
      } catch {
        // already gone
      }
      await waitGone(p);
      pid = 0;
    },
    kill9(): void {
      if (pid > 0) killTree(pid);
    },
    async restart(): Promise<void> {
      const p = pid;
      if (p > 0) await waitGone(p);
      // Backends of a killed postmaster leave once they notice; launch() retries until they did.
      await launch();
    },
  };
}

/** SIGKILL of the postmaster and of its children (the backends), like a crash of the machine's database. */
function killTree(pid: number): void {
  const kids = childrenOf(pid);
  for (const p of [pid, ...kids]) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Waits until no session but this one is connected to the database at `url`. A client killed by
 * SIGKILL leaves its backend running the statement it had sent, which may still commit: wait for
 * it before judging what the database holds.
 */
export async function waitForOtherSessions(url: string, timeoutMs = 30_000): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { rows } = await client.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()',
      );
      if (rows[0].n === 0) return;
      if (Date.now() > deadline) throw new Error(`${rows[0].n} other session(s) are still connected to the database after ${timeoutMs} ms`);
      await sleep(50);
    }
  } finally {
    await client.end();
  }
}

/**
 * For a describe() of tests that each want a database of their own: starts one cluster before the
 * suite's tests and stops it after them. The function returned gives a new, empty database's URL,
 * or skips the test (with the reason) and gives null when PostgreSQL is not available.
 */
export function databasePerTest(prefix: string): (t: TestContext) => Promise<string | null> {
  let cluster: TestPostgres | null = null;
  let skip: string | null = null;
  let made = 0;
  before(async () => {
    try {
      cluster = await startPostgres();
    } catch (err) {
      if (!(err instanceof SkipError)) throw err;
      skip = err.message;
    }
  });
  after(async () => {
    await cluster?.stop();
  });
  return async (t) => {
    if (!cluster) {
      t.skip(skip ?? 'PostgreSQL did not start');
      return null;
    }
    return cluster.createDatabase(`${prefix}${process.pid}_${++made}`);
  };
}
