// Retention while a new generation settles, with a real `lnbackup server` child process held back
// (SIGSTOP) as the other destination: a compaction build is given up because a snapshot had to be
// taken inside a call, and its next slice must not remove the older generation while the server
// has not got the new one (nor the last calls of the old one). Then the node stops abruptly (no
// clean shutdown: nothing is flushed or sent on the way out), the server goes on, and the node
// starts again: the server must be brought level from the local vault and restore the node
// exactly from its copy alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { Journal, type StoredOutcome } from '../src/journal/journal.js';
import { compactorFor } from './helpers/compactorFor.js';
import { storedCall } from '../src/destinations/destination.js';
import { listSegments } from '../src/vault/segments.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { assertServerHoldsPrefix, serverCopyView, serverVaultDir } from './helpers/serverCopy.js';
import { startServer } from './helpers/serverProcess.js';
import { dumpFile } from './helpers/reference.js';
import { remoteForNode } from './helpers/remoteFixture.js';
import { makeTinyNode } from './helpers/tinyNode.js';

/** Rows enough that building a snapshot of the database takes many slices (each call's record below the 16 MiB a message). */
const BIG_ROWS = 6;
const BIG_ROW = 'x'.repeat(4 * 1024 * 1024);

test(
  'compaction and a held-back server: a build given up by a snapshot inside a call removes nothing; after an abrupt stop the server is brought level and restores the node exactly',
  { timeout: 120_000 },
  async () => {
    const node = makeTinyNode('retention-settling');
    const server = await startServer();
    const notices: string[] = [];
    let journal = Journal.open(node.vault, node.keys, node.dbPath);
    for (let i = 0; i < BIG_ROWS; i++) {
      const writes = [`INSERT INTO notes (body) VALUES ('${i}${BIG_ROW}')`, ...node.nextWrites().slice(1)];
      assert.equal(journal.record(node.version() + 1, writes).kind, 'stored');
      node.commit(writes);
    }
    let remote = remoteForNode(node, server.url, notices);
    const compactor = compactorFor(node, journal, () => [remote]);
    let stopped = false;
    try {
      assert.equal((await remote.start(journal.chainTail, Date.now() + 10_000)).ahead, false);
      const stored = (writes: string[]): Promise<void> => {
        const version = node.version() + 1;
        const out = journal.record(version, writes, { deferSync: true });
        assert.equal(out.kind, 'stored', out.kind === 'stored' ? '' : out.reason);
        const s = out as StoredOutcome;
        const everywhere = remote.store(storedCall(version, writes, s));
        everywhere.catch(() => undefined);
        compactor.afterCall(s, 0, () => everywhere);
        node.commit(writes);
        return everywhere;
      };
      await stored(node.nextWrites()); // requests a compaction
      assert.equal(journal.compaction.state.name, 'wanted');
      process.kill(server.pid, 'SIGSTOP'); // the server holds everything back from here on
      stopped = true;
      void stored(node.nextWrites()); // stages the database; the build's first slice runs
      assert.equal(journal.compaction.state.name, 'building');
      node.commit(node.nextWrites()); // the vault falls behind the node: the next call takes a snapshot inside it
      void stored(node.nextWrites()); // generation 2, which gives the build up
      for (let i = 0; i < 40 && compactor.status().state !== 'idle'; i++) await new Promise((resolve) => setTimeout(resolve, 25));
      assert.deepEqual([...new Set(listSegments(node.vault).map((s) => s.generation))], [1, 2], 'generation 1 stays while the server has not got generation 2');

      // An abrupt stop: nothing more is sent, nothing is shut down cleanly; then the server goes on.
      compactor.close();
      await remote.close(0);
      journal.close();
      process.kill(server.pid, 'SIGCONT');
      stopped = false;

      journal = Journal.open(node.vault, node.keys, node.dbPath);
      remote = remoteForNode(node, server.url, notices);
      assert.equal((await remote.start(journal.chainTail, Date.now() + 10_000)).ahead, false);
      await remote.caughtUp();
      assert.equal(remote.status().durableSeq, journal.chainTail.lastSeq.toString(), 'the server is level with the local vault');
      const serverDir = serverVaultDir(server.dataDir, node.vaultId);
      assertServerHoldsPrefix(node.vault, serverDir, true, 'after the restart');
      const view = serverCopyView(serverDir, node.keys, node.vaultId, path.join(node.dir, 'server-view'));
      const to = path.join(node.dir, 'from-server.sqlite3');
      const r = restoreDatabase({ vaultDir: view, keys: node.keys, to });
      assert.equal(r.version, node.version());
      assert.equal(dumpFile(to), dumpFile(node.dbPath), 'restore from the server alone equals the node');
    } finally {
      if (stopped) process.kill(server.pid, 'SIGCONT');
      compactor.close();
      await remote.close(0);
      journal.close();
      await server.stop();
    }
  },
);
