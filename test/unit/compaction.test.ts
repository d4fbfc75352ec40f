// Unit tests of compaction's states and transitions (src/journal/compaction/transitions.ts) on a
// real journal over a tiny database, and of its driver (compactor.ts) with fake destinations:
// request → staged at a call → building → ready → the switch at a call (the new generation holds
// its snapshot, every carried call again, then the call), giving up inside a call and from the
// driver, and the transitions that are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { Journal, type StoredOutcome } from '../../src/journal/journal.js';
import { PagedSnapshotBuilder } from '../../src/journal/pagedSnapshot.js';
import { Compactor } from '../../src/journal/compaction/compactor.js';
import { scanGenerations } from '../../src/journal/retention.js';
import { decodeHeader, HEADER_BYTES, RecordType } from '../../src/vault/format.js';
import { openRecord } from '../../src/vault/record.js';
import { vaultIdBytes } from '../../src/vault/identity.js';
import { restoreDatabase } from '../../src/restore/rebuild.js';
import { FakeDestination } from '../helpers/fakeDestination.js';
import { hasStagedCopy, makeTinyNode, type TinyNode } from '../helpers/tinyNode.js';
import path from 'node:path';

/** The compaction's state now (a function, so that one assertion does not narrow the next). */
const stateName = (journal: Journal): string => journal.compaction.state.name;

/** A tiny node and its journal, with the compaction's notices collected. */
function openTiny(prefix: string): { node: TinyNode; journal: Journal; notices: string[] } {
  const node = makeTinyNode(prefix);
  const notices: string[] = [];
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  journal.compaction.onNotice = (m) => notices.push(m);
  return { node, journal, notices };
}

/** One call as lightningd makes it: the hook (journal.record) while the file is at rest, then COMMIT. */
function call(node: TinyNode, journal: Journal): StoredOutcome {
  const writes = node.nextWrites();
  const out = journal.record(node.version() + 1, writes);
  assert.equal(out.kind, 'stored', out.kind === 'stored' ? '' : out.reason);
  node.commit(writes);
  return out as StoredOutcome;
}

function build(journal: Journal): ReturnType<PagedSnapshotBuilder['step']> {
  const staged = journal.compaction.staged;
  assert.ok(staged);
  const b = new PagedSnapshotBuilder(staged, journal.pages, journal.pageKey);
  try {
    return b.step();
  } finally {
    b.close();
  }
}

test('compaction: wanted → staged at a call → building → ready → the switch writes the snapshot, the carried calls, then the call', () => {
  const { node, journal, notices } = openTiny('unit-compaction');
  try {
    call(node, journal); // 6
    assert.equal(stateName(journal), 'idle');
    journal.compaction.request();
    assert.equal(stateName(journal), 'wanted');
    assert.throws(() => journal.compaction.request(), /requested while one is wanted/);
    const stagedAt = node.version();
    call(node, journal); // 7: stages the file at rest at 6, and is carried
    assert.equal(stateName(journal), 'staged');
    assert.equal(journal.compaction.staged?.dataVersion, stagedAt);
    assert.ok(hasStagedCopy(node.vault));
    journal.compaction.beginBuild();
    assert.equal(stateName(journal), 'building');
    call(node, journal); // 8, carried
    const snapshot = build(journal);
    assert.ok(snapshot);
    journal.compaction.offer(snapshot);
    assert.equal(stateName(journal), 'ready');

    const out = call(node, journal); // 9: the switch
    assert.equal(out.compacted?.generation, 2);
    assert.equal(out.compacted?.dataVersion, stagedAt);
    assert.equal(stateName(journal), 'given-up', 'the driver makes it settling once it sees the new generation');
    assert.ok(!hasStagedCopy(node.vault), 'the staged copy is gone');
    const id = vaultIdBytes(journal.identity);
    const bodies = out.records.map((r) => {
      const head = r.bytes.subarray(0, HEADER_BYTES);
      const body = openRecord(node.keys.record, id, decodeHeader(head), head, r.bytes.subarray(HEADER_BYTES));
      assert.ok(body);
      return body;
    });
    const types = bodies.map((b) => b.type);
    assert.equal(types[0], RecordType.SnapshotBegin);
    const end = types.indexOf(RecordType.SnapshotEnd);
    assert.ok(end > 0);
    assert.deepEqual(bodies.slice(end + 1).map((b) => [b.type, b.generation, b.dataVersion]), [
      [RecordType.TimedWrites, 2, 7],
      [RecordType.TimedWrites, 2, 8],
      [RecordType.TimedWrites, 2, 9],
    ], 'the carried calls 7 and 8 are written again in generation 2, then the call 9');
    assert.deepEqual(notices, []);
  } finally {
    journal.close();
  }
  const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to: path.join(node.dir, 'restored.sqlite3') });
  assert.deepEqual([r.generation, r.baseVersion, r.version], [2, 6, 9]);
});

test('compaction: carried calls that do not follow the snapshot give the compaction up at the switch; nothing is appended for it', () => {
  const { node, journal, notices } = openTiny('unit-compaction-nofollow');
  try {
    journal.compaction.request();
    // Not as lightningd does it: the file already holds version 6 while the hook for 6 runs, so the
    // staged copy is at 6 and the carried call for 6 cannot follow it.
    const writes = node.nextWrites();
    node.commit(writes);
    journal.record(6, writes);
    const snapshot = build(journal);
    assert.ok(snapshot);
    journal.compaction.offer(snapshot);
    const out = call(node, journal);
    assert.equal(out.compacted, null);
    assert.deepEqual(out.records.length, 1, 'only the call itself');
    assert.equal(stateName(journal), 'given-up');
    assert.match(notices.join('; '), /compaction given up: the calls since the snapshot at version 6 do not follow it/);
  } finally {
    journal.close();
  }
});

test('compaction: a stage that fails, and giving up inside a call or from the driver, clear the staged copy and say why', () => {
  const { node, journal, notices } = openTiny('unit-compaction-giveup');
  try {
    journal.compaction.request();
    const writes = node.nextWrites();
    // Another writer holds the file (as when lightningd's cache spilled into it): it cannot be copied now.
    const holder = new Database(node.dbPath);
    holder.exec('BEGIN EXCLUSIVE');
    try {
      journal.record(6, writes);
    } finally {
      holder.exec('ROLLBACK');
      holder.close();
    }
    node.commit(writes);
    assert.equal(stateName(journal), 'given-up');
    assert.match(notices.pop() ?? '', /could not stage the database for compaction .*; will try again/);

    journal.compaction.settled();
    journal.compaction.request();
    call(node, journal);
    assert.equal(stateName(journal), 'staged');
    journal.compaction.giveUp('a snapshot had to be taken inside a call');
    assert.equal(stateName(journal), 'given-up');
    assert.ok(!hasStagedCopy(node.vault));
    assert.equal(notices.pop(), 'compaction given up: a snapshot had to be taken inside a call');

    journal.compaction.settled();
    journal.compaction.request();
    call(node, journal);
    journal.compaction.abandon('lnbackup is stopping');
    assert.equal(stateName(journal), 'idle');
    assert.ok(!hasStagedCopy(node.vault));
    journal.compaction.abandon('again');
    assert.equal(notices.length, 1, 'giving up when nothing is under way says nothing');
  } finally {
    journal.close();
  }
});

test('compaction: transitions out of order are refused', () => {
  const node = makeTinyNode('unit-compaction-order');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  try {
    assert.throws(() => journal.compaction.beginBuild(), /a build begins while the compaction is idle/);
    journal.compaction.request();
    call(node, journal);
    const snapshot = build(journal);
    assert.ok(snapshot);
    journal.compaction.abandon('test');
    assert.throws(() => journal.compaction.offer(snapshot), /not of the staged database/);
  } finally {
    journal.close();
  }
});

test('compactor: past the growth threshold it requests, builds between calls, stores the packs at the destinations, switches, and prunes once the new generation is everywhere', async () => {
  const node = makeTinyNode('unit-compactor');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const server = new FakeDestination('server');
  server.answer = true;
  const logs: string[] = [];
  const { gens } = scanGenerations(journal.identity, node.keys, node.vault);
  const compactor = new Compactor(journal, () => [server], { compactRatio: 0, compactMinBytes: 0, keepGenerations: 1, keepSeconds: 0 }, gens, (_l, m) => logs.push(m));
  const prunedAtOpen = server.pruned.length;
  const seen: string[] = [];
  try {
    let everywhere: () => void = () => undefined;
    for (let i = 0; i < 12 && compactor.status().compactions === 0; i++) {
      const out = call(node, journal);
      compactor.afterCall(out, 0, () => new Promise<void>((resolve) => (everywhere = resolve)));
      seen.push(compactor.status().state);
      await new Promise((resolve) => setTimeout(resolve, 20)); // the build runs in slices between calls
    }
    assert.equal(compactor.status().compactions, 1, `states seen: ${seen.join(' ')}; ${logs.join('; ')}`);
    assert.deepEqual([...new Set(seen)], ['staging', 'building', 'ready', 'pruning'].filter((s) => seen.includes(s)), 'the states come in order');
    assert.ok(seen.includes('staging') && seen.includes('pruning'), seen.join(' '));
    assert.equal(compactor.status().lastCompaction?.generation, 2);
    assert.ok(server.packs.length > 0, 'the new packs went to the destination before the switch');
    assert.equal(server.pruned.length, prunedAtOpen, 'nothing is pruned before the new generation is everywhere');
    everywhere();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(compactor.status().state, 'idle');
    assert.deepEqual(server.pruned.slice(prunedAtOpen).map((p) => p.keepFrom), [2], 'generation 1 goes at the destination too');
  } finally {
    compactor.close();
    journal.close();
  }
});
