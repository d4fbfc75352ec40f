// Snapshots of the live database: taken under sqlite's SHARED lock without waiting; when the node
// holds its write lock past RESERVED (a spilled cache), the call goes through unprotected, says
// so, and the snapshot is taken at the next call; the lock is never held after a call returns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Journal } from '../src/journal/journal.js';
import { withConsistentSnapshot, SnapshotBusyError } from '../src/journal/snapshotSource.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { readTraceFile } from '../src/simulator/trace.js';
import { tracePath } from './helpers/paths.js';
import { callsOf, dumpFile, plainReplay } from './helpers/reference.js';
import { makeNode } from './helpers/testNode.js';
import path from 'node:path';

const calls = callsOf(readTraceFile(tracePath('cln-v26.06-node6.jsonl.gz')));

test('a locked database: unprotected call, snapshot at the next call, lock never kept', () => {
  const node = makeNode('snaplock');
  // The node runs 30 calls without the plugin: the vault (version 0) is now behind.
  const db = plainReplay(
    calls.slice(0, 30).map((c) => c.writes),
    node.dbPath,
  );
  const { keys } = node;
  const journal = Journal.open(node.vault, keys, node.dbPath);
  try {
    // The next transaction is pending with an EXCLUSIVE lock (as after a cache spill).
    const next = calls[30];
    db.exec('BEGIN EXCLUSIVE');
    for (const w of next.writes) db.exec(w);
    assert.throws(() => withConsistentSnapshot(node.dbPath, () => 0), SnapshotBusyError);
    const outcome = journal.record(next.dataVersion, next.writes);
    assert.equal(outcome.kind, 'unprotected');
    assert.match(journal.status().snapshotPending ?? '', /locked by its writer/);
    db.exec('COMMIT');

    // Next call: a RESERVED lock only (statements run, not spilled): the snapshot works now.
    const after = calls[31];
    db.exec('BEGIN');
    for (const w of after.writes) db.exec(w);
    const stored = journal.record(after.dataVersion, after.writes);
    assert.equal(stored.kind, 'stored');
    assert.ok(stored.kind === 'stored' && stored.snapshot !== null);
    assert.equal(stored.kind === 'stored' && stored.snapshot?.dataVersion, next.dataVersion);
    // Our read lock is gone: the node can commit at once.
    db.exec('COMMIT');
    assert.equal(journal.status().snapshotPending, null);
  } finally {
    journal.close();
    db.close();
  }
  const to = path.join(node.dir, 'restored.sqlite3');
  const r = restoreDatabase({ vaultDir: node.vault, keys, to });
  assert.equal(r.generation, 2);
  assert.equal(r.version, calls[31].dataVersion);
  assert.equal(dumpFile(to), dumpFile(node.dbPath));
});
