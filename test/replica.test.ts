// Tests of the live sqlite replica destination (src/destinations/replica.ts) on real sqlite files and
// real vaults written by the real Journal: node3's recorded history (with its real rewinds) applied
// live and compared with the independent reference replay; a replica newer than the vault left
// byte-identical; older, missing and superseded replicas rebuilt or brought forward from the vault;
// a new generation in the middle of the stream; a sqlite error; foreign files; and reopening after
// a crash, simulated by a file image and by SIGKILL of a real process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { DestinationFailedError, type StoredCall } from '../src/destinations/destination.js';
import { REBUILD_SUFFIX, ReplicaDestination, inspectReplica, replicaMark } from '../src/destinations/replica.js';
import { Journal } from '../src/journal/journal.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import type { CallEntry } from '../src/simulator/trace.js';
import { Prng } from './helpers/prng.js';
import { callsOf, dataVersionOf, dumpFile, dumpOf, effectiveWrites, loadChain, node3Calls, plainReplay } from './helpers/reference.js';
import { repoRoot, tracePath } from './helpers/paths.js';
import { recordCall } from './helpers/storedCalls.js';
import { makeNode, type VaultNode } from './helpers/testNode.js';
import { feed } from './helpers/vaultFixture.js';

// Every test node registers an exit listener that removes its folder.
process.setMaxListeners(40);

const REWOUND_ROW = "INSERT INTO vars (name, val) VALUES ('lnbackup-test-rewound', 'never committed')";

/** Index of the committed bump call to version `v`. */
function indexOf(calls: readonly CallEntry[], v: number): number {
  const i = calls.findIndex((c) => c.bumps && c.dataVersion === v && !c.superseded);
  assert.ok(i >= 0, `no committed call to version ${v}`);
  return i;
}

function expectedDump(calls: readonly CallEntry[], untilVersion?: number): string {
  return dumpOf(plainReplay(effectiveWrites(calls, untilVersion)));
}

interface Opened {
  readonly replica: ReplicaDestination;
  readonly notices: string[];
  readonly progress: [number, number][];
}

function openReplica(node: VaultNode, file: string): Opened {
  const notices: string[] = [];
  const progress: [number, number][] = [];
  const replica = ReplicaDestination.open({
    file,
    vaultDir: node.vault,
    keys: node.keys,
    onNotice: (m) => notices.push(m),
    onProgress: (d, t) => progress.push([d, t]),
  });
  return { replica, notices, progress };
}

/** Records each call in the journal and stores it in the replica; returns the StoredCalls. */
async function recordAndStore(
  journal: Journal,
  replica: ReplicaDestination,
  calls: readonly { dataVersion: number; writes: readonly string[] }[],
): Promise<StoredCall[]> {
  const out: StoredCall[] = [];
  for (const c of calls) {
    const sc = recordCall(journal, c.dataVersion, c.writes);
    await replica.store(sc);
    out.push(sc);
  }
  return out;
}

/** integrity_check and foreign_key_check of a database file, and its dump (the file must not be in use for writing). */
function checkedDump(file: string): string {
  const db = new Database(file, { fileMustExist: true });
  try {
    assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
    assert.deepEqual(db.pragma('foreign_key_check'), []);
  } catch (err) {
    db.close();
    throw err;
  }
  return dumpOf(db);
}

function header(file: string): { mode: string; mark: number } {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return { mode: String(db.pragma('journal_mode', { simple: true })), mark: (db.pragma('application_id', { simple: true }) as number) >>> 0 };
  } finally {
    db.close();
  }
}

const rebuildNotices = (notices: readonly string[]): string[] => notices.filter((n) => /rebuilding it from the vault/.test(n));

/** The files of a folder with their bytes, to show nothing changed. */
function folderImage(dir: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const name of fs.readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (fs.statSync(p).isFile()) m.set(name, fs.readFileSync(p).toString('base64'));
  }
  return m;
}

test('replica: node3 applied live (with its real rewinds) equals the reference replay; integrity ok; reopened in sync', async () => {
  const calls = node3Calls();
  const node = makeNode('replica-node3');
  const file = path.join(node.dir, 'replica.sqlite3');
  const { replica, notices } = openReplica(node, file);
  assert.equal(replica.status().state, 'ok', replica.status().lastError ?? '');
  assert.equal(replica.kind, 'replica');
  assert.equal(replica.name, file);
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  let stored: StoredCall[];
  const started = performance.now();
  try {
    stored = await recordAndStore(journal, replica, calls);
  } finally {
    journal.close();
  }
  const ms = performance.now() - started;
  const superseding = stored.filter((s) => s.supersedes !== 0n).length;
  assert.equal(superseding, calls.filter((c) => c.superseded).length);
  // Each real rewind rebuilt the replica from the vault (the replica had applied the uncommitted transaction).
  assert.equal(rebuildNotices(notices).length, 1 + superseding, notices.join('\n'));
  const lastSeq = stored[stored.length - 1].records[stored[stored.length - 1].records.length - 1].seq;
  const st = replica.status();
  assert.deepEqual([st.state, st.durableSeq, st.lagRecords, st.lastError], ['ok', lastSeq.toString(), 0, null]);
  assert.ok(st.lastDurableAt !== null);
  await replica.close(1000);
  assert.deepEqual(
    await replica.store(stored[0]).then(
      () => 'resolved',
      (e: unknown) => e instanceof DestinationFailedError,
    ),
    true,
  );

  assert.deepEqual(header(file), { mode: 'wal', mark: replicaMark(lastSeq) });
  assert.ok(checkedDump(file) === expectedDump(calls), 'the replica differs from the reference replay of node3');
  assert.equal(fs.existsSync(file + REBUILD_SUFFIX), false);

  const again = openReplica(node, file);
  assert.equal(again.replica.status().state, 'ok');
  assert.equal(again.replica.status().durableSeq, lastSeq.toString());
  assert.deepEqual(again.notices, [], 'a replica in sync is neither rebuilt nor brought forward');
  await again.replica.close(0);
  console.log(`# ${calls.length} calls through the replica in ${ms.toFixed(0)} ms (${superseding} rewinds rebuilt it)`);
});

test('replica: one NEWER than the vault is never touched (byte-identical, no side files) and the destination is failed', async () => {
  const calls = node3Calls();
  const node = makeNode('replica-newer');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    feed(journal, calls.slice(0, indexOf(calls, 200) + 1));
    const opened: { dir: string; file: string; before: Map<string, string>; replica: ReplicaDestination }[] = [];
    for (const mode of ['delete', 'wal']) {
      const dir = path.join(node.dir, `replica-${mode}`);
      fs.mkdirSync(dir);
      const file = path.join(dir, 'replica.sqlite3');
      const db = plainReplay(effectiveWrites(calls, 205), file);
      db.pragma(`journal_mode = ${mode}`);
      db.close();
      const before = folderImage(dir);
      const { replica, notices } = openReplica(node, file);
      const st = replica.status();
      assert.equal(st.state, 'failed');
      assert.match(st.lastError ?? '', /holds data_version 205, NEWER than the backup .* \(version 200\)/);
      assert.match(st.lastError ?? '', /stale copy of its database/);
      assert.match(st.lastError ?? '', /Investigate before anything/);
      assert.match(st.lastError ?? '', /never copies over a newer replica/);
      assert.deepEqual(notices, [st.lastError]);
      opened.push({ dir, file, before, replica });
    }
    const next = recordCall(journal, 201, calls[indexOf(calls, 201)].writes);
    for (const { dir, file, before, replica } of opened) {
      await assert.rejects(replica.store(next), (e: unknown) => e instanceof DestinationFailedError && /NEWER/.test(e.message) && e.destination === file);
      assert.equal(replica.status().state, 'failed');
      await replica.close(100);
      assert.deepEqual(folderImage(dir), before, `the newer replica in ${path.basename(dir)} (or its folder) changed`);
      assert.equal(dataVersionOf(file), 205);
    }
  } finally {
    journal.close();
  }
});

test('replica: an older replica is rebuilt from the vault with progress; a missing one is created', async () => {
  const calls = node3Calls();
  const node = makeNode('replica-older');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const seqs = feed(journal, calls);
  journal.close();
  const lastSeq = seqs[seqs.length - 1];

  // Older: a plain copy at version 150 (no mark): rebuilt.
  const older = path.join(node.dir, 'older.sqlite3');
  plainReplay(effectiveWrites(calls, 150), older).close();
  const o = openReplica(node, older);
  assert.equal(o.replica.status().state, 'ok', o.replica.status().lastError ?? '');
  assert.ok(
    o.notices.some((n) => /is at data_version 150, older than the vault \(431\): rebuilding it from the vault/.test(n)),
    o.notices.join('\n'),
  );
  assert.ok(
    o.notices.some((n) => /rebuilt from version 150 to version 431/.test(n)),
    o.notices.join('\n'),
  );
  assert.ok(o.progress.length >= 2, `progress reported ${o.progress.length} times`);
  for (let i = 1; i < o.progress.length; i++) assert.ok(o.progress[i][0] >= o.progress[i - 1][0], 'progress goes forward');
  const [done, total] = o.progress[o.progress.length - 1];
  assert.ok(total > 0 && done === total, `progress ends at ${done}/${total}`);
  assert.equal(o.replica.status().durableSeq, lastSeq.toString());
  await o.replica.close(0);
  assert.deepEqual(header(older), { mode: 'wal', mark: replicaMark(lastSeq) });
  const expected = expectedDump(calls);
  assert.ok(checkedDump(older) === expected, 'the rebuilt replica differs from the reference');

  // Missing: created (its folder exists, the file does not).
  const missing = path.join(node.dir, 'missing.sqlite3');
  const m = openReplica(node, missing);
  assert.equal(m.replica.status().state, 'ok');
  assert.ok(
    m.notices.some((n) => /is missing: rebuilding it from the vault \(generation 1, version 431\)/.test(n)),
    m.notices.join('\n'),
  );
  assert.ok(m.notices.some((n) => /rebuilt from no database to version 431/.test(n)));
  await m.replica.close(0);
  assert.ok(checkedDump(missing) === expected, 'the created replica differs from the reference');
  assert.deepEqual(
    fs.readdirSync(node.dir).filter((f) => f.includes(REBUILD_SUFFIX) || f.includes('lnbackup-restore')),
    [],
    'no scratch file is left behind',
  );

  // An empty file is an empty database: created the same way.
  const empty = path.join(node.dir, 'empty.sqlite3');
  fs.writeFileSync(empty, '');
  const e = openReplica(node, empty);
  assert.equal(e.replica.status().state, 'ok');
  assert.ok(e.notices.some((n) => /is an empty database: rebuilding/.test(n)));
  await e.replica.close(0);
  assert.ok(checkedDump(empty) === expected);
});

test('replica: a replica behind by whole calls is brought forward from its mark (across rewinds), without a rebuild', async () => {
  const calls = node3Calls();
  const node = makeNode('replica-forward');
  const file = path.join(node.dir, 'replica.sqlite3');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    const first = openReplica(node, file);
    // Up to 50, before the trace's rewinds at 60, 70, 85, 100 and 115.
    await recordAndStore(journal, first.replica, calls.slice(0, indexOf(calls, 50) + 1));
    await first.replica.close(0);
    feed(journal, calls.slice(indexOf(calls, 50) + 1));
  } finally {
    journal.close();
  }
  const { replica, notices } = openReplica(node, file);
  assert.equal(replica.status().state, 'ok');
  assert.deepEqual(rebuildNotices(notices), [], notices.join('\n'));
  assert.ok(
    notices.some((n) => /brought forward from version 50 to 431/.test(n)),
    notices.join('\n'),
  );
  await replica.close(0);
  assert.ok(checkedDump(file) === expectedDump(calls), 'the replica brought forward differs from the reference');
});

test('replica: a superseded transaction is undone: live (store with supersedes) and at open (same version, other mark)', async () => {
  const calls = node3Calls();
  const N = 350;
  const iN = indexOf(calls, N);
  const c = calls[iN];
  const fake = [...c.writes.slice(0, -1), REWOUND_ROW, c.writes[c.writes.length - 1]];

  // Live: X applied, then the real call at the same version supersedes it.
  {
    const node = makeNode('replica-rewind-live');
    const file = path.join(node.dir, 'replica.sqlite3');
    const { replica, notices } = openReplica(node, file);
    const journal = Journal.open(node.vault, node.keys, node.dbPath);
    try {
      await recordAndStore(journal, replica, calls.slice(0, iN));
      const x = recordCall(journal, N, fake);
      await replica.store(x);
      assert.equal(dataVersionOf(file), N);
      assert.match(dumpFile(file), /lnbackup-test-rewound/, 'the replica applied X');
      const real = recordCall(journal, N, c.writes);
      assert.equal(real.supersedes, x.records[x.records.length - 1].seq);
      const before = rebuildNotices(notices).length;
      await replica.store(real);
      assert.equal(rebuildNotices(notices).length, before + 1);
      assert.ok(notices.some((n) => new RegExp(`version ${N} came again: the transaction in record ${real.supersedes}`).test(n)));
      assert.equal(replica.status().durableSeq, real.records[0].seq.toString());
      await recordAndStore(journal, replica, calls.slice(iN + 1));
    } finally {
      journal.close();
    }
    await replica.close(1000);
    const dump = checkedDump(file);
    assert.ok(!dump.includes('lnbackup-test-rewound'));
    assert.ok(dump === expectedDump(calls), 'after the live rewind the replica differs from the reference');
  }

  // At open: the replica applied X and stopped; the vault then got the real call (it supersedes X).
  {
    const node = makeNode('replica-rewind-open');
    const file = path.join(node.dir, 'replica.sqlite3');
    const journal = Journal.open(node.vault, node.keys, node.dbPath);
    try {
      const first = openReplica(node, file);
      await recordAndStore(journal, first.replica, [...calls.slice(0, iN), { dataVersion: N, writes: fake }]);
      await first.replica.close(0);
      const real = recordCall(journal, N, c.writes);
      assert.notEqual(real.supersedes, 0n);
    } finally {
      journal.close();
    }
    assert.equal(dataVersionOf(file), N, 'same version as the vault');
    const { replica, notices } = openReplica(node, file);
    assert.equal(replica.status().state, 'ok');
    assert.ok(
      notices.some((n) =>
        new RegExp(
          `is at the vault's version ${N} but did not apply the vault's last record \\(\\d+\\): it may hold a transaction the node never committed`,
        ).test(n),
      ),
      notices.join('\n'),
    );
    await replica.close(0);
    const dump = checkedDump(file);
    assert.ok(!dump.includes('lnbackup-test-rewound'));
    assert.ok(dump === dumpOf(plainReplay(effectiveWrites(calls.slice(0, iN + 1)))), 'the superseded replica was not rebuilt exactly');
  }

  // At open, with the trace's own rewind: the replica stopped right after the uncommitted call at 60.
  {
    const node = makeNode('replica-rewind-trace');
    const file = path.join(node.dir, 'replica.sqlite3');
    const iBad = calls.findIndex((x) => x.superseded && x.dataVersion === 60);
    const journal = Journal.open(node.vault, node.keys, node.dbPath);
    try {
      const first = openReplica(node, file);
      await recordAndStore(journal, first.replica, calls.slice(0, iBad + 1));
      await first.replica.close(0);
      feed(journal, calls.slice(iBad + 1));
    } finally {
      journal.close();
    }
    const { replica, notices } = openReplica(node, file);
    assert.equal(replica.status().state, 'ok');
    assert.equal(rebuildNotices(notices).length, 1, notices.join('\n'));
    await replica.close(0);
    assert.ok(checkedDump(file) === expectedDump(calls));
  }
});

test("replica: a new generation in the middle of the stream (the vault was behind the node) rebuilds it from the call's snapshot", async () => {
  const calls = node3Calls();
  const node = makeNode('replica-gen2');
  const file = path.join(node.dir, 'replica.sqlite3');
  const { replica, notices } = openReplica(node, file);
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    await recordAndStore(journal, replica, calls.slice(0, indexOf(calls, 300) + 1));
    // The plugin missed 301..310; the node's database is at 310.
    plainReplay(effectiveWrites(calls, 310), node.dbPath).close();
    const c311 = recordCall(journal, 311, calls[indexOf(calls, 311)].writes);
    assert.equal(c311.snapshot, true);
    assert.ok(c311.records.length > 3);
    await replica.store(c311);
    assert.ok(
      notices.some((n) => /a new generation starts from a snapshot of the node at another version than the replica's 300/.test(n)),
      notices.join('\n'),
    );
    assert.equal(dataVersionOf(file), 311);
    await recordAndStore(journal, replica, calls.slice(indexOf(calls, 311) + 1));
  } finally {
    journal.close();
  }
  await replica.close(1000);
  assert.ok(checkedDump(file) === expectedDump(calls), 'after the new generation the replica differs from the reference');
  const again = openReplica(node, file);
  assert.deepEqual(again.notices, []);
  await again.replica.close(0);
});

test('replica: a sqlite error fails the destination with the statement and how to recover; the next start repairs it', async () => {
  const calls = node3Calls();
  const node = makeNode('replica-sqlerr');
  const file = path.join(node.dir, 'replica.sqlite3');
  const { replica } = openReplica(node, file);
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const i101 = indexOf(calls, 101);
  const clash = "INSERT INTO vars (name, val) VALUES ('lnbackup-test-clash', 'from the node')";
  const c = calls[i101];
  const writes = [...c.writes.slice(0, -1), clash, c.writes[c.writes.length - 1]];
  try {
    await recordAndStore(journal, replica, calls.slice(0, i101));
    // Someone wrote into the replica: it no longer matches the node.
    const other = new Database(file, { fileMustExist: true });
    other.exec("INSERT INTO vars (name, val) VALUES ('lnbackup-test-clash', 'written by hand')");
    other.close();
    const x = recordCall(journal, 101, writes);
    let message = '';
    await assert.rejects(replica.store(x), (e: unknown) => {
      message = (e as Error).message;
      return e instanceof DestinationFailedError;
    });
    assert.match(message, /sqlite refused statement \d+ of \d+ of the call for version 101/);
    assert.ok(message.includes(clash), 'the statement is named');
    assert.match(message, /UNIQUE constraint failed: vars\.name/);
    assert.match(message, /stays at version 100/);
    assert.ok(message.includes(`delete ${file}`), 'says how to recover');
    const st = replica.status();
    assert.deepEqual([st.state, st.lastError], ['failed', message]);
    await assert.rejects(replica.store(recordCall(journal, 102, calls[indexOf(calls, 102)].writes)), DestinationFailedError);
    assert.equal(dataVersionOf(file), 100, 'the failed transaction was rolled back');
  } finally {
    journal.close();
    await replica.close(0);
  }
  // At the next start the replica is behind and cannot be brought forward (same clash): rebuilt.
  const again = openReplica(node, file);
  assert.equal(again.replica.status().state, 'ok');
  assert.ok(
    again.notices.some((n) => /bringing it forward from version 100 failed/.test(n)),
    again.notices.join('\n'),
  );
  assert.equal(rebuildNotices(again.notices).length, 1);
  await again.replica.close(0);
  const expected = dumpOf(plainReplay([...effectiveWrites(calls.slice(0, i101)), writes, calls[indexOf(calls, 102)].writes]));
  const dump = checkedDump(file);
  assert.ok(!dump.includes('written by hand'));
  assert.ok(dump === expected, 'the repaired replica differs');
});

test('replica: files that are not a Core Lightning database are never overwritten', async () => {
  const node = makeNode('replica-foreign');
  const garbage = path.join(node.dir, 'garbage.sqlite3');
  fs.writeFileSync(garbage, Buffer.alloc(8192, 7));
  const other = path.join(node.dir, 'other.sqlite3');
  const db = new Database(other);
  db.exec("CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('precious')");
  db.close();
  const folder = path.join(node.dir, 'a-folder');
  fs.mkdirSync(folder);
  for (const [file, why] of [
    [garbage, /is not a sqlite database/],
    [other, /has tables but no vars table: it is not a Core Lightning database/],
    [folder, /is not a regular file/],
  ] as [string, RegExp][]) {
    const before = folderImage(node.dir);
    const { replica } = openReplica(node, file);
    assert.equal(replica.status().state, 'failed');
    assert.match(replica.status().lastError ?? '', why);
    assert.match(replica.status().lastError ?? '', /will not overwrite it/);
    await replica.close(0);
    assert.deepEqual(folderImage(node.dir), before, `${path.basename(file)} changed`);
  }
  assert.deepEqual(inspectReplica(path.join(node.dir, 'none')), { kind: 'missing' });
});

test("replica: reopening after a crash (the files as a dead process left them) works; the vault's newer calls are brought forward", async () => {
  const calls = node3Calls();
  const node = makeNode('replica-crash-image');
  const file = path.join(node.dir, 'replica.sqlite3');
  const crashDir = path.join(node.dir, 'crash');
  fs.mkdirSync(crashDir);
  const image = path.join(crashDir, 'replica.sqlite3');
  const { replica } = openReplica(node, file);
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    await recordAndStore(journal, replica, calls.slice(0, indexOf(calls, 250) + 1));
    // The process dies now: its files are what the next start finds (the WAL not checkpointed).
    assert.ok(fs.existsSync(file + '-wal'), 'the replica runs in WAL mode');
    for (const suffix of ['', '-wal', '-shm']) if (fs.existsSync(file + suffix)) fs.copyFileSync(file + suffix, image + suffix);
    // The vault got a few more calls that the dead replica never applied.
    feed(journal, calls.slice(indexOf(calls, 250) + 1, indexOf(calls, 260) + 1));
  } finally {
    journal.close();
    await replica.close(0);
  }
  const { replica: reopened, notices } = openReplica(node, image);
  assert.equal(reopened.status().state, 'ok', reopened.status().lastError ?? '');
  assert.deepEqual(rebuildNotices(notices), []);
  assert.ok(
    notices.some((n) => /brought forward from version 250 to 260/.test(n)),
    notices.join('\n'),
  );
  await reopened.close(0);
  assert.ok(checkedDump(image) === expectedDump(calls, 260));
});

test("replica: SIGKILL of a real process storing into the replica, at random points: the next open gives exactly the vault's state", async () => {
  const calls = node3Calls();
  const seed = Date.now() >>> 0;
  const rng = new Prng(seed);
  const mod = (p: string): string => pathToFileURL(path.join(repoRoot, 'dist', p)).href;
  const child = `
    import { Journal } from '${mod('src/journal/journal.js')}';
    import { ReplicaDestination } from '${mod('src/destinations/replica.js')}';
    import { loadKeys } from '${mod('src/cli/keyOptions.js')}';
    import { node3Calls } from '${mod('test/helpers/reference.js')}';
    import { recordCall } from '${mod('test/helpers/storedCalls.js')}';
    const [vault, dbPath, file, hsmSecret] = process.argv.slice(1);
    const { keys } = loadKeys({ hsmSecret });
    const replica = ReplicaDestination.open({ file, vaultDir: vault, keys, onNotice: () => {} });
    const journal = Journal.open(vault, keys, dbPath);
    for (const c of node3Calls()) {
      const call = recordCall(journal, c.dataVersion, c.writes);
      await replica.store(call);
      process.stdout.write(c.dataVersion + '\\n');
    }
    process.stdout.write('end\\n');
  `;
  for (let round = 0; round < 3; round++) {
    const node = makeNode(`replica-kill-${round}`);
    const file = path.join(node.dir, 'replica.sqlite3');
    const killAfter = rng.int(20, calls.length - 20);
    const acked: number[] = [];
    await new Promise<void>((resolve, reject) => {
      const p = spawn(process.execPath, ['--input-type=module', '-e', child, node.vault, node.dbPath, file, node.hsmSecretPath], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let buf = '';
      let stderr = '';
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop() ?? '';
        for (const l of lines) if (/^\d+$/.test(l)) acked.push(Number(l));
        if (acked.length >= killAfter) p.kill('SIGKILL');
      });
      p.on('error', reject);
      p.on('exit', (code, signal) => (signal === 'SIGKILL' ? resolve() : reject(new Error(`child exited with ${code}: ${stderr}`))));
    });
    const { replica, notices } = openReplica(node, file);
    assert.equal(replica.status().state, 'ok', `round ${round} (seed ${seed}): ${replica.status().lastError ?? ''}`);
    console.log(
      `# round ${round}: killed after ${acked.length} acked calls (version ${acked[acked.length - 1]}); reopened: ${notices.join(' / ') || 'in sync'}`,
    );
    await replica.close(0);
    const restored = path.join(node.dir, 'restored.sqlite3');
    const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to: restored });
    assert.equal(dataVersionOf(file), r.version, `round ${round} (seed ${seed}): ${notices.join('\n')}`);
    const lastAcked = acked[acked.length - 1];
    assert.ok(r.version >= lastAcked, `acked ${lastAcked}, vault at ${r.version}`);
    assert.ok(checkedDump(file) === dumpFile(restored), `round ${round} (seed ${seed}): the replica differs from the vault's restore after SIGKILL`);
    assert.equal(fs.existsSync(file + REBUILD_SUFFIX), false);
  }
});

test('replica: close() abandons a rebuild in progress cleanly (the next open rebuilds) and otherwise waits for it within its grace', async () => {
  const calls = callsOf(loadChain([tracePath('cln-v26.06-node1.jsonl.gz')]));
  const iL = calls.map((c) => c.bumps && !c.superseded).lastIndexOf(true);
  const c = calls[iL];
  const fake = [...c.writes.slice(0, -1), REWOUND_ROW, c.writes[c.writes.length - 1]];
  const node = makeNode('replica-close');
  const file = path.join(node.dir, 'replica.sqlite3');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    for (const x of calls.slice(0, iL)) assert.equal(journal.record(x.dataVersion, x.writes, { deferSync: true }).kind, 'stored');
    const first = openReplica(node, file);
    assert.equal(first.replica.status().state, 'ok');
    await first.replica.store(recordCall(journal, c.dataVersion, fake));
    const pending = first.replica.store(recordCall(journal, c.dataVersion, c.writes)).then(
      () => null,
      (e: unknown) => e,
    );
    assert.equal(first.replica.status().state, 'catching-up', 'the rebuild runs off the caller (the event loop gets turns)');
    await first.replica.close(0);
    const err = await pending;
    assert.ok(err instanceof DestinationFailedError && /closed before version \d+ was applied/.test(err.message), String(err));
    assert.equal(fs.existsSync(file + REBUILD_SUFFIX), false, 'the abandoned scratch file is removed');
    assert.match(dumpFile(file), /lnbackup-test-rewound/, 'the replica still holds the superseded transaction');

    // The next start sees the same version with another mark: rebuilt.
    const second = openReplica(node, file);
    assert.equal(second.replica.status().state, 'ok');
    assert.equal(rebuildNotices(second.notices).length, 1, second.notices.join('\n'));
    const expected = dumpOf(plainReplay(effectiveWrites(calls.slice(0, iL + 1))));
    assert.ok(dumpFile(file) === expected, 'the rebuilt replica differs from the reference');

    // A rewind again, and close() with a long grace: it waits for the rebuild, which completes.
    const v = c.dataVersion + 1;
    const bump = `UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = ${c.dataVersion}`;
    const real = ["INSERT INTO vars (name, val) VALUES ('lnbackup-test-real', 'committed')", bump];
    await second.replica.store(recordCall(journal, v, [REWOUND_ROW.replace('rewound', 'rewound-2'), bump]));
    const stored = second.replica.store(recordCall(journal, v, real));
    await second.replica.close(60_000);
    await stored;
    const dump = checkedDump(file);
    assert.ok(dump.includes('lnbackup-test-real') && !dump.includes('lnbackup-test-rewound'));
    assert.ok(dump === dumpOf(plainReplay([...effectiveWrites(calls.slice(0, iL + 1)), real])));
  } finally {
    journal.close();
  }
});
