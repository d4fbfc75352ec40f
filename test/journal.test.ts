// Tests of src/journal: the supersede rules (SupersedeRule), data_version arithmetic, the replayer's
// handling of superseded, in-flight and target versions, and the whole path in-process: node3's
// recorded history (with its real rewinds and a simulated one) through a Journal into a vault,
// restored at the newest version and at random versions, compared with an independent replay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { bumpedFrom, nextVersion, versionDistance, U32 } from '../src/journal/dataVersion.js';
import { encodeSnapshotBegin, encodeSnapshotChunk, encodeSnapshotEnd, encodeWrites } from '../src/journal/payloads.js';
import { JournalError, JournalReplayer, type ReplayOptions, type ReplaySink } from '../src/journal/replay.js';
import { SupersedeRule, type Decision } from '../src/journal/supersede.js';
import { Journal } from '../src/journal/journal.js';
import { PagedSnapshotBuilder } from '../src/journal/pagedSnapshot.js';
import { scanGenerations } from '../src/journal/retention.js';
import { RecordType, type RecordBody } from '../src/vault/format.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import { openIdentity } from '../src/vault/identity.js';
import { readRawRecords } from '../src/vault/rawRecords.js';
import { listSegments } from '../src/vault/segments.js';
import type { CallEntry } from '../src/simulator/trace.js';
import { Prng } from './helpers/prng.js';
import { dumpFile, dumpOf, effectiveWrites, node3Calls, plainReplay } from './helpers/reference.js';
import { makeNode, type VaultNode } from './helpers/testNode.js';
import { feed } from './helpers/vaultFixture.js';

const bump = (from: number): string => `UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = ${from}`;
/** A transaction to version v: a statement and the bump from v-1 (on the u32 circle). */
const tx = (v: number, stmt = `INSERT INTO t VALUES (${v})`): string[] => [stmt, bump((v + U32 - 1) % U32)];
const PRAGMA = ['PRAGMA foreign_keys = ON;'];

// ---------------------------------------------------------------------------------------------
// data_version arithmetic

test('bumpedFrom: only the exact bump as the last statement counts', () => {
  assert.equal(bumpedFrom([bump(41)]), 41);
  assert.equal(bumpedFrom(['DELETE FROM x', bump(0)]), 0);
  assert.equal(bumpedFrom([`${bump(7)};`]), 7);
  assert.equal(bumpedFrom([`${bump(7)}; \n`]), 7);
  assert.equal(bumpedFrom([bump(4294967295)]), 4294967295);
  assert.equal(bumpedFrom([bump(4294967296)]), null, 'beyond u32');
  assert.equal(bumpedFrom([bump(4294967296).replace('4294967296', '99999999999999999999')]), null, 'not a safe integer');
  assert.equal(bumpedFrom([`UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = ${'1'.repeat(200)}`]), null);
  assert.equal(bumpedFrom([]), null);
  assert.equal(bumpedFrom(['PRAGMA foreign_keys = OFF;']), null);
  assert.equal(bumpedFrom([bump(5), 'PRAGMA foreign_keys = ON;']), null, 'the bump must be last');
  assert.equal(bumpedFrom(["UPDATE vars SET intval=intval+1 WHERE name='data_version' AND intval=5"]), null, 'other spacing');
  assert.equal(bumpedFrom([`  ${bump(5)}`]), null, 'leading space');
  assert.equal(bumpedFrom([bump(5).replace('data_version', 'other')]), null);
  assert.equal(bumpedFrom([`${bump(5)}; DROP TABLE vars`]), null, 'a second statement after the bump');
  assert.equal(bumpedFrom([bump(-1)]), null);
});

test('versionDistance and nextVersion on the u32 circle', () => {
  assert.equal(versionDistance(5, 5), 0);
  assert.equal(versionDistance(5, 6), 1);
  assert.equal(versionDistance(6, 5), -1);
  assert.equal(versionDistance(4294967295, 0), 1);
  assert.equal(versionDistance(0, 4294967295), -1);
  assert.equal(versionDistance(4294967290, 3), 9);
  assert.equal(versionDistance(3, 4294967290), -9);
  assert.equal(versionDistance(0, 2 ** 31), 2 ** 31, 'exactly half way counts as ahead');
  assert.equal(versionDistance(0, 2 ** 31 + 1), -(2 ** 31 - 1));
  assert.equal(versionDistance(2 ** 31, 0), 2 ** 31);
  assert.equal(nextVersion(4294967295), 0);
  assert.equal(nextVersion(0), 1);
});

// ---------------------------------------------------------------------------------------------
// SupersedeRule

function body(type: RecordType, dataVersion: number, payload: Buffer, supersedes = 0n, generation = 1): RecordBody {
  return { type, generation, dataVersion, supersedes, prevHash: Buffer.alloc(32), payload };
}

const append = (supersedes: bigint): Decision => ({ kind: 'append', supersedes });

/** A tail after a complete snapshot at `version` (records 1..3). */
function tailAt(version: number): SupersedeRule {
  const t = new SupersedeRule();
  t.snapshotWritten(1, version, 3n, 1000);
  return t;
}

test('tail: no snapshot or an interrupted one asks for a snapshot', () => {
  const t = new SupersedeRule();
  assert.deepEqual(t.decide(1, tx(1)), { kind: 'snapshot', reason: 'the vault holds no snapshot yet' });
  t.observe(1n, body(RecordType.SnapshotBegin, 5, encodeSnapshotBegin({ dbBytes: 10, takenAt: 77 }), 0n, 2));
  assert.equal(t.generation, 2);
  assert.equal(t.snapshotTakenAt, 77);
  assert.deepEqual(t.decide(6, tx(6)), { kind: 'snapshot', reason: 'the newest snapshot was interrupted before it ended' });
  t.observe(2n, body(RecordType.SnapshotChunk, 5, encodeSnapshotChunk(0, Buffer.alloc(10)), 0n, 2));
  t.observe(3n, body(RecordType.SnapshotEnd, 5, encodeSnapshotEnd({ dbBytes: 10, sha256: Buffer.alloc(32) }), 0n, 2));
  assert.deepEqual(t.decide(6, tx(6)), append(0n));
  assert.equal(t.lastSeq, 3n);
});

test('tail: append, rewind (supersedes the unconfirmed record), repeated rewind, PRAGMA repeat confirms, stale bump refused', () => {
  const t = tailAt(10);
  assert.deepEqual(t.decide(11, tx(11)), append(0n));
  t.appended(4n, 11, true, 0n);
  assert.deepEqual([t.version, t.confirmed, t.inFlightSeq], [11, false, 4n]);
  assert.deepEqual(t.decide(12, tx(12)), append(0n));
  // lightningd died after the ack of 11 and before its COMMIT: 11 comes again with other writes.
  assert.deepEqual(t.decide(11, tx(11, 'INSERT INTO t VALUES (111)')), append(4n));
  t.appended(5n, 11, true, 4n);
  assert.deepEqual([t.version, t.confirmed, t.inFlightSeq], [11, false, 5n]);
  // ...and again: the newest unconfirmed record is the one superseded.
  assert.deepEqual(t.decide(11, tx(11)), append(5n));
  // The migrations' PRAGMA repeats the version without a bump: appended, not a supersede; it confirms 11.
  assert.deepEqual(t.decide(11, PRAGMA), append(0n));
  t.appended(6n, 11, false, 0n);
  assert.equal(t.confirmed, true);
  assert.deepEqual(t.decide(11, PRAGMA), append(0n), 'a second PRAGMA at the same version');
  // Now 11 is known committed: the same bump again means the node runs on a stale database.
  const stale = t.decide(11, tx(11));
  assert.equal(stale.kind, 'refuse');
  assert.match((stale as { reason: string }).reason, /node's database is at data_version 10, older than the backup, which holds 11 \(committed\)/);
  assert.deepEqual(t.decide(12, tx(12)), append(0n));
  assert.equal(t.lastSeq, 6n);
});

test('tail: node older is refused; one behind an unconfirmed transaction supersedes it; node ahead asks for a snapshot', () => {
  const t = tailAt(10);
  t.appended(4n, 11, true, 0n);
  t.appended(5n, 12, true, 0n); // 12 unconfirmed, 11 committed (12 followed it)
  for (const [v, w] of [
    [11, tx(11)],
    [10, tx(10)],
    [3, tx(3)],
    [10, PRAGMA],
    [9, PRAGMA],
  ] as [number, string[]][]) {
    const d = t.decide(v, w);
    assert.equal(d.kind, 'refuse', `version ${v} ${w.length === 1 ? 'pragma' : 'bump'}`);
    assert.match((d as { reason: string }).reason, /stale copy of its database/);
  }
  // Statements without a bump at 11 while 12 is unconfirmed: the database is at 11, so 12 never committed.
  assert.deepEqual(t.decide(11, PRAGMA), append(5n));
  t.appended(6n, 11, false, 5n);
  assert.deepEqual([t.version, t.confirmed, t.inFlightSeq], [11, true, null]);
  assert.deepEqual(t.decide(12, tx(12)), append(0n));
  // Ahead of the vault: a fresh snapshot is needed.
  assert.deepEqual(t.decide(14, tx(14)), { kind: 'snapshot', reason: 'the node is at version 13 but the vault only has 11' });
  assert.deepEqual(t.decide(12, PRAGMA), { kind: 'snapshot', reason: 'the node is at version 12 but the vault only has 11' });
  // A confirmed vault never supersedes: the PRAGMA one below is stale.
  assert.equal(t.decide(10, PRAGMA).kind, 'refuse');
});

test('tail: data_version wraps from 4294967295 to 0 as a normal append; distances on the circle', () => {
  const t = new SupersedeRule();
  t.snapshotWritten(1, 4294967295, 3n, 0);
  assert.deepEqual(t.decide(0, tx(0)), append(0n));
  assert.equal(tx(0)[1], bump(4294967295));
  t.appended(4n, 0, true, 0n);
  assert.deepEqual(t.decide(1, tx(1)), append(0n));
  assert.deepEqual(t.decide(0, tx(0)), append(4n), 'a rewind across the wrap');
  assert.deepEqual(t.decide(4294967295, PRAGMA), append(4n), 'one behind across the wrap');
  assert.equal(t.decide(4294967295, tx(4294967295)).kind, 'refuse');
  assert.equal(t.decide(4294967290, tx(4294967290)).kind, 'refuse');
  assert.equal(t.decide(5, tx(5)).kind, 'snapshot');
  // Half the circle away still counts as ahead; one more is behind.
  const u = tailAt(5);
  assert.equal(u.decide(5 + 2 ** 31, tx(5 + 2 ** 31)).kind, 'snapshot');
  assert.equal(u.decide(6 + 2 ** 31, tx(6 + 2 ** 31)).kind, 'refuse');
});

test('tail: observe() over stored records reaches the same state as appended()', () => {
  const seen = new SupersedeRule();
  const recs: [bigint, RecordBody][] = [
    [1n, body(RecordType.SnapshotBegin, 10, encodeSnapshotBegin({ dbBytes: 0, takenAt: 5 }))],
    [2n, body(RecordType.SnapshotEnd, 10, encodeSnapshotEnd({ dbBytes: 0, sha256: Buffer.alloc(32) }))],
    [3n, body(RecordType.Writes, 11, encodeWrites(tx(11)))],
    [4n, body(RecordType.Writes, 11, encodeWrites(PRAGMA))],
    [5n, body(RecordType.Writes, 12, encodeWrites(tx(12)))],
    [6n, body(RecordType.Writes, 12, encodeWrites(tx(12, 'SELECT 1')), 5n)],
  ];
  for (const [seq, b] of recs) seen.observe(seq, b);
  const live = tailAt(10);
  live.appended(3n, 11, true, 0n);
  live.appended(4n, 11, false, 0n);
  live.appended(5n, 12, true, 0n);
  live.appended(6n, 12, true, 5n);
  for (const t of [seen, live]) {
    assert.deepEqual([t.generation, t.generationComplete, t.version, t.confirmed, t.inFlightSeq, t.lastSeq], [1, true, 12, false, 6n, 6n]);
  }
  assert.deepEqual(seen.decide(12, tx(12)), append(6n));
  // A new snapshot resets the in-flight state.
  seen.observe(7n, body(RecordType.SnapshotBegin, 12, encodeSnapshotBegin({ dbBytes: 0, takenAt: 9 }), 0n, 2));
  assert.deepEqual([seen.generation, seen.generationComplete, seen.confirmed, seen.inFlightSeq], [2, false, true, null]);
});

// ---------------------------------------------------------------------------------------------
// JournalReplayer

interface Applied {
  v: number;
  writes: readonly string[];
  tx: boolean;
}

class RecordingSink implements ReplaySink {
  applied: Applied[] = [];
  chunks: [number, string][] = [];
  began = -1;
  ended = false;
  beginSnapshot(dbBytes: number): void {
    this.began = dbBytes;
  }
  snapshotChunk(offset: number, bytes: Buffer): void {
    this.chunks.push([offset, bytes.toString()]);
  }
  endSnapshot(): void {
    this.ended = true;
  }
  applyWrites(dataVersion: number, writes: readonly string[], isTransaction: boolean): void {
    this.applied.push({ v: dataVersion, writes, tx: isTransaction });
  }
}

type Rec = RecordBody;
const sha = (b: Buffer): Buffer => crypto.createHash('sha256').update(b).digest();
const begin = (v: number, dbBytes = 0): Rec => body(RecordType.SnapshotBegin, v, encodeSnapshotBegin({ dbBytes, takenAt: 1234 }));
const end = (v: number, content = Buffer.alloc(0)): Rec =>
  body(RecordType.SnapshotEnd, v, encodeSnapshotEnd({ dbBytes: content.length, sha256: sha(content) }));
const w = (v: number, writes: string[], supersedes = 0n): Rec => body(RecordType.Writes, v, encodeWrites(writes), supersedes);

/** Feeds records with seq 1, 2, ...; returns the sink and the outcome. */
function replay(records: Rec[], options: ReplayOptions = {}) {
  const sink = new RecordingSink();
  const r = new JournalReplayer(sink, options);
  const doneAfter: boolean[] = [];
  records.forEach((b, i) => {
    r.feed(BigInt(i + 1), b);
    doneAfter.push(r.done);
  });
  return { sink, outcome: r.finish(), doneAfter, complete: r.complete };
}

const versions = (sink: RecordingSink): string[] => sink.applied.map((a) => `${a.v}${a.tx ? '' : 'p'}:${a.writes[0]}`);

test('replayer: a superseded record is dropped; the one held at the end is in flight; committedVersion', () => {
  const { sink, outcome } = replay([begin(0), end(0), w(1, tx(1, 'A')), w(1, tx(1, 'B'), 3n), w(2, tx(2, 'C'))]);
  assert.deepEqual(versions(sink), ['1:B', '2:C']);
  assert.equal(outcome.superseded, 1);
  assert.deepEqual([outcome.version, outcome.inFlight, outcome.committedVersion, outcome.transactions, outcome.statements], [2, true, 1, 2, 4]);

  const excl = replay([begin(0), end(0), w(1, tx(1, 'A')), w(2, tx(2, 'C'))], { includeInFlight: false });
  assert.deepEqual(versions(excl.sink), ['1:A']);
  assert.deepEqual([excl.outcome.version, excl.outcome.inFlight, excl.outcome.committedVersion], [1, false, 1]);

  // A PRAGMA at the same version confirms the held transaction: nothing is in flight.
  const conf = replay([begin(10), end(10), w(11, tx(11, 'A')), w(11, PRAGMA)]);
  assert.deepEqual(versions(conf.sink), ['11:A', '11p:PRAGMA foreign_keys = ON;']);
  assert.deepEqual([conf.outcome.version, conf.outcome.inFlight, conf.outcome.committedVersion, conf.outcome.baseVersion], [11, false, 11, 10]);

  // A PRAGMA one behind that supersedes the in-flight transaction (it never committed).
  const back = replay([begin(10), end(10), w(11, tx(11, 'A')), w(12, tx(12, 'B')), w(11, PRAGMA, 4n)]);
  assert.deepEqual(versions(back.sink), ['11:A', '11p:PRAGMA foreign_keys = ON;']);
  assert.deepEqual([back.outcome.version, back.outcome.inFlight, back.outcome.committedVersion, back.outcome.superseded], [11, false, 11, 1]);

  // Only a snapshot, nothing after it.
  const bare = replay([begin(7), end(7)]);
  assert.deepEqual([bare.outcome.version, bare.outcome.inFlight, bare.outcome.committedVersion, bare.complete], [7, false, 7, true]);
});

test('replayer: targetVersion stops exactly there', () => {
  const recs = [begin(0), end(0), ...[1, 2, 3, 4, 5, 6].map((v) => w(v, tx(v, `S${v}`)))];
  const at3 = replay(recs, { targetVersion: 3 });
  assert.deepEqual(versions(at3.sink), ['1:S1', '2:S2', '3:S3']);
  // 3 is applied once 4 shows it committed; from then on the replayer is done and ignores records.
  assert.deepEqual(at3.doneAfter, [false, false, false, false, false, true, true, true]);
  assert.deepEqual([at3.outcome.version, at3.outcome.inFlight, at3.outcome.committedVersion], [3, false, 3]);

  const at6 = replay(recs, { targetVersion: 6 });
  assert.deepEqual([at6.outcome.version, at6.outcome.inFlight, at6.sink.applied.length], [6, true, 6]);
  const at6excl = replay(recs, { targetVersion: 6, includeInFlight: false });
  assert.deepEqual([at6excl.outcome.version, at6excl.outcome.inFlight], [5, false]);
  // A target beyond the vault ends at the newest version (restore then says it is missing).
  assert.equal(replay(recs, { targetVersion: 9 }).outcome.version, 6);

  // The PRAGMA after the target transaction is not applied; a superseded target uses its replacement.
  const mixed = [begin(0), end(0), w(1, tx(1, 'A')), w(1, PRAGMA), w(2, tx(2, 'B')), w(2, tx(2, 'B2'), 5n), w(3, tx(3, 'C'))];
  assert.deepEqual(versions(replay(mixed, { targetVersion: 1 }).sink), ['1:A']);
  const at2 = replay(mixed, { targetVersion: 2 });
  assert.deepEqual(versions(at2.sink), ['1:A', '1p:PRAGMA foreign_keys = ON;', '2:B2']);
  assert.deepEqual([at2.outcome.version, at2.outcome.inFlight, at2.outcome.superseded], [2, false, 1]);
  // Records after the target are not even decoded: garbage there does not matter.
  const r = new JournalReplayer(new RecordingSink(), { targetVersion: 1 });
  [begin(0), end(0), w(1, tx(1)), w(2, tx(2))].forEach((b, i) => r.feed(BigInt(i + 1), b));
  assert.equal(r.done, true);
  r.feed(5n, body(RecordType.Writes, 3, Buffer.from('garbage')));
  assert.equal(r.finish().version, 1);
});

test('replayer: snapshot chunks, and a snapshot across the u32 wrap', () => {
  const content = Buffer.from('0123456789');
  const chunk = (off: number, s: string): Rec => body(RecordType.SnapshotChunk, 4294967295, encodeSnapshotChunk(off, Buffer.from(s)));
  const { sink, outcome } = replay([begin(4294967295, 10), chunk(0, '012345'), chunk(6, '6789'), end(4294967295, content), w(0, tx(0, 'Z')), w(1, tx(1, 'Y'))]);
  assert.equal(sink.began, 10);
  assert.deepEqual(sink.chunks, [
    [0, '012345'],
    [6, '6789'],
  ]);
  assert.equal(sink.ended, true);
  assert.deepEqual(versions(sink), ['0:Z', '1:Y']);
  assert.deepEqual(
    [outcome.baseVersion, outcome.version, outcome.committedVersion, outcome.snapshotBytes, outcome.snapshotTakenAt],
    [4294967295, 1, 0, 10, 1234],
  );
});

test('replayer: out-of-order or inconsistent records are JournalErrors naming the record', () => {
  const bad = (records: Rec[], seq: bigint, pattern: RegExp): void => {
    assert.throws(
      () => replay(records),
      (e: unknown) => e instanceof JournalError && e.seq === seq && e.message.startsWith(`record ${seq}: `) && pattern.test(e.message),
    );
  };
  const chunk = (off: number, s: string): Rec => body(RecordType.SnapshotChunk, 0, encodeSnapshotChunk(off, Buffer.from(s)));
  bad([w(1, tx(1))], 1n, /a generation must start with a snapshot/);
  bad([begin(0), end(0), w(1, tx(1)), w(1, tx(1), 2n)], 4n, /supersedes record 2, which is not the in-flight transaction/);
  bad([begin(0), end(0), w(1, tx(1)), w(1, PRAGMA), w(1, tx(1), 3n)], 5n, /supersedes record 3/);
  bad([begin(0), end(0), w(1, tx(1)), w(3, tx(3))], 4n, /transaction to version 3 does not follow version 1/);
  bad([begin(0), end(0), w(1, tx(1)), w(1, tx(1))], 4n, /transaction to version 1 does not follow version 1/);
  bad([begin(0, 4), chunk(1, 'abc')], 2n, /snapshot chunk at offset 1 does not continue the snapshot \(0 of 4 bytes so far\)/);
  bad([begin(0, 4), chunk(0, 'abcde')], 2n, /does not continue the snapshot/);
  bad([begin(0, 4), chunk(0, 'abc'), end(0, Buffer.from('abc'))], 3n, /snapshot end says 3 bytes but its beginning said 4/);
  bad([begin(0, 4), chunk(0, 'abcd'), end(0, Buffer.from('abcx'))], 3n, /does not match its SHA-256/);
  bad([begin(0), w(1, tx(1))], 2n, /the snapshot ends without its end record/);
  bad([begin(0), end(0), begin(0)], 3n, /unexpected SnapshotBegin record inside a generation's changes/);
  bad([begin(0), end(0), body(RecordType.Writes, 1, Buffer.from([0, 0, 0, 9]))], 3n, /payload is malformed: statement count 9 is out of bounds/);
  bad([body(RecordType.SnapshotBegin, 0, Buffer.alloc(3))], 1n, /payload is malformed: snapshot begin has the wrong size/);
});

// ---------------------------------------------------------------------------------------------
// End to end, in-process: node3's history through a Journal, restored and compared

const REWOUND_VERSION = 350;
const REWOUND_ROW = "INSERT INTO vars (name, val) VALUES ('lnbackup-test-rewound', 'never committed')";

/** Restores `node`'s vault (optionally at a version) and returns the dump and the result. */
function restoreDump(node: VaultNode, name: string, options: { version?: number; excludeInFlight?: boolean } = {}) {
  const to = path.join(node.dir, `${name}.sqlite3`);
  const result = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, ...options });
  return { result, dump: dumpFile(to) };
}

function expectedDump(calls: readonly CallEntry[], untilVersion?: number): string {
  return dumpOf(plainReplay(effectiveWrites(calls, untilVersion)));
}

test('journal end to end: node3 with its real rewinds and a simulated one; restore newest, without the in-flight one, and at random versions', () => {
  const calls = node3Calls();
  const node = makeNode('journal-e2e');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const seqOf: bigint[] = [];
  let fakeSeq = 0n;
  try {
    for (let i = 0; i < calls.length; i++) {
      const c = calls[i];
      if (c.bumps && c.dataVersion === REWOUND_VERSION) {
        // Acked but never committed: the same version with different writes (an extra row) ...
        const fake = [...c.writes.slice(0, -1), REWOUND_ROW, c.writes[c.writes.length - 1]];
        const out = journal.record(c.dataVersion, fake);
        assert.equal(out.kind, 'stored');
        if (out.kind === 'stored') fakeSeq = out.seq;
        assert.deepEqual(journal.status().versionCommitted, false);
      }
      const out = journal.record(c.dataVersion, c.writes);
      assert.equal(out.kind, 'stored', `call ${i} (version ${c.dataVersion})`);
      if (out.kind !== 'stored') continue;
      assert.equal(out.snapshot, null, 'no snapshot is needed for a continuous history');
      seqOf.push(out.seq);
      // ... is superseded by the real one; so are the trace's own rewinds (after a failure).
      const prev = calls[i - 1];
      const expectSupersedes = c.bumps && c.dataVersion === REWOUND_VERSION ? fakeSeq : prev?.superseded && c.bumps ? seqOf[i - 1] : 0n;
      assert.equal(out.supersedes, expectSupersedes, `call ${i} (version ${c.dataVersion})`);
    }
    assert.ok(fakeSeq > 0n);
    const st = journal.status();
    assert.deepEqual([st.generation, st.version, st.versionCommitted, st.lastSeq], [1, 431, false, String(3 + calls.length + 1)]);
  } finally {
    journal.close();
  }
  const superseded = calls.filter((c) => c.superseded).length + 1;

  const newest = restoreDump(node, 'newest');
  assert.deepEqual(
    [newest.result.version, newest.result.inFlight, newest.result.committedVersion, newest.result.superseded, newest.result.baseVersion],
    [431, true, 430, superseded, 0],
  );
  assert.equal(newest.result.integrityCheck, 'ok');
  assert.ok(!newest.dump.includes('lnbackup-test-rewound'));
  assert.ok(newest.dump === expectedDump(calls), 'the newest restore differs from the plain replay of the effective calls');

  const excl = restoreDump(node, 'excl', { excludeInFlight: true });
  assert.deepEqual([excl.result.version, excl.result.inFlight], [430, false]);
  assert.ok(excl.dump === expectedDump(calls, 430));

  const seed = Date.now() >>> 0;
  const rng = new Prng(seed);
  const picks = new Set<number>([1, 2, 42, 60, REWOUND_VERSION, 431]);
  while (picks.size < 16) picks.add(rng.int(1, 431));
  for (const v of picks) {
    const r = restoreDump(node, `v${v}`, { version: v });
    assert.equal(r.result.version, v, `version ${v} (seed ${seed})`);
    assert.equal(r.result.inFlight, v === 431, `version ${v}`);
    assert.ok(r.dump === expectedDump(calls, v), `restore --version ${v} differs from the plain replay to ${v} (seed ${seed})`);
  }
  const report = verifyVault(node.vault, node.keys);
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.generations.map((g) => [g.generation, g.version, g.superseded, g.complete]),
    [[1, 431, superseded, true]],
  );
});

test('journal reopened: the in-flight transaction is still superseded after a restart; stale calls are refused and change nothing', () => {
  const calls = node3Calls();
  const node = makeNode('journal-reopen');
  const j1 = Journal.open(node.vault, node.keys, node.dbPath);
  feed(j1, calls);
  const lastSeq = j1.status().lastSeq;
  j1.close();

  const last = calls[calls.length - 1];
  assert.equal(last.dataVersion, 431);
  const j2 = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    assert.deepEqual([j2.status().version, j2.status().versionCommitted, j2.status().lastSeq], [431, false, lastSeq]);
    const stale = j2.record(430, calls.find((c) => c.bumps && c.dataVersion === 430)?.writes ?? []);
    assert.equal(stale.kind, 'refused');
    assert.equal(j2.status().lastSeq, lastSeq, 'a refused call writes nothing');
    // lightningd restarted: 431 never committed, and comes again with different writes.
    const again = [last.writes[0], "INSERT INTO vars (name, val) VALUES ('lnbackup-test-again', 'x')", last.writes[last.writes.length - 1]];
    assert.ok(last.writes.length === 2, 'the last call is one statement and the bump');
    const out = j2.record(431, again);
    assert.deepEqual(out.kind === 'stored' ? [out.seq, out.supersedes] : out, [BigInt(lastSeq) + 1n, BigInt(lastSeq)]);
    // Writes without a bump at 431 show the database is at 431: it is committed; the same bump again is then stale.
    const conf = j2.record(431, ["UPDATE vars SET intval=431 WHERE name='lnbackup-test-none'"]);
    assert.equal(conf.kind, 'stored');
    assert.equal(j2.status().versionCommitted, true);
    assert.equal(j2.record(431, again).kind, 'refused');
    const r = restoreDump(node, 'after-reopen');
    assert.deepEqual([r.result.version, r.result.inFlight, r.result.committedVersion, r.result.superseded], [431, false, 431, 6]);
    const writes = [...effectiveWrites(calls.slice(0, -1)), again, ["UPDATE vars SET intval=431 WHERE name='lnbackup-test-none'"]];
    assert.ok(r.dump === dumpOf(plainReplay(writes)), 'the restore after the rewind across a restart differs');
    assert.ok(r.dump.includes('lnbackup-test-again'));
  } finally {
    j2.close();
  }
});

test('journal: a node ahead of the vault gets a new generation from its database; restore picks the right generation', () => {
  const calls = node3Calls();
  const node = makeNode('journal-gen2');
  const idx = (v: number): number => calls.findIndex((c) => c.bumps && c.dataVersion === v && !c.superseded);
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    feed(journal, calls.slice(0, idx(300) + 1));
    // The plugin missed 301..310 (say, run without it); the node's database is at 310.
    plainReplay(effectiveWrites(calls, 310), node.dbPath).close();
    const c311 = calls[idx(311)];
    const out = journal.record(311, c311.writes);
    assert.equal(out.kind, 'stored');
    if (out.kind !== 'stored') return;
    assert.equal(out.snapshot?.generation, 2);
    assert.equal(out.snapshot?.dataVersion, 310);
    assert.ok((out.snapshot?.dbBytes ?? 0) > 100_000);
    feed(journal, calls.slice(idx(311) + 1));
    assert.equal(journal.status().generation, 2);
  } finally {
    journal.close();
  }
  const report = verifyVault(node.vault, node.keys);
  assert.equal(report.ok, true);
  assert.deepEqual(
    report.generations.map((g) => [g.generation, g.baseVersion, g.version, g.inFlight]),
    [
      [1, 0, 300, true],
      [2, 310, 431, true],
    ],
  );

  const newest = restoreDump(node, 'newest');
  assert.deepEqual([newest.result.generation, newest.result.version], [2, 431]);
  assert.ok(newest.dump === expectedDump(calls));
  for (const v of [299, 300, 311, 400]) {
    const r = restoreDump(node, `v${v}`, { version: v });
    assert.deepEqual([r.result.generation, r.result.version], [v <= 300 ? 1 : 2, v]);
    assert.ok(r.dump === expectedDump(calls, v), `version ${v}`);
  }
  // 301..309 were never in the vault.
  assert.throws(() => restoreDump(node, 'v305', { version: 305 }), /version 305 is not in the vault/);
});

test("journal: restore --version at a generation's snapshot version gives that snapshot", () => {
  const calls = node3Calls();
  const node = makeNode('journal-base');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const idx = calls.findIndex((c) => c.bumps && c.dataVersion === 200);
  try {
    feed(journal, calls.slice(0, idx + 1));
    plainReplay(effectiveWrites(calls, 200), node.dbPath).close();
    journal.takeSnapshot();
    feed(journal, calls.slice(idx + 1));
  } finally {
    journal.close();
  }
  const r = restoreDump(node, 'v200', { version: 200 });
  assert.equal(r.result.version, 200);
  assert.ok(r.dump === expectedDump(calls, 200));
});

test('tail and replayer: a call whose bump does not match its data_version is refused / named', () => {
  const t = tailAt(10);
  const d = t.decide(12, tx(11).slice(0, -1).concat(["UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = 3"]));
  assert.equal(d.kind, 'refuse');
  assert.match(d.kind === 'refuse' ? d.reason : '', /malformed call: data_version 12, but its statements bump the version from 3/);
  assert.deepEqual(t.decide(11, tx(11)), append(0n));
});

test('journal: a compaction switch cut short by a crash (the new generation lacks calls the old one holds) is never restored from, kept past, or written after', () => {
  const calls = node3Calls();
  const node = makeNode('journal-cut-short');
  const at = (v: number): number => calls.findIndex((c) => c.bumps && c.dataVersion === v && !c.superseded);
  const dbAt = (v: number): void => {
    fs.rmSync(node.dbPath, { force: true });
    plainReplay(effectiveWrites(calls, v), node.dbPath).close();
  };
  let journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    feed(journal, calls.slice(0, at(200) + 1));
    dbAt(200); // the node's database at rest while the hook for 201 is pending
    journal.compaction.request();
    feed(journal, calls.slice(at(201), at(203) + 1)); // 201 stages the database; 201..203 are carried
    const staged = journal.compaction.staged;
    assert.ok(staged, 'the database was staged');
    const snapshot = new PagedSnapshotBuilder(staged, journal.pages, journal.pageKey).step();
    assert.ok(snapshot);
    journal.compaction.offer(snapshot);
    const out = journal.record(204, calls[at(204)].writes); // the switch: generation 2 = snapshot at 200, 201..203 again, 204
    assert.ok(out.kind === 'stored' && out.compacted?.generation === 2);
  } finally {
    journal.close();
  }
  // The crash: generation 2 keeps its snapshot and the first carried call only (a kill -9 leaves a
  // prefix of what was written; the hook for 204 was never answered, so the node is at 203).
  const gen2 = listSegments(node.vault).filter((s) => s.generation === 2);
  assert.equal(gen2.length, 1);
  const records = readRawRecords(node.vault, gen2[0].firstSeq, Number.MAX_SAFE_INTEGER);
  const keep = records.length - 3; // snapshot records, 201 | 202, 203, 204
  fs.truncateSync(
    gen2[0].path,
    records.slice(0, keep).reduce((n, r) => n + r.bytes.length, 0),
  );
  fs.rmSync(gen2[0].path + '.mirror', { force: true });

  const notices: string[] = [];
  const to = path.join(node.dir, 'cut-short.sqlite3');
  const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, onNotice: (m) => notices.push(m) });
  assert.deepEqual([r.generation, r.version, r.inFlight], [1, 203, true], 'restored from the generation that holds 203');
  assert.ok(dumpFile(to) === expectedDump(calls, 203));
  assert.ok(
    notices.some((n) => /generation 2 ends at version 201 but generation 1 reaches 203/.test(n)),
    notices.join('; '),
  );
  const scanned = scanGenerations(openIdentity(node.vault, node.keys), node.keys, node.vault);
  assert.deepEqual(
    scanned.gens.map((g) => [g.generation, g.complete]),
    [
      [1, true],
      [2, false],
    ],
    'retention keeps generation 1',
  );

  // The plugin starts again: nothing is written after the cut-short generation; the next call
  // starts generation 3 from a snapshot of the database (at 203).
  dbAt(203);
  const opened: string[] = [];
  journal = Journal.open(node.vault, node.keys, node.dbPath, (m) => opened.push(m));
  try {
    assert.ok(
      opened.some((m) => /generation 2 ends at version 201 but the one before it reaches 203/.test(m)),
      opened.join('; '),
    );
    const next = journal.record(204, calls[at(204)].writes);
    assert.ok(next.kind === 'stored' && next.snapshot?.generation === 3 && next.snapshot.dataVersion === 203);
  } finally {
    journal.close();
  }
  const after = restoreDump(node, 'after-cut-short');
  assert.deepEqual([after.result.generation, after.result.version], [3, 204]);
  assert.ok(after.dump === expectedDump(calls, 204));
});
