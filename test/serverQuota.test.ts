// Quotas that hold whatever a client does: the attack of issue 11 (a pack re-sent under a name the
// vault holds, the name deleted before the last piece, repeated), and a property test that drives
// random interleavings of Append, PutPack (in pieces, some abandoned), DeletePacks and Prune on two
// connections of one key over two vaults, with a real in-process BackupServer over real TCP, on
// the file store and on a real PostgreSQL, then restarts the server: at every look the bytes held
// stay under the quota, and when the clients are quiet the store's figures (what the quota is
// charged with) equal the bytes really on disk (or in the database), before and after the restart.
import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { BackupServer, type RunningServer } from '../src/server/server.js';
import { openStore, type StoreSpec } from '../src/server/storage/openStore.js';
import { ErrorCode, MessageType } from '../src/protocol/messages.js';
import { listPacks } from '../src/vault/packFiles.js';
import { readRawRecords } from '../src/vault/rawRecords.js';
import { tempDir } from './helpers/paths.js';
import { databasePerTest } from './helpers/postgres.js';
import { envCount, Prng } from './helpers/prng.js';
import { RawClient, TestVault } from './helpers/rawClient.js';
import { serverVaultDir } from './helpers/remoteFixture.js';

const tmp = tempDir('server-quota');
let made = 0;
const fresh = (name: string): string => {
  const dir = path.join(tmp, `${name}-${++made}`);
  fs.mkdirSync(dir);
  return dir;
};

function packName(): string {
  return `p-${crypto.randomBytes(16).toString('hex')}.pack`;
}

async function start(spec: StoreSpec, quotaBytes: number): Promise<RunningServer> {
  const store = await openStore(spec);
  return BackupServer.start({ host: '127.0.0.1', port: 0, dataDir: spec.dataDir, allow: 'open', quotaBytes, store, scrubIntervalMs: 0 });
}

/** What the store charges the client with (its figures, as status shows them). */
async function chargedBytes(server: RunningServer, client: Buffer): Promise<number> {
  return (await server.status()).clients.find((c) => c.publicKey === client.toString('hex'))?.totalBytes ?? 0;
}

async function openAll(c: RawClient, vaults: readonly TestVault[]): Promise<void> {
  for (const v of vaults) {
    const st = await c.openVault(v.vaultId, v.identity);
    assert.equal(st.type, MessageType.VaultState, st.type === MessageType.Error ? st.message : '');
  }
}

/** Sends a whole pack in pieces of `piece` bytes: 'stored', or the name of the error that stopped it. */
async function putPack(c: RawClient, v: TestVault, name: string, bytes: Buffer, piece: number, between?: () => Promise<void>): Promise<string> {
  for (let at = 0; at < bytes.length; at += piece) {
    const r = await c.putPackPiece(v.vaultId, name, bytes.length, at, bytes.subarray(at, at + piece));
    if (r.type === MessageType.Error) return ErrorCode[r.code];
    if (at === 0 && between) await between();
  }
  return 'stored';
}

test('the attack of issue 11: a pack under a held name, the name deleted before the last piece, repeated, stays inside the quota', async () => {
  const quota = 1024 * 1024;
  const spec = { dataDir: fresh('attack') };
  const server = await start(spec, quota);
  const v = new TestVault(fresh('attack-node'));
  const c = await RawClient.ready(server.url, v.transportKey);
  try {
    await openAll(c, [v]);
    const outcomes: string[] = [];
    for (let round = 0; round < 4; round++) {
      const name = packName();
      assert.equal((await c.putPackPiece(v.vaultId, name, 4, 0, crypto.randomBytes(4))).type, MessageType.PackStored, 'a 4-byte pack');
      const big = crypto.randomBytes(900 * 1024);
      const first = await c.putPackPiece(v.vaultId, name, big.length, 0, big.subarray(0, 400 * 1024));
      if (first.type === MessageType.Error) {
        outcomes.push(ErrorCode[first.code]);
        continue;
      }
      assert.equal((await c.deletePacks(v.vaultId, [name])).type, MessageType.PacksDeleted);
      const last = await c.putPackPiece(v.vaultId, name, big.length, 400 * 1024, big.subarray(400 * 1024));
      outcomes.push(last.type === MessageType.Error ? ErrorCode[last.code] : 'stored');
    }
    const charged = await chargedBytes(server, v.clientPublicKey);
    const onDisk = listPacks(serverVaultDir(spec.dataDir, v.vaultId)).reduce((n, p) => n + p.bytes, 0);
    assert.equal(charged, onDisk, 'the quota is charged with what is on disk');
    assert.ok(onDisk <= quota, `${onDisk} bytes stored against a quota of ${quota} (outcomes: ${outcomes.join(', ')})`);
    assert.equal(outcomes[0], 'stored', 'the first 900 KiB pack fits');
    assert.ok(
      outcomes.slice(1).every((o) => o === 'QuotaExceeded'),
      `the others are refused: ${outcomes.join(', ')}`,
    );
  } finally {
    c.close();
    await server.stop();
  }
});

// -- the property test ------------------------------------------------------------------------------

interface Harness {
  readonly kind: string;
  /** A storage of its own for a test (null: skipped), given a database per test for PostgreSQL. */
  fresh(t: TestContext, database: (t: TestContext) => Promise<string | null>): Promise<StoreSpec | null>;
  /** Bytes of records and packs the storage really holds for these vaults. */
  onDisk(spec: StoreSpec, vaults: readonly TestVault[]): Promise<number>;
}

const filesHarness: Harness = {
  kind: 'files',
  fresh: async () => ({ dataDir: fresh('prop-files') }),
  onDisk: async (spec, vaults) => {
    let n = 0;
    for (const v of vaults) {
      const dir = serverVaultDir(spec.dataDir, v.vaultId);
      n += readRawRecords(dir, 0n, Number.MAX_SAFE_INTEGER).reduce((s, r) => s + r.bytes.length, 0);
      n += listPacks(dir).reduce((s, p) => s + p.bytes, 0);
    }
    return n;
  },
};

const postgresHarness: Harness = {
  kind: 'postgres',
  fresh: async (t, database) => {
    const url = await database(t);
    return url === null ? null : { dataDir: fresh('prop-pg'), storage: url };
  },
  onDisk: async (spec, vaults) => {
    const db = new pg.Client({ connectionString: spec.storage });
    await db.connect();
    try {
      // Every vault the owners of these hold (the store keeps them under owner-scoped ids).
      const owners = [...new Set(vaults.map((v) => v.clientPublicKey.toString('hex')))];
      const mine = 'vault_id IN (SELECT vault_id FROM lnbackup_vaults WHERE owner = ANY($1::text[]))';
      const r = await db.query<{ n: string | null }>(`SELECT sum(octet_length(bytes))::bigint AS n FROM lnbackup_records WHERE ${mine}`, [owners]);
      const p = await db.query<{ n: string | null }>(`SELECT sum(size)::bigint AS n FROM lnbackup_packs WHERE ${mine}`, [owners]);
      return Number(r.rows[0]?.n ?? 0) + Number(p.rows[0]?.n ?? 0);
    } finally {
      await db.end();
    }
  },
};

/** A vault's next record to send: the first not acknowledged (a refused one is sent again). */
class Feed {
  acked = 0;
  generation = 1;
  constructor(readonly v: TestVault) {}
  next(size: number, newGeneration: boolean): { seq: bigint; generation: number; bytes: Buffer } {
    if (this.acked < this.v.sealed.length) return this.v.sealed[this.acked];
    if (newGeneration) this.generation++;
    return this.v.next(size, this.generation);
  }
}

for (const h of [filesHarness, postgresHarness]) {
  describe(`quota under random interleavings: ${h.kind}`, () => {
    const database = h.kind === 'postgres' ? databasePerTest('lnbackup_q') : async () => null;

    test('stored <= quota at every look, the charged bytes equal the bytes stored, also after a restart', { timeout: 300_000 }, async (t) => {
      const spec = await h.fresh(t, database);
      if (!spec) return;
      const seed = envCount('QUOTA_SEED', crypto.randomInt(2 ** 31));
      const steps = envCount('QUOTA_STEPS', 200);
      const rng = new Prng(seed);
      t.diagnostic(`QUOTA_SEED=${seed} QUOTA_STEPS=${steps}`);
      const quota = 256 * 1024;
      const root = crypto.randomBytes(32);
      const vaults = [new TestVault(fresh('prop-v1'), root), new TestVault(fresh('prop-v2'), root)];
      const feeds = vaults.map((v) => new Feed(v));
      const client = vaults[0].clientPublicKey;
      // A few names per vault, each with two contents, a small and a large one (a name deleted and
      // sent again may come back larger), so most re-sends are the same pack and some conflict.
      const names = vaults.map(() =>
        Array.from({ length: 4 }, () => ({
          name: packName(),
          variants: [crypto.randomBytes(rng.int(1, 1024)), crypto.randomBytes(rng.int(quota / 8, quota / 2))],
        })),
      );
      let server = await start(spec, quota);
      let conns: RawClient[] = [];
      const connect = async (): Promise<RawClient> => {
        const c = await RawClient.ready(server.url, vaults[0].transportKey);
        await openAll(c, vaults);
        return c;
      };
      const outcomes = new Map<string, number>();
      const count = (what: string): void => void outcomes.set(what, (outcomes.get(what) ?? 0) + 1);
      let maxSeen = 0;
      const look = async (): Promise<void> => {
        const n = await chargedBytes(server, client);
        maxSeen = Math.max(maxSeen, n);
        assert.ok(n <= quota, `seed ${seed}: ${n} bytes held against a quota of ${quota}`);
      };
      const quiet = async (when: string): Promise<void> => {
        const disk = await h.onDisk(spec, vaults);
        assert.equal(await chargedBytes(server, client), disk, `seed ${seed}, ${when}: the charged bytes are the bytes stored`);
        assert.ok(disk <= quota, `seed ${seed}, ${when}: ${disk} bytes stored against a quota of ${quota}`);
      };
      // One operation on a connection; every outcome is fine, the invariant is what is checked.
      const operate = async (c: RawClient, vi: number, appendsInBatch: Set<number>): Promise<void> => {
        const v = vaults[vi];
        const op = rng.weighted({ append: 4, pack: 4, abandon: 1, delete: 2, prune: 1 });
        if (op === 'append' && !appendsInBatch.has(vi)) {
          appendsInBatch.add(vi);
          const r = feeds[vi].next(rng.int(100, 20_000), rng.next() < 0.15);
          const a = await c.append(v.vaultId, r);
          if (a.type === MessageType.Ack) feeds[vi].acked++;
          count(a.type === MessageType.Ack ? 'append acked' : `append ${ErrorCode[a.code]}`);
        } else if (op === 'pack' || op === 'abandon') {
          const named = rng.pick(names[vi]);
          const p = { name: named.name, bytes: rng.pick(named.variants) };
          const piece = rng.int(1024, 64 * 1024);
          if (op === 'abandon') {
            const r = await c.putPackPiece(v.vaultId, p.name, p.bytes.length, 0, p.bytes.subarray(0, Math.min(piece, p.bytes.length - 1)));
            count(`pack abandoned ${r.type === MessageType.Error ? ErrorCode[r.code] : 'after a piece'}`);
            return;
          }
          const between = async (): Promise<void> => {
            await look();
            if (rng.next() < 0.3)
              count(`delete mid-upload ${(await conns[rng.int(0, 1)].deletePacks(v.vaultId, [p.name])).type === MessageType.PacksDeleted ? 'ok' : 'refused'}`);
          };
          const r = await putPack(c, v, p.name, p.bytes, piece, between);
          count(`pack ${r}`);
        } else if (op === 'delete') {
          const some = names[vi].filter(() => rng.next() < 0.5).map((p) => p.name);
          count(`delete ${(await c.deletePacks(v.vaultId, some)).type === MessageType.PacksDeleted ? 'ok' : 'refused'}`);
        } else {
          const r = await c.prune(v.vaultId, rng.int(1, feeds[vi].generation));
          count(`prune ${r.type === MessageType.VaultState ? 'ok' : ErrorCode[r.code]}`);
        }
      };
      try {
        conns = [await connect(), await connect()];
        for (let step = 0; step < steps; step++) {
          if (step === Math.floor(steps / 2)) {
            // Half way: the server restarts (the store reopened from the storage).
            for (const c of conns) c.close();
            await server.stop();
            server = await start(spec, quota);
            await quiet('after the restart');
            conns = [await connect(), await connect()];
          }
          if (rng.next() < 0.1) {
            // A connection dropped in the middle of whatever it was doing, and a new one.
            const i = rng.int(0, 1);
            conns[i].conn.destroy();
            conns[i] = await connect();
          }
          const appendsInBatch = new Set<number>();
          const batch = Array.from({ length: rng.int(1, 4) }, () => operate(rng.pick(conns), rng.int(0, 1), appendsInBatch));
          const looking = look();
          await Promise.all([...batch, looking]);
          await look();
          await quiet(`step ${step}`);
        }
        t.diagnostic(`outcomes: ${JSON.stringify(Object.fromEntries([...outcomes].sort()))}; most held ${maxSeen} of ${quota}`);
        assert.ok((outcomes.get('pack QuotaExceeded') ?? 0) + (outcomes.get('append QuotaExceeded') ?? 0) > 0, 'the quota was reached at least once');
        assert.ok((outcomes.get('pack stored') ?? 0) > 0 && (outcomes.get('append acked') ?? 0) > 0, 'packs and records were stored');
      } finally {
        for (const c of conns) c.close();
        await server.stop();
      }
      server = await start(spec, quota);
      try {
        await quiet('after the last restart');
      } finally {
        await server.stop();
      }
    });
  });
}
