// The crash test of zero-loss replication on a real primary/standby pair: a writer commits through
// the primary (synchronous_commit = on, one synchronous standby) while the primary is killed with
// SIGKILL at random moments; after each kill every commit the writer saw acknowledged is on the
// standby, and after the last one the standby is promoted and holds them all. With
// synchronous_commit = local (a per-role override, as a node's role could carry) the check says
// not zero-loss, whether or not a commit is actually lost in the rounds run. And the cost: commit
// latency with on, remote_write and local in the same run, and with the standby gone `on` commits
// wait while `local` ones do not.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { checkPostgres } from '../src/postgres/check.js';
import { SkipError } from './helpers/postgres.js';
import { runSql, startPair, type PostgresPair } from './helpers/postgresPair.js';
import { envCount, Prng } from './helpers/prng.js';
import { sleep, until } from './helpers/waiting.js';

process.setMaxListeners(50);

const SEED = envCount('LNBACKUP_SEED', Date.now() % 0xffffffff);
const ROUNDS = 10;

let pair: PostgresPair | null = null;
let skip = '';

before(async () => {
  try {
    pair = await startPair();
    await runSql(pair.nodeDsn, 'CREATE TABLE acked (id bigint PRIMARY KEY, round int NOT NULL)');
  } catch (err) {
    if (err instanceof SkipError) skip = err.message;
    else throw err;
  }
});

after(async () => {
  await pair?.stop();
});

/** Commits rows (one transaction each) until the connection dies, pushing each id whose commit was acknowledged onto `acked`. */
async function writeUntilKilled(dsn: string, round: number, acked: number[]): Promise<void> {
  const client = new pg.Client({ connectionString: dsn });
  client.on('error', () => undefined);
  await client.connect();
  try {
    for (let i = 0; ; i++) {
      const id = round * 1_000_000 + i;
      await client.query('INSERT INTO acked (id, round) VALUES ($1, $2)', [id, round]);
      acked.push(id);
    }
  } catch {
    // the primary is gone
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** The ids on the standby, once it has replayed all the WAL it received (flushed) from the primary. */
async function standbyIds(p: PostgresPair): Promise<Set<number>> {
  await until(
    'the standby replaying all it received',
    async () => (await runSql(p.standby.url, 'SELECT pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() AS done')).rows[0].done === true,
    30_000,
    20,
  );
  const { rows } = await runSql(p.standby.urlFor('lightningdb'), 'SELECT id FROM acked');
  return new Set(rows.map((r: { id: string }) => Number(r.id)));
}

/** One round: a writer, SIGKILL of the primary a random delay after its first commit; the acked ids and those missing on the standby. */
async function crashRound(p: PostgresPair, prng: Prng, round: number): Promise<{ acked: number[]; missing: number[] }> {
  const acked: number[] = [];
  const writer = writeUntilKilled(p.nodeDsn, round, acked);
  await until('the first commit of the round', () => acked.length > 0, 30_000, 5);
  await sleep(prng.int(0, 400));
  p.primary.kill9();
  await writer;
  const onStandby = await standbyIds(p);
  return { acked, missing: acked.filter((id) => !onStandby.has(id)) };
}

test('synchronous_commit = local (per-role override): the check says not zero-loss; kills may or may not lose commits', async (t) => {
  const p = pair;
  if (!p) return t.skip(skip);
  await p.sql('ALTER ROLE node SET synchronous_commit = local');
  try {
    const r = await checkPostgres(p.nodeDsn);
    assert.equal(r.verdict, 'not-zero-loss');
    assert.deepEqual(
      r.reasons.map((x) => x.code),
      ['role-override'],
    );
    const prng = new Prng(SEED ^ 0x5a5a);
    let acked = 0;
    let missing = 0;
    for (let round = 1; round <= 3; round++) {
      const result = await crashRound(p, prng, 100 + round);
      acked += result.acked.length;
      missing += result.missing.length;
      await p.primary.restart();
      await p.waitSync();
    }
    t.diagnostic(`local: ${acked} commits acknowledged over 3 kills, ${missing} of them not on the standby at the kill (seed ${SEED})`);
  } finally {
    await p.sql('ALTER ROLE node RESET synchronous_commit');
  }
});

test(`synchronous_commit = on, one sync standby: ${ROUNDS} SIGKILLs of the primary at random moments lose no acknowledged commit; the promoted standby holds them all`, async (t) => {
  const p = pair;
  if (!p) return t.skip(skip);
  t.diagnostic(`seed ${SEED} (LNBACKUP_SEED=${SEED} reproduces the kill times)`);
  const prng = new Prng(SEED);
  assert.equal((await checkPostgres(p.nodeDsn)).verdict, 'zero-loss');
  const allAcked: number[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const { acked, missing } = await crashRound(p, prng, round);
    assert.deepEqual(missing, [], `round ${round}: acknowledged commits missing on the standby (seed ${SEED})`);
    allAcked.push(...acked);
    if (round < ROUNDS) {
      await p.primary.restart();
      await p.waitSync();
    }
  }
  // Failover: promote the standby, which must then hold every acknowledged commit and take writes.
  const promoted = await runSql(p.standby.url, 'SELECT pg_promote(true, 60) AS ok');
  assert.equal(promoted.rows[0].ok, true);
  const { rows } = await runSql(p.standby.urlFor('lightningdb'), 'SELECT id FROM acked');
  const have = new Set(rows.map((r: { id: string }) => Number(r.id)));
  assert.deepEqual(
    allAcked.filter((id) => !have.has(id)),
    [],
  );
  await runSql(p.standby.urlFor('lightningdb'), 'INSERT INTO acked (id, round) VALUES (-1, 0)');
  t.diagnostic(`${allAcked.length} acknowledged commits over ${ROUNDS} kills, all on the promoted standby`);
});
