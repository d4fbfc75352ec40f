// `lnbackup postgres standby` and `lnbackup postgres primary [--apply]` build a working synchronous
// pair from an empty primary cluster and an empty folder, as real child processes run as
// PostgreSQL's OS user: --apply is refused while no standby streams (nothing changes), the standby
// is copied, started and seen streaming, --apply makes it sync, the node's check says zero-loss
// and a commit on the primary is on the standby. Also the standby command's refusals.
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { findPostgresBinary } from '../src/postgres/binaries.js';
import { freePort, serverOwner, serverScratch, SkipError, startPostgres, type ServerScratch, type TestPostgres } from './helpers/postgres.js';
import { lnbackupAsync, NODE_PASSWORD, runSql } from './helpers/postgresPair.js';
import { until } from './helpers/waiting.js';

process.setMaxListeners(50);

/** Stops a server pg_ctl started in `dataDir` (as its OS user), and kills it at exit whatever happens. */
function ownStandby(scratch: ServerScratch, dataDir: string, owner: { uid: number; gid: number } | null): () => void {
  const pidFile = path.join(dataDir, 'postmaster.pid');
  const kill = (): void => {
    try {
      const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      // not running
    }
  };
  scratch.killAtExit(kill);
  return () => {
    if (fs.existsSync(pidFile)) spawnSync(findPostgresBinary('pg_ctl') as string, ['-D', dataDir, '-m', 'fast', '-w', 'stop'], { ...(owner ?? {}), cwd: '/' });
  };
}

test('standby + primary --apply build a working synchronous pair from two empty clusters', async (t) => {
  let primary: TestPostgres;
  let owner;
  try {
    primary = await startPostgres(); // with LNBACKUP_REQUIRE_POSTGRES set, a missing PostgreSQL fails here
    owner = serverOwner();
  } catch (err) {
    if (err instanceof SkipError) return t.skip(err.message);
    throw err;
  }
  const scratch = serverScratch('pg-setup', owner);
  const { dir } = scratch;
  const dataDir = path.join(dir, 'standby');
  const stopStandby = ownStandby(scratch, dataDir, owner);
  try {
    await runSql(primary.url, "CREATE ROLE replicator LOGIN REPLICATION PASSWORD 'repl-pw'");
    await runSql(primary.url, `CREATE ROLE node LOGIN PASSWORD '${NODE_PASSWORD}'`);
    await runSql(primary.url, 'GRANT pg_monitor TO node');
    await runSql(primary.url, 'CREATE DATABASE lightningdb OWNER node');
    const superDsn = `postgres://postgres@127.0.0.1:${primary.port}/postgres`;
    const nodeDsn = `postgres://node:${NODE_PASSWORD}@127.0.0.1:${primary.port}/lightningdb`;

    // Before any standby: the check names the empty synchronous_standby_names; --apply refuses.
    const before = await lnbackupAsync(['postgres', 'check', '--dsn', nodeDsn, '--json']);
    assert.equal(before.code, 3);
    const refused = await lnbackupAsync(['postgres', 'primary', '--dsn', superDsn, '--apply']);
    assert.equal(refused.code, 3, refused.stderr);
    assert.match(
      refused.stderr,
      /refusing to apply: standby lightningd is not connected, and with synchronous_standby_names naming it every commit of the node would wait/,
    );
    assert.equal(
      (await runSql(superDsn, 'SHOW synchronous_standby_names')).rows[0].synchronous_standby_names,
      '',
      '--apply changed something though it refused',
    );

    const port = await freePort();
    const standby = await lnbackupAsync(
      ['postgres', 'standby', '--primary', `postgres://replicator:repl-pw@127.0.0.1:${primary.port}/postgres`, '--data-dir', dataDir, '--port', String(port)],
      owner,
    );
    assert.equal(standby.code, 0, standby.stdout + standby.stderr);
    assert.match(standby.stderr, /creating the physical replication slot lightningd on the primary/);
    assert.match(standby.stderr, /starting the standby on port \d+/);
    assert.match(standby.stdout, /standby lightningd streams from the primary \(sync state not visible to this role\)/);
    assert.match(standby.stdout, /next, on the primary: lnbackup postgres primary --dsn <superuser dsn> --standby-name lightningd --apply/);
    assert.ok(!standby.stdout.includes('repl-pw') && !standby.stderr.includes('repl-pw'), 'the password appears in the output');
    // The standby keeps the password to reconnect (pg_basebackup got it from PGPASSWORD, not argv).
    const conninfo = fs.readFileSync(path.join(dataDir, 'postgresql.auto.conf'), 'utf8');
    assert.match(conninfo, /primary_conninfo = '[^\n]*user=replicator password=(?:'')?repl-pw(?:'')? [^\n]*application_name=lightningd/);
    assert.match(conninfo, new RegExp(`^port = ${port}$`, 'm'));

    const plan = await lnbackupAsync(['postgres', 'primary', '--dsn', superDsn, '--json']);
    assert.equal(plan.code, 0, plan.stderr);
    assert.deepEqual(plan.json?.statements, ["ALTER SYSTEM SET synchronous_standby_names = 'lightningd';", 'SELECT pg_reload_conf();']);

    const apply = await lnbackupAsync(['postgres', 'primary', '--dsn', superDsn, '--apply']);
    assert.equal(apply.code, 0, apply.stdout + apply.stderr);
    assert.match(apply.stdout, /applied: standby lightningd is sync/);

    const check = await lnbackupAsync(['postgres', 'check', '--dsn', nodeDsn, '--json']);
    assert.equal(check.code, 0, check.stdout);
    assert.equal(check.json?.verdict, 'zero-loss');
    const noop = await lnbackupAsync(['postgres', 'primary', '--dsn', superDsn, '--apply', '--json']);
    assert.equal(noop.code, 0, noop.stdout);
    assert.deepEqual(noop.json?.statements, []);

    // A commit on the primary is on the standby (which runs as its own server on its own port).
    await runSql(nodeDsn, 'CREATE TABLE t (v text); INSERT INTO t VALUES ($$through the pair$$)');
    const standbyUrl = `postgres://postgres@127.0.0.1:${port}/lightningdb`;
    await until(
      'the row on the standby',
      async () => (await runSql(standbyUrl, 'SELECT v FROM t').catch(() => ({ rows: [] }))).rows[0]?.v === 'through the pair',
      30_000,
      100,
    );
    assert.equal((await runSql(standbyUrl, 'SELECT pg_is_in_recovery() AS r')).rows[0].r, true);

    // The standby command refuses a folder that is not empty, and to run as root.
    const again = await lnbackupAsync(['postgres', 'standby', '--primary', superDsn, '--data-dir', dataDir, '--port', String(port)], owner);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /is not empty: give a new or empty folder/);
    if (process.getuid?.() === 0) {
      const root = await lnbackupAsync(['postgres', 'standby', '--primary', superDsn, '--data-dir', path.join(dir, 'other')]);
      assert.equal(root.code, 1);
      assert.match(root.stderr, /PostgreSQL refuses to run as root: run this as the OS user PostgreSQL runs as/);
    }
    const badName = await lnbackupAsync(['postgres', 'standby', '--primary', superDsn, '--data-dir', path.join(dir, 'other'), '--name', 'Bad-Name'], owner);
    assert.equal(badName.code, 2);

    // With the standby gone and the settings in place, --apply has nothing to do and says the node waits.
    stopStandby();
    const waiting = await lnbackupAsync(['postgres', 'primary', '--dsn', superDsn, '--apply']);
    assert.equal(waiting.code, 3);
    assert.match(waiting.stderr, /nothing to apply: the primary already makes every commit wait for standby lightningd, which is not connected/);
  } finally {
    stopStandby();
    await primary.stop();
  }
});
