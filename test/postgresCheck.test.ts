// `lnbackup postgres check` on a real primary/standby pair: a correct synchronous setup is
// zero-loss; each way it silently stops being so (the reference's list: empty
// synchronous_standby_names, remote_write, local, a per-role and a per-database override, an
// override in the DSN, a connected-but-async standby, a disconnected standby, an inactive slot) is
// detected and named with its fix; bad input (malformed DSN, nothing listening, a server that
// never answers, wrong password, no such database, a standby's DSN, a role that sees NULL columns
// in pg_stat_replication) gets a clear message and the documented exit code; the password never
// appears in the output.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { checkPostgres, type CheckResult } from '../src/postgres/check.js';
import { freePort } from './helpers/postgres.js';
import {
  lnbackupAsync,
  NODE_PASSWORD,
  pairForFile,
  prependHba,
  runSql,
  setSystem,
  STANDBY_NAME,
  type CliResult,
  type PostgresPair,
} from './helpers/postgresPair.js';
import { until } from './helpers/waiting.js';

process.setMaxListeners(50);

const shared = pairForFile();

function need(t: { skip(m: string): void }): PostgresPair | null {
  const pair = shared.pair();
  if (!pair) t.skip(shared.skipReason());
  return pair;
}

const codes = (r: CheckResult): string[] => r.reasons.map((x) => x.code);

function assertNoPassword(r: CliResult): void {
  assert.ok(!r.stdout.includes(NODE_PASSWORD) && !r.stderr.includes(NODE_PASSWORD), 'the password appears in the output');
}

test('a correct synchronous pair is zero-loss, with its standby, lags, slot and settings (CLI, --json and text)', async (t) => {
  const p = need(t);
  if (!p) return;
  const r = await checkPostgres(p.nodeDsn);
  assert.equal(r.verdict, 'zero-loss', JSON.stringify(r.reasons));
  assert.equal(r.primary, true);
  assert.equal(r.effect, null);
  assert.deepEqual(r.reasons, []);
  assert.equal(r.user, 'node');
  assert.equal(r.database, 'lightningdb');
  assert.equal(r.settings.wal_level.value, 'replica');
  assert.equal(r.standbys.length, 1);
  assert.equal(r.standbys[0].name, STANDBY_NAME);
  assert.equal(r.standbys[0].syncState, 'sync');
  assert.deepEqual(
    r.slots.map((s) => [s.name, s.active]),
    [[STANDBY_NAME, true]],
  );
  assert.ok(!r.dsn.includes(NODE_PASSWORD) && r.dsn.includes('node:***@'));
  t.diagnostic(`check duration: ${r.durationMs} ms (library call)`);

  const json = await lnbackupAsync(['postgres', 'check', '--dsn', p.nodeDsn, '--json']);
  assert.equal(json.code, 0, json.stderr);
  assert.equal(json.json?.verdict, 'zero-loss');
  assertNoPassword(json);
  const text = await lnbackupAsync(['postgres', 'check', '--dsn', p.nodeDsn]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /verdict: ZERO-LOSS/);
  assert.match(text.stdout, new RegExp(`${STANDBY_NAME}  streaming  sync`));
  assert.match(text.stdout, /checked in [\d.]+ ms/);
  assertNoPassword(text);
});

test('remote_apply, ANY 1 (quorum) and FIRST 1 lists are zero-loss too', async (t) => {
  const p = need(t);
  if (!p) return;
  try {
    await setSystem(p, 'synchronous_commit', 'remote_apply');
    await setSystem(p, 'synchronous_standby_names', `ANY 1 (other, ${STANDBY_NAME})`);
    const quorum = await until(
      'quorum',
      async () => {
        const r = await checkPostgres(p.nodeDsn);
        return r.standbys[0]?.syncState === 'quorum' ? r : null;
      },
      30_000,
      50,
    );
    assert.equal(quorum.verdict, 'zero-loss', JSON.stringify(quorum.reasons));
    await setSystem(p, 'synchronous_standby_names', `other, "${STANDBY_NAME}"`);
    await p.waitSync();
    assert.equal((await checkPostgres(p.nodeDsn)).verdict, 'zero-loss');
  } finally {
    await setSystem(p, 'synchronous_commit', 'on');
    await setSystem(p, 'synchronous_standby_names', STANDBY_NAME);
    await p.waitSync();
  }
});

/** Breaks the setup with `breakIt`, checks (library and CLI), then repairs it with `repair` and waits until zero-loss again. */
async function broken(
  p: PostgresPair,
  breakIt: () => Promise<void>,
  repair: () => Promise<void>,
  dsn = p.nodeDsn,
): Promise<{ lib: CheckResult; cli: CliResult }> {
  await breakIt();
  try {
    const lib = await checkPostgres(dsn);
    const cli = await lnbackupAsync(['postgres', 'check', '--dsn', dsn]);
    assert.equal(lib.verdict, 'not-zero-loss');
    assert.equal(cli.code, 3, cli.stdout + cli.stderr);
    assert.match(cli.stdout, /verdict: NOT ZERO-LOSS/);
    assertNoPassword(cli);
    return { lib, cli };
  } finally {
    await repair();
    await until('zero-loss again', async () => (await checkPostgres(p.nodeDsn)).verdict === 'zero-loss', 60_000, 100);
  }
}

/** The reason with `code`, whose fix appears in the CLI's output. */
function reasonIn(r: { lib: CheckResult; cli: CliResult }, code: string): { problem: string; fix: string } {
  const reason = r.lib.reasons.find((x) => x.code === code);
  assert.ok(reason, `no ${code} among ${codes(r.lib).join(', ')}`);
  assert.ok(r.cli.stdout.includes(`[${code}]`), `the CLI does not name ${code}`);
  assert.ok(r.cli.stdout.includes(`fix: ${reason.fix}`), `the CLI does not print the fix for ${code}`);
  return reason;
}

test('empty synchronous_standby_names: every commit asynchronous', async (t) => {
  const p = need(t);
  if (!p) return;
  const r = await broken(
    p,
    () => setSystem(p, 'synchronous_standby_names', ''),
    () => setSystem(p, 'synchronous_standby_names', STANDBY_NAME),
  );
  const reason = reasonIn(r, 'no-synchronous-standby-names');
  assert.equal(
    reason.fix,
    `ALTER SYSTEM SET synchronous_standby_names = '${STANDBY_NAME}'; SELECT pg_reload_conf(); (\`lnbackup postgres primary --apply\` does it)`,
  );
  assert.equal(r.lib.effect, 'unprotected');
  // The standby is still connected, now async: named as such in the standby list.
  assert.equal(r.lib.standbys[0].syncState, 'async');
});

test('synchronous_commit = remote_write and = local on the server', async (t) => {
  const p = need(t);
  if (!p) return;
  const restore = (): Promise<void> => setSystem(p, 'synchronous_commit', 'on');
  const rw = await broken(p, () => setSystem(p, 'synchronous_commit', 'remote_write'), restore);
  assert.deepEqual(codes(rw.lib), ['commit-remote-write']);
  assert.match(reasonIn(rw, 'commit-remote-write').problem, /power cut of both machines/);
  assert.equal(rw.lib.effect, 'unprotected');
  const local = await broken(p, () => setSystem(p, 'synchronous_commit', 'local'), restore);
  assert.deepEqual(codes(local.lib), ['commit-local']);
  assert.equal(reasonIn(local, 'commit-local').fix, 'ALTER SYSTEM SET synchronous_commit = on; SELECT pg_reload_conf();');
});

test("per-role, per-database and per-role-in-database overrides of synchronous_commit count (the node's own session)", async (t) => {
  const p = need(t);
  if (!p) return;
  const role = await broken(
    p,
    () => p.sql('ALTER ROLE node SET synchronous_commit = local').then(() => undefined),
    () => p.sql('ALTER ROLE node RESET synchronous_commit').then(() => undefined),
  );
  assert.deepEqual(codes(role.lib), ['role-override']);
  assert.equal(reasonIn(role, 'role-override').fix, 'ALTER ROLE "node" RESET synchronous_commit;');
  // A superuser's session does not see the node role's override: the check must use the node's DSN.
  assert.equal((await runSql(p.primary.urlFor('lightningdb'), 'SHOW synchronous_commit')).rows[0].synchronous_commit, 'on');

  const db = await broken(
    p,
    () => p.sql('ALTER DATABASE lightningdb SET synchronous_commit = remote_write').then(() => undefined),
    () => p.sql('ALTER DATABASE lightningdb RESET synchronous_commit').then(() => undefined),
  );
  assert.deepEqual(codes(db.lib), ['database-override']);
  assert.equal(reasonIn(db, 'database-override').fix, 'ALTER DATABASE "lightningdb" RESET synchronous_commit;');

  const both = await broken(
    p,
    () => p.sql('ALTER ROLE node IN DATABASE lightningdb SET synchronous_commit = off').then(() => undefined),
    () => p.sql('ALTER ROLE node IN DATABASE lightningdb RESET synchronous_commit').then(() => undefined),
  );
  assert.deepEqual(codes(both.lib), ['role-database-override']);

  const inDsn = `${p.nodeDsn}?options=${encodeURIComponent('-c synchronous_commit=local')}`;
  const client = await broken(
    p,
    async () => undefined,
    async () => undefined,
    inDsn,
  );
  assert.deepEqual(codes(client.lib), ['client-override']);
});

test('a standby connected but async (its name not in synchronous_standby_names): named, and commits wait', async (t) => {
  const p = need(t);
  if (!p) return;
  const r = await broken(
    p,
    () => setSystem(p, 'synchronous_standby_names', 'other_standby'),
    () => setSystem(p, 'synchronous_standby_names', STANDBY_NAME),
  );
  const reason = reasonIn(r, 'standby-async');
  assert.match(reason.problem, new RegExp(`standby ${STANDBY_NAME} is connected but async`));
  assert.match(reason.fix, new RegExp(`synchronous_standby_names = '${STANDBY_NAME}'`));
  assert.equal(r.lib.effect, 'commits-wait');
  assert.match(r.cli.stdout, /meanwhile: every commit of the node waits/);
});

test('a disconnected standby: commits wait (named), its slot is inactive (warned)', async (t) => {
  const p = need(t);
  if (!p) return;
  const r = await broken(
    p,
    () => p.standby.stop(),
    async () => {
      await p.standby.restart();
      await p.waitSync();
    },
  );
  assert.deepEqual(codes(r.lib), ['standby-disconnected']);
  reasonIn(r, 'standby-disconnected');
  assert.equal(r.lib.effect, 'commits-wait');
  assert.deepEqual(r.lib.standbys, []);
  assert.deepEqual(
    r.lib.warnings.map((w) => w.code),
    ['inactive-slot'],
  );
  assert.match(r.cli.stdout, /warning \[inactive-slot\]: replication slot lightningd is inactive/);
});

test('FIRST 2 with one standby: too few sync standbys, commits wait; local with the standby gone: unprotected, not stalled', async (t) => {
  const p = need(t);
  if (!p) return;
  const two = await broken(
    p,
    () => setSystem(p, 'synchronous_standby_names', `FIRST 2 (${STANDBY_NAME}, other)`),
    () => setSystem(p, 'synchronous_standby_names', STANDBY_NAME),
  );
  assert.deepEqual(codes(two.lib), ['too-few-sync-standbys']);
  assert.match(reasonIn(two, 'too-few-sync-standbys').fix, new RegExp(`synchronous_standby_names = 'FIRST 1 \\(${STANDBY_NAME}, other\\)'`));
  assert.equal(two.lib.effect, 'commits-wait');

  const gone = await broken(
    p,
    async () => {
      await setSystem(p, 'synchronous_commit', 'local');
      await p.standby.stop();
    },
    async () => {
      await setSystem(p, 'synchronous_commit', 'on');
      await p.standby.restart();
      await p.waitSync();
    },
  );
  assert.deepEqual(codes(gone.lib), ['commit-local', 'standby-disconnected']);
  assert.equal(gone.lib.effect, 'unprotected');
  assert.doesNotMatch(reasonIn(gone, 'standby-disconnected').problem, /stalled/);
  assert.match(gone.cli.stdout, /meanwhile: the node's commits go through without a standby/);
});

test('an inactive slot left over from a gone standby is warned about, and the verdict stays zero-loss', async (t) => {
  const p = need(t);
  if (!p) return;
  await p.sql("SELECT pg_create_physical_replication_slot('old_standby', true)");
  try {
    const r = await checkPostgres(p.nodeDsn);
    assert.equal(r.verdict, 'zero-loss');
    assert.deepEqual(
      r.warnings.map((w) => w.code),
      ['inactive-slot'],
    );
    assert.match(r.warnings[0].problem, /old_standby is inactive and keeps [\d.]+ MiB of WAL/);
    assert.equal(r.warnings[0].fix, "start the standby that uses slot old_standby, or if it is gone for good: SELECT pg_drop_replication_slot('old_standby');");
    const cli = await lnbackupAsync(['postgres', 'check', '--dsn', p.nodeDsn]);
    assert.equal(cli.code, 0);
    assert.match(cli.stdout, /old_standby {2}physical {2}INACTIVE/);
  } finally {
    await p.sql("SELECT pg_drop_replication_slot('old_standby')");
  }
});

test("a role without pg_monitor sees NULL columns in pg_stat_replication: 'cannot verify', with the GRANT", async (t) => {
  const p = need(t);
  if (!p) return;
  await p.sql("CREATE ROLE plain LOGIN PASSWORD 'plain-pw'");
  try {
    const dsn = `postgres://plain:plain-pw@127.0.0.1:${p.primary.port}/lightningdb`;
    const r = await checkPostgres(dsn);
    assert.deepEqual(codes(r), ['standbys-hidden']);
    assert.equal(r.reasons[0].fix, 'GRANT pg_monitor TO "plain";  (as a superuser on the primary; pg_monitor includes pg_read_all_stats)');
    assert.equal(r.effect, 'unknown');
    const cli = await lnbackupAsync(['postgres', 'check', '--dsn', dsn, '--json']);
    assert.equal(cli.code, 3);
    assert.equal(cli.json?.verdict, 'not-zero-loss');
    assert.equal(cli.stderr, '');
  } finally {
    await p.sql('DROP ROLE plain');
  }
});

test("a standby's DSN: not the primary, exit 3", async (t) => {
  const p = need(t);
  if (!p) return;
  const dsn = `postgres://postgres@127.0.0.1:${p.standby.port}/postgres`;
  const r = await checkPostgres(dsn);
  assert.equal(r.primary, false);
  assert.deepEqual(codes(r), ['not-primary']);
  const cli = await lnbackupAsync(['postgres', 'check', '--dsn', dsn]);
  assert.equal(cli.code, 3);
  assert.match(cli.stdout, /STANDBY \(in recovery\)/);
  assert.match(cli.stdout, /fix: give the primary's DSN/);
});

test('bad input: malformed DSN (2), nothing listening, wrong password, no such database (1); clear messages, no stack trace, no password', async (t) => {
  const p = need(t);
  if (!p) return;
  const noStack = (r: CliResult): void => {
    assert.ok(!/\n\s+at /.test(r.stderr), `a stack trace: ${r.stderr}`);
    assertNoPassword(r);
  };
  for (const dsn of ['mysql://node@127.0.0.1/x', 'host=127.0.0.1 dbname=x', `postgres://node:${NODE_PASSWORD}@[::zz]/x`, '']) {
    const r = await lnbackupAsync(['postgres', 'check', '--dsn', dsn]);
    assert.equal(r.code, 2, `${dsn}: ${r.stderr}`);
    assert.match(r.stderr, /lnbackup: (.*is not a (valid postgres:\/\/ URL|PostgreSQL DSN)|the DSN is empty)/);
    noStack(r);
  }
  const port = await freePort();
  const refused = await lnbackupAsync(['postgres', 'check', '--dsn', `postgres://node:${NODE_PASSWORD}@127.0.0.1:${port}/lightningdb`, '--json']);
  assert.equal(refused.code, 1);
  assert.match(String(refused.json?.error), new RegExp(`nothing accepts connections at 127.0.0.1:${port}`));
  noStack(refused);

  // Make the role's password count (the test cluster trusts loopback otherwise).
  await prependHba(p.primary, 'host all node 127.0.0.1/32 scram-sha-256');
  const wrong = await lnbackupAsync(['postgres', 'check', '--dsn', `postgres://node:not-${NODE_PASSWORD}@127.0.0.1:${p.primary.port}/lightningdb`]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /refused node: password authentication failed for user "node". Check the DSN's user and password/);
  assert.ok(!wrong.stderr.includes(`not-${NODE_PASSWORD}`));
  noStack(wrong);
  assert.equal((await checkPostgres(p.nodeDsn)).verdict, 'zero-loss', 'the right password is taken');

  // Something that accepts the connection and never answers (a black hole, a wrong service).
  const silent = net.createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  try {
    const silentPort = (silent.address() as net.AddressInfo).port;
    const hung = await lnbackupAsync(['postgres', 'check', '--dsn', `postgres://node:${NODE_PASSWORD}@127.0.0.1:${silentPort}/lightningdb`, '--timeout', '1']);
    assert.equal(hung.code, 1);
    assert.match(hung.stderr, new RegExp(`no answer from 127.0.0.1:${silentPort} within the timeout`));
    noStack(hung);
  } finally {
    silent.close();
  }

  const nodb = await lnbackupAsync(['postgres', 'check', '--dsn', `postgres://node:${NODE_PASSWORD}@127.0.0.1:${p.primary.port}/nosuchdb`]);
  assert.equal(nodb.code, 1);
  assert.match(nodb.stderr, /has no database nosuchdb/);
  noStack(nodb);
});
