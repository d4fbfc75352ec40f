// Unit tests of compaction's states and transitions (src/journal/compaction/transitions.ts) on a
// real journal over a tiny database, and of its driver (compactor.ts) with fake destinations:
// request → staged at a call → building → ready → the switch at a call (the new generation holds
// its snapshot, every carried call again, then the call), giving up inside a call and from the
// driver, and the transitions that are refused. Two orders of events that once lost safety: a
// build given up by a snapshot taken inside a call must not run retention before the new
// generation is durable everywhere, and a call that is refused or left unprotected must not switch
// generations (its records would reach no destination).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { Journal, type StoredOutcome } from '../../src/journal/journal.js';
import { PagedSnapshotBuilder } from '../../src/journal/pagedSnapshot.js';
import { COMPACT_ALWAYS, COMPACT_NEVER, compactorFor } from '../helpers/compactorFor.js';
import { decodeHeader, HEADER_BYTES, RecordType } from '../../src/vault/format.js';
import { openRecord } from '../../src/vault/record.js';
import { vaultIdBytes } from '../../src/vault/identity.js';
import { restoreDatabase } from '../../src/restore/rebuild.js';
import { listSegments } from '../../src/vault/segments.js';
import { storedCall } from '../../src/destinations/destination.js';
import type { SealedRecord } from '../../src/vault/sealer.js';
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
    assert.deepEqual(
      bodies.slice(end + 1).map((b) => [b.type, b.generation, b.dataVersion]),
      [
        [RecordType.TimedWrites, 2, 7],
        [RecordType.TimedWrites, 2, 8],
        [RecordType.TimedWrites, 2, 9],
      ],
      'the carried calls 7 and 8 are written again in generation 2, then the call 9',
    );
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

    journal.compaction.givenUpSeen();
    journal.compaction.request();
    call(node, journal);
    assert.equal(stateName(journal), 'staged');
    journal.compaction.giveUp('a snapshot had to be taken inside a call');
    assert.equal(stateName(journal), 'given-up');
    assert.ok(!hasStagedCopy(node.vault));
    assert.equal(notices.pop(), 'compaction given up: a snapshot had to be taken inside a call');

    journal.compaction.givenUpSeen();
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
  const compactor = compactorFor(
    node,
    journal,
    () => [server],
    COMPACT_ALWAYS,
    (_l, m) => logs.push(m),
  );
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
    assert.deepEqual(
      [...new Set(seen)],
      ['staging', 'building', 'ready', 'pruning'].filter((s) => seen.includes(s)),
      'the states come in order',
    );
    assert.ok(seen.includes('staging') && seen.includes('pruning'), seen.join(' '));
    assert.equal(compactor.status().lastCompaction?.generation, 2);
    assert.ok(server.packs.length > 0, 'the new packs went to the destination before the switch');
    assert.equal(server.pruned.length, prunedAtOpen, 'nothing is pruned before the new generation is everywhere');
    everywhere();
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(compactor.status().state, 'idle');
    assert.deepEqual(
      server.pruned.slice(prunedAtOpen).map((p) => p.keepFrom),
      [2],
      'generation 1 goes at the destination too',
    );
  } finally {
    compactor.close();
    journal.close();
  }
});

/** The generations the local vault holds now. */
const localGenerations = (vault: string): number[] => [...new Set(listSegments(vault).map((s) => s.generation))];

/** Commits a version the vault never saw (the plugin was not running): the next call needs a snapshot. */
function commitUnrecorded(node: TinyNode): void {
  node.commit(node.nextWrites());
}

test('compactor: a build given up by a snapshot taken inside a call runs no retention until the new generation is durable at every destination', async () => {
  const node = makeTinyNode('unit-compactor-settling');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const server = new FakeDestination('server');
  server.answer = true;
  const logs: string[] = [];
  const compactor = compactorFor(
    node,
    journal,
    () => [server],
    COMPACT_ALWAYS,
    (_l, m) => logs.push(m),
  );
  const prunedAtOpen = server.pruned.length;
  /** One call as NodeBackup makes it: recorded, handed to the server, then to the compactor. */
  const stored = (): StoredOutcome => {
    const writes = node.nextWrites();
    const version = node.version() + 1;
    const out = call(node, journal);
    const everywhere = server.store(storedCall(version, writes, out));
    compactor.afterCall(out, 0, () => everywhere);
    return out;
  };
  try {
    stored(); // 6: past the threshold, a compaction is requested
    assert.equal(stateName(journal), 'wanted');
    stored(); // 7: stages; the build begins and runs its first slice
    assert.equal(stateName(journal), 'building');
    // The server now holds durability back, and the vault falls behind the node: the next call takes
    // a snapshot inside it (generation 2), which gives the build up.
    server.answer = null;
    commitUnrecorded(node);
    const out = stored();
    assert.equal(out.snapshot?.generation, 2);
    assert.equal(stateName(journal), 'settling');
    for (let i = 0; i < 10; i++) await new Promise((resolve) => setTimeout(resolve, 10)); // the build's next slices see it was given up
    assert.deepEqual(server.pruned.slice(prunedAtOpen), [], 'no retention at the server before it holds generation 2 durably');
    assert.deepEqual(localGenerations(node.vault), [1, 2], 'generation 1 stays in the local vault while generation 2 is not durable everywhere');
    assert.equal(stateName(journal), 'settling', 'the given-up build left the settling generation settling');
    server.confirmNext();
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(stateName(journal), 'idle');
    assert.deepEqual(
      server.pruned.slice(prunedAtOpen).map((p) => p.keepFrom),
      [2],
      'generation 1 goes once generation 2 is durable everywhere',
    );
    assert.deepEqual(localGenerations(node.vault), [2]);
  } finally {
    compactor.close();
    journal.close();
  }
  const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to: path.join(node.dir, 'restored.sqlite3') });
  assert.equal(r.version, node.version());
});

test('compactor: a second generation started while the first settles holds retention until the second is durable everywhere', async () => {
  const node = makeTinyNode('unit-compactor-two-settling');
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const server = new FakeDestination('server');
  const compactor = compactorFor(node, journal, () => [server], COMPACT_NEVER);
  const prunedAtOpen = server.pruned.length;
  try {
    for (const generation of [2, 3]) {
      commitUnrecorded(node);
      const writes = node.nextWrites();
      const version = node.version() + 1;
      const out = call(node, journal);
      assert.equal(out.snapshot?.generation, generation);
      const everywhere = server.store(storedCall(version, writes, out));
      compactor.afterCall(out, 0, () => everywhere);
    }
    server.confirmNext(); // generation 2 is durable everywhere, generation 3 not yet
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(server.pruned.slice(prunedAtOpen), [], 'nothing is removed while generation 3 is not durable everywhere');
    assert.deepEqual(localGenerations(node.vault), [1, 2, 3]);
    server.confirmNext();
    for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(
      server.pruned.slice(prunedAtOpen).map((p) => p.keepFrom),
      [3],
    );
    assert.deepEqual(localGenerations(node.vault), [3]);
  } finally {
    compactor.close();
    journal.close();
  }
});

/** Asserts that `records` are the vault's chain from seq `from` on, each once and in order, up to its last record. */
function assertWholeChain(records: readonly SealedRecord[], journal: Journal, from: bigint): void {
  const seqs = records.map((r) => r.seq);
  const expected: bigint[] = [];
  for (let s = from; s <= journal.chainTail.lastSeq; s++) expected.push(s);
  assert.deepEqual(seqs, expected, 'the destination got every record the vault holds, in chain order');
}

test('compaction: a call that is refused, or left unprotected, does not switch; the switch comes with the next stored call, its records in chain order', () => {
  for (const outcome of ['refused', 'unprotected'] as const) {
    const { node, journal } = openTiny(`unit-compaction-switch-${outcome}`);
    try {
      const from = journal.chainTail.lastSeq + 1n;
      const handed: SealedRecord[] = [];
      const stored = (): StoredOutcome => {
        const out = call(node, journal);
        handed.push(...out.records);
        return out;
      };
      journal.compaction.request();
      stored(); // 6: stages at 5
      const snapshot = build(journal);
      assert.ok(snapshot);
      journal.compaction.offer(snapshot);
      assert.equal(stateName(journal), 'ready');
      const before = journal.chainTail.lastSeq;
      if (outcome === 'refused') {
        // A call whose statements bump from another version than it names: refused.
        const writes = node.nextWrites();
        const out = journal.record(node.version() + 2, writes);
        assert.equal(out.kind, 'refused');
      } else {
        // The vault is behind and the database cannot be copied now: the call is left unprotected.
        commitUnrecorded(node);
        const writes = node.nextWrites();
        const version = node.version() + 1;
        const holder = new Database(node.dbPath);
        holder.exec('BEGIN EXCLUSIVE');
        try {
          const out = journal.record(version, writes);
          assert.equal(out.kind, 'unprotected');
          holder.exec('ROLLBACK');
          node.commit(writes);
        } finally {
          if (holder.inTransaction) holder.exec('ROLLBACK');
          holder.close();
        }
      }
      const tailAfter = journal.chainTail.lastSeq;
      const stateAfter = stateName(journal);
      const next = stored();
      assertWholeChain(handed, journal, from);
      assert.equal(tailAfter, before, `a ${outcome} call appends nothing to the vault`);
      if (outcome === 'refused') {
        assert.equal(stateAfter, 'ready', 'the compaction waits for a call that is stored');
        assert.equal(next.compacted?.generation, 2, 'the next stored call switches');
      } else {
        assert.equal(stateAfter, 'given-up', 'the snapshot the call needed gave the compaction up');
        assert.equal(next.snapshot?.generation, 2, 'the next stored call takes the snapshot the vault needs');
      }
    } finally {
      journal.close();
    }
    const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to: path.join(node.dir, 'restored.sqlite3') });
    assert.equal(r.version, node.version());
  }
});
