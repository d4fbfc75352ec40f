// Vault ids scoped by owner, over real TCP against an in-process BackupServer, on the file store and
// on a real PostgreSQL: a key that learns another node's vault id and creates it first neither
// blocks that node (it creates and uses its own vault of that id) nor learns whether the id is
// taken (opening with a forged identity creates, taken or not); each sees only its own records.
// A vault stored before ids were scoped (under the node's plain id) is found where it is, and every
// new vault is kept under its owner-scoped id, which no other key can be given.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BackupServer, type RunningServer } from '../src/server/server.js';
import { openStore, type StoreSpec } from '../src/server/storage/openStore.js';
import { scopedVaultId } from '../src/server/storage/vaultScope.js';
import { MessageType } from '../src/protocol/messages.js';
import { tempDir } from './helpers/paths.js';
import { databasePerTest } from './helpers/postgres.js';
import { RawClient, TestVault } from './helpers/rawClient.js';

const tmp = tempDir('server-scope');
let made = 0;
const fresh = (name: string): string => {
  const dir = path.join(tmp, `${name}-${++made}`);
  fs.mkdirSync(dir);
  return dir;
};

async function start(spec: StoreSpec): Promise<RunningServer> {
  return BackupServer.start({ host: '127.0.0.1', port: 0, dataDir: spec.dataDir, allow: 'open', store: await openStore(spec), scrubIntervalMs: 0 });
}

/** A second node's vault with the same vault id as `victim` (what a squatter who learned the id sends). */
function squatterOf(victim: TestVault): TestVault {
  const v = new TestVault(fresh('squatter'));
  Object.defineProperty(v, 'vaultId', { value: victim.vaultId });
  Object.defineProperty(v, 'identity', {
    value: Buffer.from(JSON.stringify({ format: 'lnbackup-vault', vaultId: victim.vaultId.toString('hex'), forged: true })),
  });
  return v;
}

type Database = (t: TestContext) => Promise<string | null>;
const harnesses: { kind: string; fresh: (t: TestContext, database: Database) => Promise<StoreSpec | null> }[] = [
  { kind: 'files', fresh: async () => ({ dataDir: fresh('files') }) },
  {
    kind: 'postgres',
    fresh: async (t, database) => {
      const url = await database(t);
      return url === null ? null : { dataDir: fresh('pg'), storage: url };
    },
  },
];

for (const h of harnesses) {
  describe(`vault ids scoped by owner: ${h.kind}`, () => {
    const database: Database = h.kind === 'postgres' ? databasePerTest('lnbackup_s') : async () => null;

    test("a squatter who creates a node's vault id first blocks nothing and learns nothing; a vault stored before is found where it was", async (t) => {
      const spec = await h.fresh(t, database);
      if (!spec) return;
      const victim = new TestVault(fresh('victim'));
      const squatter = squatterOf(victim);
      const victimKey = victim.clientPublicKey.toString('hex');
      const squatterKey = squatter.clientPublicKey.toString('hex');

      // The squatter's vault existed first, stored under the plain id (as every vault stored
      // before ids were scoped): written into the storage directly, then a server starts on it.
      const early = await openStore(spec);
      await early.createVault(squatterKey, squatter.vaultId.toString('hex'), squatter.identity);
      await early.append(squatter.vaultId.toString('hex'), [squatter.next(300)]);
      await early.close();

      let server = await start(spec);
      try {
        const cs = await RawClient.ready(server.url, squatter.transportKey);
        const st = await cs.openVault(squatter.vaultId);
        assert.ok(st.type === MessageType.VaultState && st.lastSeq === 1n, 'the vault stored before is found where it was');

        // The real node creates its vault: no "holds no vault for this node's key", no retry loop.
        const cv = await RawClient.ready(server.url, victim.transportKey);
        const created = await cv.openVault(victim.vaultId, victim.identity);
        assert.ok(
          created.type === MessageType.VaultState && created.lastSeq === 0n,
          created.type === MessageType.Error ? created.message : 'an empty vault of its own',
        );
        for (let i = 0; i < 3; i++) assert.equal((await cv.append(victim.vaultId, victim.next())).type, MessageType.Ack);
        // The squatter still has its one record, the node its three; each lists only its own.
        assert.deepEqual(
          (await cs.readAll(squatter.vaultId)).map((r) => r.bytes.toString('hex')),
          [squatter.sealed[0].bytes.toString('hex')],
        );
        assert.deepEqual(
          (await cv.readAll(victim.vaultId)).map((r) => r.bytes.toString('hex')),
          victim.sealed.map((r) => r.bytes.toString('hex')),
        );
        for (const [c, n] of [
          [cs, 1n],
          [cv, 3n],
        ] as const) {
          const l = await c.list();
          assert.ok(l.type === MessageType.VaultList && l.vaults.length === 1 && l.vaults[0].vaultId.equals(victim.vaultId) && l.vaults[0].lastSeq === n);
        }
        // No existence oracle: a third key opening a taken id and a free id with a forged identity gets the same answer.
        const probe = await RawClient.ready(server.url, crypto.randomBytes(32));
        const taken = await probe.openVault(victim.vaultId, squatter.identity);
        const freeId = crypto.randomBytes(16);
        const free = await probe.openVault(freeId, Buffer.from(JSON.stringify({ format: 'lnbackup-vault', vaultId: freeId.toString('hex') })));
        assert.ok(taken.type === MessageType.VaultState && free.type === MessageType.VaultState && taken.lastSeq === 0n && free.lastSeq === 0n, 'both create');
        for (const c of [cs, cv, probe]) c.close();
        // Status names each by the node's id; the store keeps the earlier vault under the plain id,
        // every new one under its owner-scoped id.
        const hex = victim.vaultId.toString('hex');
        const stored = (await server.status()).clients.flatMap((c) => c.vaults.map((v) => `${c.publicKey}:${v.vaultId}:${v.storedAs}`));
        assert.ok(stored.includes(`${squatterKey}:${hex}:${hex}`), stored.join(' '));
        assert.ok(stored.includes(`${victimKey}:${hex}:${scopedVaultId(victimKey, hex)}`), stored.join(' '));
        await server.stop();

        // After a restart, the same.
        server = await start(spec);
        const again = await RawClient.ready(server.url, victim.transportKey);
        const st2 = await again.openVault(victim.vaultId);
        assert.ok(st2.type === MessageType.VaultState && st2.lastSeq === 3n);
        again.close();
      } finally {
        await server.stop();
      }
    });
  });
}
