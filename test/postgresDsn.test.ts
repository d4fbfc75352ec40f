// The DSN helpers: a malformed DSN is refused with a clear message, and the password is redacted
// from the DSN (user info, percent-encoded, with an unencoded @, ?password=) and from any text;
// the wallet DSN taken from lightningd's listconfigs answer; the postgres commands' help.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DsnError, parseDsn, redactDsn, scrubSecret } from '../src/postgres/dsn.js';
import { walletDsnFromListconfigs } from '../src/postgres/walletDsn.js';
import { runCli } from './helpers/vaultFixture.js';

test('redactDsn hides the password in every form and keeps the rest', () => {
  const cases: [string, string][] = [
    ['postgres://node:s3cret@127.0.0.1:5432/lightningdb', 'postgres://node:***@127.0.0.1:5432/lightningdb'],
    ['postgresql://node:p%40ss%3Aw0rd@db.example:5432/ln?sslmode=require', 'postgresql://node:***@db.example:5432/ln?sslmode=require'],
    ['postgres://node:p@ss@host/db', 'postgres://node:***@host/db'],
    ['postgres://node@host/db?password=s3cret&sslmode=require', 'postgres://node@host/db?password=***&sslmode=require'],
    ['postgres://node:s3cret@host', 'postgres://node:***@host'],
    ['postgres://host/db', 'postgres://host/db'],
    ['POSTGRES://u:pw@h/d', 'POSTGRES://u:***@h/d'],
  ];
  for (const [dsn, want] of cases) assert.equal(redactDsn(dsn), want, dsn);
  // Not a postgres URL but it may carry a secret: hidden whole.
  assert.equal(redactDsn('mysql://u:pw@h/d'), '***');
  assert.equal(redactDsn('host=h password=pw'), '***');
});

test('scrubSecret removes the DSN and its password, raw or encoded, from any text', () => {
  const dsn = 'postgres://node:p%40ss@127.0.0.1:5432/ln';
  const text = `could not connect to ${dsn}: password "p@ss" rejected (p%40ss)`;
  const out = scrubSecret(text, dsn);
  assert.ok(!out.includes('p@ss') && !out.includes('p%40ss'), out);
  assert.match(out, /postgres:\/\/node:\*\*\*@127\.0\.0\.1:5432\/ln/);
});

test('parseDsn refuses what is not a postgres:// URL, saying what to give instead, without the password', () => {
  const refuse = (dsn: string, re: RegExp): void => {
    assert.throws(
      () => parseDsn(dsn),
      (err: unknown) => err instanceof DsnError && re.test(err.message) && !err.message.includes('s3cret'),
    );
  };
  refuse('', /the DSN is empty/);
  refuse('host=127.0.0.1 password=s3cret', /is not a PostgreSQL DSN: give it as lightningd's --wallet takes it/);
  refuse('mysql://u:s3cret@h/d', /is not a PostgreSQL DSN/);
  refuse('postgres://u:s3cret@[::zz]/d', /is not a valid postgres:\/\/ URL/);
  refuse(`postgres://u:s3cret@h/${'x'.repeat(5000)}`, /characters long/);
  assert.equal(parseDsn('postgres://u:s3cret@h:5433/d').port, '5433');
});

test('lnbackup postgres --help names the three commands; each has --json and its exit codes', () => {
  const top = runCli(['postgres', '--help']);
  assert.equal(top.code, 0);
  for (const cmd of ['check', 'standby', 'primary']) {
    assert.match(top.stdout, new RegExp(`\\b${cmd} \\[options\\]`));
    const sub = runCli(['postgres', cmd, '--help']);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /--json/);
    assert.match(sub.stdout, /Exit code 0: /);
  }
  assert.match(runCli(['--help']).stdout, /\bpostgres\b/);
});

test('walletDsnFromListconfigs: the postgres wallet in both answer formats; sqlite or none is null; garbage is refused', () => {
  const dsn = 'postgres://node:pw@127.0.0.1:5432/lightningdb';
  assert.equal(walletDsnFromListconfigs({ configs: { wallet: { value_str: dsn, source: '/home/ln/.lightning/config:3' } } }), dsn);
  assert.equal(walletDsnFromListconfigs({ wallet: dsn }), dsn);
  assert.equal(walletDsnFromListconfigs({ configs: { wallet: { value_str: 'sqlite3:///home/ln/.lightning/bitcoin/lightningd.sqlite3' } } }), null);
  for (const junk of [null, 7, 'x', {}, { configs: {} }, { configs: { wallet: { value_str: 42 } } }, { wallet: ['postgres://x'] }])
    assert.equal(walletDsnFromListconfigs(junk), null);
  assert.throws(() => walletDsnFromListconfigs({ wallet: `postgres://u:pw@h/${'x'.repeat(5000)}` }), DsnError);
});
