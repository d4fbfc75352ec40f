// A node with a tiny lightningd-like database (the vars table and one more), set up for lnbackup
// by initNode, and calls made the way lightningd makes them: the hook runs while the transaction
// is open (the file at rest at the version before), then the transaction commits. Unit tests of
// the journal, compaction and the plugin use it to run in milliseconds on real files.
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import { STAGING_DIR } from '../../src/journal/pagedSnapshot.js';
import { makeTestNode, type VaultNode } from './testNode.js';
import { initNode } from '../../src/cli/initNode.js';
import { loadKeys } from '../../src/cli/keyOptions.js';

export interface TinyNode extends VaultNode {
  /** The node's database version now. */
  version(): number;
  /** The next call's statements (an insert, then the bump from the current version). */
  nextWrites(): string[];
  /** Commits `writes` to the database (after the hook answered `continue`). */
  commit(writes: readonly string[]): void;
}

export function makeTinyNode(prefix: string, atVersion = 5): TinyNode {
  const node = makeTestNode(prefix);
  const db = new Database(node.dbPath);
  db.exec('CREATE TABLE vars (name TEXT PRIMARY KEY, val TEXT, intval INTEGER, blobval BLOB); CREATE TABLE notes (n INTEGER PRIMARY KEY, body TEXT);');
  db.prepare("INSERT INTO vars (name, intval) VALUES ('data_version', ?)").run(atVersion);
  db.close();
  const { keys, nodeId } = loadKeys({ hsmSecret: node.hsmSecretPath });
  const r = initNode({ lightningDir: node.lightningDir, network: 'regtest', vault: node.vault });
  const version = (): number => {
    const d = new Database(node.dbPath, { readonly: true });
    try {
      return (d.prepare("SELECT intval FROM vars WHERE name = 'data_version'").get() as { intval: number }).intval;
    } finally {
      d.close();
    }
  };
  return {
    ...node,
    keys,
    nodeId,
    vaultId: r.vaultId,
    version,
    nextWrites: () => {
      const v = version();
      return [`INSERT INTO notes (body) VALUES ('note ${v + 1}')`, `UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = ${v}`];
    },
    commit: (writes) => {
      const d = new Database(node.dbPath);
      try {
        d.transaction(() => {
          for (const w of writes) d.exec(w);
        })();
      } finally {
        d.close();
      }
    },
  };
}

/** True when the node's vault holds a staged copy of the database (a compaction under way). */
export function hasStagedCopy(vault: string): boolean {
  const dir = path.join(vault, STAGING_DIR);
  return fs.existsSync(dir) && fs.readdirSync(dir).length > 0;
}
