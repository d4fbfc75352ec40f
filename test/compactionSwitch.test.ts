// A compaction's switch and the calls that are not stored, with a real `lnbackup server` child
// process as the other destination: a call that is refused, or left unprotected, while a
// compaction is ready must not switch generations (the switch's records would be in no call the
// destinations get, and the server would see the next call out of chain order and be given up).
// The server must end level with the local vault, record for record, and restore from its copy
// alone must equal the node's database.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Journal, type StoredOutcome } from '../src/journal/journal.js';
import { PagedSnapshotBuilder } from '../src/journal/pagedSnapshot.js';
import { storedCall } from '../src/destinations/destination.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { assertServerHoldsPrefix, serverCopyView, serverVaultDir } from './helpers/serverCopy.js';
import { startServer } from './helpers/serverProcess.js';
import { dumpFile } from './helpers/reference.js';
import { remoteForNode } from './helpers/remoteFixture.js';
import { makeTinyNode, type TinyNode } from './helpers/tinyNode.js';

for (const outcome of ['refused', 'unprotected'] as const) {
  test(`compaction and a server: a ${outcome} call while a compaction is ready; the server ends level on the same chain and restores the node exactly`, async () => {
    const node: TinyNode = makeTinyNode(`switch-${outcome}`);
    const server = await startServer();
    const journal = Journal.open(node.vault, node.keys, node.dbPath);
    const notices: string[] = [];
    const remote = remoteForNode(node, server.url, notices);
    const stores: Promise<void>[] = [];
    /** One call as the plugin makes it: recorded, handed to the server, then committed. */
    const stored = (): StoredOutcome => {
      const writes = node.nextWrites();
      const version = node.version() + 1;
      const out = journal.record(version, writes);
      assert.equal(out.kind, 'stored', out.kind === 'stored' ? '' : out.reason);
      const s = out as StoredOutcome;
      stores.push(remote.store(storedCall(version, writes, s)));
      node.commit(writes);
      return s;
    };
    try {
      const started = await remote.start(journal.chainTail, Date.now() + 10_000);
      assert.equal(started.ahead, false);
      stored(); // 6
      journal.compaction.request();
      stored(); // 7: stages the database at 6
      stored(); // 8, carried
      const staged = journal.compaction.staged;
      assert.ok(staged);
      const builder = new PagedSnapshotBuilder(staged, journal.pages, journal.pageKey);
      const snapshot = builder.step();
      builder.close();
      assert.ok(snapshot);
      for (const p of snapshot.packs) await remote.storePack(p.name, p.bytes);
      journal.compaction.offer(snapshot);

      if (outcome === 'refused') {
        const out = journal.record(node.version() + 2, node.nextWrites()); // bumps from another version than it names
        assert.equal(out.kind, 'refused');
      } else {
        node.commit(node.nextWrites()); // a version the vault never saw: the next call needs a snapshot
        const writes = node.nextWrites();
        const version = node.version() + 1;
        const holder = new Database(node.dbPath);
        holder.exec('BEGIN EXCLUSIVE'); // ... which cannot be taken now: the call is left unprotected
        try {
          assert.equal(journal.record(version, writes).kind, 'unprotected');
        } finally {
          holder.exec('ROLLBACK');
          holder.close();
        }
        node.commit(writes);
      }
      const next = stored();
      assert.equal((next.compacted ?? next.snapshot)?.generation, 2, 'the next stored call starts generation 2');
      stored();

      const results = await Promise.allSettled(stores);
      const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
      assert.deepEqual(failed, [], 'every call became durable at the server');
      await remote.caughtUp();
      assert.equal(remote.status().state, 'ok');
      assert.equal(remote.status().durableSeq, journal.chainTail.lastSeq.toString(), 'the server is level with the local vault');
      const serverDir = serverVaultDir(server.dataDir, node.vaultId);
      assertServerHoldsPrefix(node.vault, serverDir, true, `after a ${outcome} call`);

      const view = serverCopyView(serverDir, node.keys, node.vaultId, path.join(node.dir, 'server-view'));
      const to = path.join(node.dir, 'from-server.sqlite3');
      const r = restoreDatabase({ vaultDir: view, keys: node.keys, to });
      assert.equal(r.version, node.version());
      assert.equal(r.generation, 2);
      assert.equal(dumpFile(to), dumpFile(node.dbPath), 'restore from the server alone equals the node');
      assert.deepEqual(
        notices.filter((n) => !n.startsWith('info')),
        [],
      );
    } finally {
      await remote.close(1000);
      journal.close();
      await server.stop();
    }
  });
}
