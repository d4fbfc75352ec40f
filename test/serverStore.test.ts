// The backup server's storage: one contract run against both stores (the embedded file store and
// PostgreSQL, a throwaway cluster), with real sealed records: create/list vaults, appends read back
// byte for byte, pipelining, sequence checks, group commit, reopen, paging; crash safety with a
// writer process killed by SIGKILL at random moments; for PostgreSQL a SIGKILL of the database
// mid-stream; for files a full disk (a real 2 MiB tmpfs), torn tails, damage, the data lock, and
// a server vault folder read by the node's own VaultReader.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { FileStore } from '../src/server/storage/fileStore.js';
import { advanceTail, AppendRefusedError, EMPTY_TAIL, GroupCommit, type RoundBackend, type VaultTail } from '../src/server/storage/groupCommit.js';
import { openStore, type OpenedStore, type StoreSpec } from '../src/server/storage/openStore.js';
import { describePostgresUrl } from '../src/server/storage/postgresStore.js';
import { PackConflictError, StorageUnavailableError, type StoreRecord } from '../src/server/storage/store.js';
import { decodeHeader, genesisHash, HEADER_BYTES, recordHash, RecordType } from '../src/vault/format.js';
import { createIdentity, IDENTITY_FILE, readIdentity } from '../src/vault/identity.js';
import { vaultKeysFromRoot, type VaultKeys } from '../src/vault/keys.js';
import { readRawRecords } from '../src/vault/rawRecords.js';
import { VaultReader } from '../src/vault/reader.js';
import { openRecord } from '../src/vault/record.js';
import { RecordSealer } from '../src/vault/sealer.js';
import { listSegments } from '../src/vault/segments.js';
import { repoRoot, tempDir } from './helpers/paths.js';
import { SkipError, startPostgres, waitForOtherSessions, type TestPostgres } from './helpers/postgres.js';
import { Prng } from './helpers/prng.js';
import type { StoreWriterSpec } from './helpers/storeWriter.js';
import { packContents, randomPackName, type PackWriterSpec } from './helpers/packWriter.js';
import { sleep } from './helpers/waiting.js';

const storeWriterEntry = path.join(repoRoot, 'dist/test/helpers/storeWriter.js');
const packWriterEntry = path.join(repoRoot, 'dist/test/helpers/packWriter.js');
/** A node's vault as the server sees it: identity bytes, and a sealer making its records. */
class NodeVault {
  readonly keys: VaultKeys;
  readonly rootKey: Buffer;
  readonly identity: Buffer;
  readonly vaultId: string;
  readonly vaultIdBytes: Buffer;
  readonly owner: string;
  private sealer: RecordSealer;
  generation = 1;
  private dataVersion = 0;

  constructor(segmentBytes = 4096, owner?: string) {
    this.rootKey = crypto.randomBytes(32);
    this.keys = vaultKeysFromRoot(this.rootKey);
    const dir = tempDir('node-vault');
    const id = createIdentity(dir, this.keys, null, segmentBytes);
    this.identity = fs.readFileSync(path.join(dir, IDENTITY_FILE));
    this.vaultId = id.vaultId;
    this.vaultIdBytes = Buffer.from(id.vaultId, 'hex');
    this.owner = owner ?? randomOwner();
    this.sealer = new RecordSealer(this.keys.record, this.vaultIdBytes, { lastSeq: 0n, lastHash: genesisHash(this.vaultIdBytes), generation: 0 });
  }

  /** `n` new records continuing the chain (payloads of random sizes from `minPayload` to `maxPayload`). */
  next(n: number, maxPayload = 2000, minPayload = 0): StoreRecord[] {
    const out: StoreRecord[] = [];
    for (let i = 0; i < n; i++) {
      const payload = crypto.randomBytes(crypto.randomInt(minPayload, maxPayload + 1));
      const s = this.sealer.seal({ type: RecordType.Writes, generation: this.generation, dataVersion: ++this.dataVersion, supersedes: 0n, payload });
      out.push({ seq: s.seq, generation: s.generation, bytes: s.bytes });
    }
    return out;
  }

  /** Continues from the store's durable tail (after records were lost to a failure or crash). */
  resumeFrom(lastSeq: bigint, lastHash: Buffer | null): void {
    this.sealer = new RecordSealer(this.keys.record, this.vaultIdBytes, {
      lastSeq,
      lastHash: lastHash ?? genesisHash(this.vaultIdBytes),
      generation: this.generation,
    });
  }
}

function randomOwner(): string {
  return `02${crypto.randomBytes(32).toString('hex')}`;
}

function sha256(b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}

function totalBytes(records: readonly StoreRecord[]): number {
  return records.reduce((n, r) => n + r.bytes.length, 0);
}

/** Every record, read in pages. */
async function readAll(store: OpenedStore, vaultId: string, pageBytes = 256 * 1024): Promise<StoreRecord[]> {
  const out: StoreRecord[] = [];
  let from = 1n;
  for (;;) {
    const page = await store.readRecords(vaultId, from, pageBytes);
    if (page.length === 0) return out;
    out.push(...page);
    from = page[page.length - 1].seq + 1n;
  }
}

/** Opens every record with the key and checks sequence and hash chain from seq 1. */
function verifyChain(records: readonly StoreRecord[], node: NodeVault): void {
  let prev = genesisHash(node.vaultIdBytes);
  let expected = 1n;
  for (const r of records) {
    assert.equal(r.seq, expected, 'records are consecutive');
    const headerBytes = r.bytes.subarray(0, HEADER_BYTES);
    const header = decodeHeader(headerBytes);
    assert.equal(header.seq, r.seq);
    const sealed = r.bytes.subarray(HEADER_BYTES);
    const body = openRecord(node.keys.record, node.vaultIdBytes, header, headerBytes, sealed);
    assert.ok(body, `record ${r.seq} opens with the key`);
    assert.ok(body.prevHash.equals(prev), `record ${r.seq} chains to the one before`);
    assert.equal(body.generation, r.generation);
    prev = recordHash(headerBytes, sealed);
    expected++;
  }
}

/** A whole pack, read in pieces of `pieceBytes`. */
async function readWholePack(store: OpenedStore, vaultId: string, name: string, pieceBytes: number): Promise<Buffer> {
  const pieces: Buffer[] = [];
  let offset = 0;
  for (;;) {
    const piece = await store.readPack(vaultId, name, offset, pieceBytes);
    assert.ok(piece, `pack ${name} is held`);
    assert.ok(piece.bytes.length <= pieceBytes);
    pieces.push(piece.bytes);
    offset += piece.bytes.length;
    if (offset >= piece.totalBytes) return Buffer.concat(pieces);
    assert.ok(piece.bytes.length > 0, 'a piece before the end is not empty');
  }
}

function assertSamePack(actual: Buffer, expected: Buffer): void {
  assert.equal(actual.length, expected.length, 'pack size');
  assert.ok(actual.equals(expected), 'pack bytes equal');
}

function assertSameRecords(actual: readonly StoreRecord[], expected: readonly StoreRecord[], what = 'number of records'): void {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < expected.length; i++) {
    assert.equal(actual[i].seq, expected[i].seq);
    assert.equal(actual[i].generation, expected[i].generation);
    assert.ok(actual[i].bytes.equals(expected[i].bytes), `record ${expected[i].seq}: bytes equal`);
  }
}

// ---------------------------------------------------------------------------------------------
// The two stores behind one harness.

interface Harness {
  readonly kind: 'files' | 'postgres';
  /** A new, empty store location; null when this store cannot run here (the test is skipped). */
  fresh(t: TestContext): Promise<StoreSpec | null>;
}

const filesHarness: Harness = {
  kind: 'files',
  async fresh() {
    return { dataDir: path.join(tempDir('store-files'), 'data') };
  },
};

let cluster: TestPostgres | null = null;
let clusterSkip: string | null = null;
let databases = 0;

const postgresHarness: Harness = {
  kind: 'postgres',
  async fresh(t) {
    if (!cluster) {
      t.skip(clusterSkip ?? 'PostgreSQL did not start');
      return null;
    }
    const url = await cluster.createDatabase(`lnbackup_t${process.pid}_${++databases}`);
    return { dataDir: tempDir('store-pg'), storage: url };
  },
};

async function openWithNotices(spec: StoreSpec): Promise<{ store: OpenedStore; notices: string[] }> {
  const notices: string[] = [];
  const store = await openStore(spec, (m) => notices.push(m));
  return { store, notices };
}

/** Runs `use` on a freshly opened store of the harness (nothing when it is skipped), then closes it. */
async function withFreshStore(h: Harness, t: TestContext, use: (store: OpenedStore, spec: StoreSpec) => Promise<void>): Promise<void> {
  const spec = await h.fresh(t);
  if (!spec) return;
  const { store } = await openWithNotices(spec);
  try {
    await use(store, spec);
  } finally {
    await store.close();
  }
}

for (const h of [filesHarness, postgresHarness]) {
  describe(`server store: ${h.kind}`, () => {
    if (h.kind === 'postgres') {
      before(async () => {
        try {
          cluster = await startPostgres();
        } catch (err) {
          if (!(err instanceof SkipError)) throw err;
          clusterSkip = err.message;
        }
      });
      after(async () => {
        await cluster?.stop();
      });
    }

    test('creates, gets and lists vaults by owner', async (t) => {
      await withFreshStore(h, t, async (store) => {
        assert.equal(store.kind, h.kind);
        const alice = randomOwner();
        const bob = randomOwner();
        const a1 = new NodeVault(4096, alice);
        const a2 = new NodeVault(4096, alice);
        const b1 = new NodeVault(4096, bob);
        for (const v of [a1, a2, b1]) {
          const created = await store.createVault(v.owner, v.vaultId, v.identity);
          assert.equal(created.vaultId, v.vaultId);
          assert.equal(created.owner, v.owner);
          assert.ok(created.identity.equals(v.identity));
          assert.equal(created.lastSeq, 0n);
          assert.equal(created.firstSeq, 0n);
          assert.equal(created.lastHash, null);
          assert.equal(created.bytes, 0);
          assert.equal(created.lastWriteAt, null);
        }
        assert.deepEqual((await store.listVaults(alice)).map((v) => v.vaultId).sort(), [a1.vaultId, a2.vaultId].sort());
        assert.deepEqual(
          (await store.listVaults(bob)).map((v) => v.vaultId),
          [b1.vaultId],
        );
        assert.deepEqual(await store.listVaults(randomOwner()), []);
        assert.equal((await store.listVaults()).length, 3);
        const got = await store.getVault(a2.vaultId);
        assert.ok(got?.identity.equals(a2.identity));
        assert.equal(await store.getVault(crypto.randomBytes(16).toString('hex')), null);
        assert.equal(await store.getVault('../../etc'), null);
        await assert.rejects(store.createVault(alice, a1.vaultId, a1.identity), /already exists/);
        await assert.rejects(store.createVault(alice, '../escape', a1.identity), /not 32 lowercase hex/);
        await assert.rejects(store.createVault('nope', crypto.randomBytes(16).toString('hex'), a1.identity), /owner/);
        if (h.kind === 'postgres') assert.doesNotMatch(store.location, /:[^@/]*@/, 'no password in the location');
      });
    });

    test('appends in order and reads back exactly; the tail is right', async (t) => {
      await withFreshStore(h, t, async (store) => {
        const node = new NodeVault(4096);
        await store.createVault(node.owner, node.vaultId, node.identity);
        const all: StoreRecord[] = [];
        const before = Date.now();
        for (let i = 0; i < 20; i++) {
          const recs = node.next(1 + (i % 4));
          await store.append(node.vaultId, recs);
          all.push(...recs);
        }
        node.generation = 2; // a new generation starts a new segment
        const gen2 = node.next(5);
        await store.append(node.vaultId, gen2);
        all.push(...gen2);
        await store.append(node.vaultId, []); // nothing to store: resolves
        const v = await store.getVault(node.vaultId);
        assert.ok(v);
        assert.equal(v.firstSeq, 1n);
        assert.equal(v.lastSeq, all[all.length - 1].seq);
        const last = all[all.length - 1].bytes;
        assert.ok(v.lastHash?.equals(recordHash(last.subarray(0, HEADER_BYTES), last.subarray(HEADER_BYTES))));
        assert.equal(v.lastGeneration, 2);
        assert.equal(v.bytes, totalBytes(all));
        assert.ok(v.lastWriteAt !== null && v.lastWriteAt >= before && v.lastWriteAt <= Date.now());
        const back = await readAll(store, node.vaultId);
        assertSameRecords(back, all);
        verifyChain(back, node);
        // From the middle.
        const tail = await store.readRecords(node.vaultId, 30n, 1 << 30);
        assertSameRecords(tail, all.slice(29));
        assert.deepEqual(await store.readRecords(node.vaultId, v.lastSeq + 1n, 1 << 20), []);
      });
    });

    test('pipelined appends (100 append calls without waiting) are all durable and in order', async (t) => {
      await withFreshStore(h, t, async (store) => {
        const node = new NodeVault(8192);
        await store.createVault(node.owner, node.vaultId, node.identity);
        const batches = Array.from({ length: 100 }, (_, i) => node.next(1 + (i % 3), 600));
        const settled: number[] = [];
        await Promise.all(batches.map((b, i) => store.append(node.vaultId, b).then(() => settled.push(i))));
        assert.deepEqual(
          settled,
          [...settled].sort((a, b) => a - b),
          'appends resolve in the order they were made',
        );
        const all = batches.flat();
        assertSameRecords(await readAll(store, node.vaultId), all);
        assert.equal((await store.getVault(node.vaultId))?.lastSeq, all[all.length - 1].seq);
      });
    });

    test('an append out of sequence or malformed is refused and changes nothing', async (t) => {
      await withFreshStore(h, t, async (store) => {
        const node = new NodeVault();
        await store.createVault(node.owner, node.vaultId, node.identity);
        const first = node.next(3);
        await store.append(node.vaultId, first);
        const before = await store.getVault(node.vaultId);
        const more = node.next(3);
        await assert.rejects(
          store.append(node.vaultId, more.slice(1)),
          (e: unknown) => e instanceof AppendRefusedError && /does not follow record 3/.test(e.message),
        );
        await assert.rejects(store.append(node.vaultId, first.slice(2)), AppendRefusedError, 'a replayed record');
        await assert.rejects(store.append(node.vaultId, [more[0], more[2]]), AppendRefusedError, 'a gap inside one append');
        await assert.rejects(store.append(node.vaultId, [{ ...more[0], seq: 4n, bytes: more[1].bytes }]), /header says it is record 5/);
        await assert.rejects(store.append(node.vaultId, [{ ...more[0], bytes: more[0].bytes.subarray(0, 100) }]), /header says/);
        await assert.rejects(store.append(node.vaultId, [{ ...more[0], generation: 0 }]), /generation/);
        await assert.rejects(store.append(crypto.randomBytes(16).toString('hex'), more), /no vault/);
        assert.deepEqual(await store.getVault(node.vaultId), before);
        await store.append(node.vaultId, more);
        assertSameRecords(await readAll(store, node.vaultId), [...first, ...more]);
        // An older generation after a newer one is refused.
        node.generation = 3;
        await store.append(node.vaultId, node.next(1));
        node.generation = 2;
        await assert.rejects(store.append(node.vaultId, node.next(1)), /older than/);
      });
    });

    test('group commit: 200 concurrent appends across 20 vaults take far fewer rounds', async (t) => {
      await withFreshStore(h, t, async (store) => {
        const nodes = Array.from({ length: 20 }, () => new NodeVault(4096));
        for (const n of nodes) await store.createVault(n.owner, n.vaultId, n.identity);
        const before = store.stats;
        const expected = new Map(nodes.map((n) => [n.vaultId, [] as StoreRecord[]]));
        const appends: Promise<void>[] = [];
        // Clients send at their own pace: ten waves, each wave one append from every vault.
        for (let wave = 0; wave < 10; wave++) {
          for (const n of nodes) {
            const recs = n.next(2, 500);
            expected.get(n.vaultId)?.push(...recs);
            appends.push(store.append(n.vaultId, recs));
          }
          await new Promise((r) => setImmediate(r));
        }
        await Promise.all(appends);
        const after = store.stats;
        const rounds = after.rounds - before.rounds;
        t.diagnostic(`${appends.length} appends in ${rounds} rounds; longest round ${after.maxRoundMs.toFixed(1)} ms`);
        assert.equal(after.appends - before.appends, 200);
        assert.equal(after.records - before.records, 400);
        assert.ok(rounds < appends.length / 2, `${rounds} rounds for ${appends.length} appends`);
        for (const n of nodes) assertSameRecords(await readAll(store, n.vaultId), expected.get(n.vaultId) ?? []);
      });
    });

    test('reopening after close gives the same state', async (t) => {
      const spec = await h.fresh(t);
      if (!spec) return;
      const nodes = [new NodeVault(4096), new NodeVault(4096), new NodeVault(4096)];
      const expected = new Map<string, StoreRecord[]>(nodes.map((n) => [n.vaultId, []]));
      // lastWriteAt after a reopen is the stores' own (segment mtime, last commit): only whether it is set is compared.
      const state = async (s: OpenedStore) => (await s.listVaults()).map((v) => ({ ...v, lastWriteAt: v.lastWriteAt === null ? null : 'set' }));
      const checkRecords = async (s: OpenedStore): Promise<void> => {
        for (const n of nodes) assertSameRecords(await readAll(s, n.vaultId), expected.get(n.vaultId) ?? []);
      };
      let before;
      {
        const { store } = await openWithNotices(spec);
        for (const [i, n] of nodes.entries()) {
          await store.createVault(n.owner, n.vaultId, n.identity);
          if (i === 2) continue; // one vault stays empty
          const recs = n.next(30 * (i + 1));
          await store.append(n.vaultId, recs);
          expected.get(n.vaultId)?.push(...recs);
        }
        before = await state(store);
        await store.close();
      }
      {
        const { store, notices } = await openWithNotices(spec);
        assert.deepEqual(notices, []);
        assert.deepEqual(await state(store), before);
        await checkRecords(store);
        // It goes on from there.
        const more = nodes[0].next(3);
        await store.append(nodes[0].vaultId, more);
        expected.get(nodes[0].vaultId)?.push(...more);
        before = await state(store);
        await store.close();
      }
      {
        const { store } = await openWithNotices(spec);
        assert.deepEqual(await state(store), before);
        await checkRecords(store);
        await store.close();
      }
    });

    test('readRecords pages by maxBytes', async (t) => {
      await withFreshStore(h, t, async (store) => {
        const node = new NodeVault(4096);
        await store.createVault(node.owner, node.vaultId, node.identity);
        const all = node.next(120, 3000);
        await store.append(node.vaultId, all);
        for (const maxBytes of [1, 500, 5000, 20_000, 1 << 30]) {
          const pages: StoreRecord[][] = [];
          let from = 1n;
          for (;;) {
            const page = await store.readRecords(node.vaultId, from, maxBytes);
            if (page.length === 0) break;
            assert.equal(page[0].seq, from);
            if (page.length > 1) assert.ok(totalBytes(page) <= maxBytes, `page of ${totalBytes(page)} bytes for maxBytes ${maxBytes}`);
            pages.push(page);
            from = page[page.length - 1].seq + 1n;
          }
          assertSameRecords(pages.flat(), all);
          if (maxBytes === 1) assert.equal(pages.length, all.length, 'at least one record per page');
          if (maxBytes === 1 << 30) assert.equal(pages.length, 1);
          // Pages are full: the next record would not have fitted.
          for (let i = 0; i + 1 < pages.length; i++) {
            assert.ok(totalBytes(pages[i]) + pages[i + 1][0].bytes.length > maxBytes || totalBytes(pages[i]) >= maxBytes);
          }
        }
      });
    });

    test('crash safety: a writer killed by SIGKILL at random moments loses no acknowledged record', async (t) => {
      const spec = await h.fresh(t);
      if (!spec) return;
      const node = new NodeVault(16 * 1024);
      {
        const { store } = await openWithNotices(spec);
        await store.createVault(node.owner, node.vaultId, node.identity);
        await store.close();
      }
      const seed = Date.now() >>> 0;
      const prng = new Prng(seed);
      t.diagnostic(`seed ${seed}`);
      const acked = new Map<bigint, string>();
      const allNotices: string[] = [];
      for (let round = 0; round < 10; round++) {
        const killAfter = prng.int(1, 400);
        const writerSpec: StoreWriterSpec = { ...spec, vaultId: node.vaultId, rootKey: node.rootKey.toString('hex'), inFlight: prng.int(1, 16) };
        const child = spawn(process.execPath, [storeWriterEntry, JSON.stringify(writerSpec)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
          child.on('exit', (code, signal) => resolve({ code, signal })),
        );
        let seen = 0;
        let killed = false;
        const lines = readline.createInterface({ input: child.stdout });
        const linesDone = new Promise<void>((r) => lines.once('close', () => r()));
        lines.on('line', (line) => {
          const [seq, hash] = line.split(' ');
          if (seq === 'start') return;
          acked.set(BigInt(seq), hash);
          if (++seen >= killAfter && !killed) {
            killed = true;
            child.kill('SIGKILL');
          }
        });
        const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
        const how = await exited;
        clearTimeout(timer);
        await linesDone;
        assert.equal(how.signal, 'SIGKILL', `the writer ended by itself (${how.code}): ${stderr}`);
        assert.ok(seen >= killAfter, `the writer acknowledged ${seen} records before the kill (wanted ${killAfter}): ${stderr}`);

        const { store, notices } = await openWithNotices(spec);
        allNotices.push(...notices);
        try {
          const v = await store.getVault(node.vaultId);
          assert.ok(v);
          const maxAcked = [...acked.keys()].reduce((m, s) => (s > m ? s : m), 0n);
          assert.ok(v.lastSeq >= maxAcked, `round ${round}: the store ends at ${v.lastSeq}, but ${maxAcked} was acknowledged`);
          const records = await readAll(store, node.vaultId);
          verifyChain(records, node);
          const bySeq = new Map(records.map((r) => [r.seq, r]));
          for (const [seq, hash] of acked) {
            const r = bySeq.get(seq);
            assert.ok(r, `acknowledged record ${seq} is present`);
            assert.equal(sha256(r.bytes), hash, `acknowledged record ${seq} is intact`);
          }
          assert.equal(v.bytes, totalBytes(records));
        } finally {
          await store.close();
        }
        if (h.kind === 'files') {
          // The vault folder holds exactly the records, with no torn bytes left at the end.
          const reader: VaultReader = new VaultReader(readIdentity(vaultDirOf(spec, node)), node.keys, vaultDirOf(spec, node));
          let n = 0;
          for (const r of reader.records()) n = Number(r.seq);
          assert.equal(reader.tornTail, null);
          assert.ok(n >= acked.size);
        }
      }
      t.diagnostic(`${acked.size} acknowledged records over 10 kills; notices: ${JSON.stringify(allNotices)}`);
      for (const m of allNotices) assert.match(m, /torn|empty segment/, 'the only repairs after a kill are cut torn tails');
    });

    if (h.kind === 'postgres') {
      test('PostgreSQL killed with SIGKILL mid-stream: appends fail, then the store recovers; acknowledged records are kept', async (t) => {
        const spec = await h.fresh(t);
        if (!spec || !cluster) return;
        const pgc = cluster;
        const { store, notices } = await openWithNotices(spec);
        try {
          const node = new NodeVault();
          await store.createVault(node.owner, node.vaultId, node.identity);
          const acked = new Map<bigint, string>();
          const errors: Error[] = [];
          let stop = false;
          const writer = (async () => {
            while (!stop) {
              const v = await store.getVault(node.vaultId);
              assert.ok(v);
              node.resumeFrom(v.lastSeq, v.lastHash);
              const window = new Set<Promise<void>>();
              let failed = false;
              while (!stop && !failed) {
                const recs = node.next(crypto.randomInt(1, 4), 1500);
                const p: Promise<void> = store.append(node.vaultId, recs).then(
                  () => {
                    for (const r of recs) acked.set(r.seq, sha256(r.bytes));
                    window.delete(p);
                  },
                  (err: Error) => {
                    errors.push(err);
                    failed = true;
                    window.delete(p);
                  },
                );
                window.add(p);
                if (window.size >= 8) await Promise.race(window);
              }
              await Promise.all(window);
              if (failed) await sleep(100);
            }
          })();
          const waitFor = async (what: string, cond: () => boolean): Promise<void> => {
            const deadline = Date.now() + 120_000;
            while (!cond()) {
              if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
              await sleep(20);
            }
          };
          await waitFor('200 acknowledged records', () => acked.size >= 200);
          pgc.kill9();
          const ackedAtKill = acked.size;
          await waitFor('a failed append', () => errors.length > 0);
          await sleep(300);
          await pgc.restart();
          await waitFor('200 more acknowledged records after the restart', () => acked.size >= ackedAtKill + 200);
          stop = true;
          await writer;
          const refused = errors.filter((e) => e instanceof AppendRefusedError).length;
          t.diagnostic(
            `${acked.size} acknowledged; ${errors.length} failed appends (${refused} refused after a lost commit answer); notices ${notices.length}`,
          );
          assert.ok(
            errors.every((e) => e instanceof StorageUnavailableError || e instanceof AppendRefusedError),
            errors.map((e) => e.message).join('\n'),
          );
          assert.ok(errors.some((e) => e instanceof StorageUnavailableError && /PostgreSQL database at postgres:\/\/postgres@127\.0\.0\.1/.test(e.message)));
          const check = async (s: OpenedStore): Promise<void> => {
            const records = await readAll(s, node.vaultId);
            verifyChain(records, node);
            const bySeq = new Map(records.map((r) => [r.seq, r]));
            for (const [seq, hash] of acked) assert.equal(sha256(bySeq.get(seq)?.bytes ?? Buffer.alloc(0)), hash, `acknowledged record ${seq}`);
            const v = await s.getVault(node.vaultId);
            assert.equal(v?.lastSeq, records[records.length - 1].seq);
            assert.equal(v?.bytes, totalBytes(records));
          };
          await check(store);
          const again = await openWithNotices(spec);
          try {
            await check(again.store);
          } finally {
            await again.store.close();
          }
        } finally {
          await store.close();
        }
      });

      test('the location never shows a password', () => {
        const shown = describePostgresUrl('postgres://lnb:s3cret@db.example:5433/backups?sslmode=require&password=other');
        assert.equal(shown, 'postgres://lnb@db.example:5433/backups');
      });
    }

    if (h.kind === 'files') {
      test("the file store's vault folder is a vault the node's VaultReader reads with the key", async (t) => {
        const spec = await h.fresh(t);
        if (!spec) return;
        const { store } = await openWithNotices(spec);
        const node = new NodeVault(4096);
        const all: StoreRecord[] = [];
        try {
          await store.createVault(node.owner, node.vaultId, node.identity);
          for (let i = 0; i < 10; i++) {
            const recs = node.next(8, 1500);
            await store.append(node.vaultId, recs);
            all.push(...recs);
          }
        } finally {
          await store.close();
        }
        const dir = vaultDirOf(spec, node);
        assert.ok(fs.readFileSync(path.join(dir, IDENTITY_FILE)).equals(node.identity), 'VAULT.json is the bytes the node sent');
        const reader = new VaultReader(readIdentity(dir), node.keys, dir);
        const read = [...reader.records()];
        assert.equal(reader.tornTail, null);
        assert.equal(read.length, all.length);
        for (const [i, r] of read.entries()) {
          assert.equal(r.seq, all[i].seq);
          assert.ok(r.body.payload.length >= 0);
        }
        // And the keyless reader agrees, from any point.
        assertSameRecords(readRawRecords(dir, 1n, 1 << 30), all);
        assertSameRecords(readRawRecords(dir, 41n, 1 << 30), all.slice(40));
      });

      test('disk full (a real 2 MiB tmpfs): the append fails as storage unavailable, acknowledged records stay, and appends succeed once space is freed', async (t) => {
        const root = tempDir('store-diskfull');
        const mountPoint = path.join(root, 'small-disk');
        fs.mkdirSync(mountPoint);
        const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountPoint], { encoding: 'utf8' });
        if (mounted.status !== 0) {
          t.skip(`cannot mount a small tmpfs here (${(mounted.stderr || String(mounted.error)).trim()}); run as root`);
          return;
        }
        try {
          const spec = { dataDir: path.join(mountPoint, 'data') };
          const filler = path.join(mountPoint, 'filler');
          fs.writeFileSync(filler, Buffer.alloc(1536 * 1024));
          const { store } = await openWithNotices(spec);
          const node = new NodeVault(64 * 1024);
          const acked: StoreRecord[] = [];
          let failure: unknown = null;
          try {
            await store.createVault(node.owner, node.vaultId, node.identity);
            // Windows of pipelined appends until one fails.
            while (failure === null) {
              const batches = Array.from({ length: 8 }, () => node.next(3, 4000));
              const results = await Promise.allSettled(batches.map((b) => store.append(node.vaultId, b)));
              let sawFailure = false;
              for (const [i, r] of results.entries()) {
                if (r.status === 'fulfilled') {
                  assert.equal(sawFailure, false, 'no append succeeds after an earlier one of the same vault failed');
                  acked.push(...batches[i]);
                } else {
                  sawFailure = true;
                  failure ??= r.reason;
                  assert.ok(r.reason instanceof StorageUnavailableError, String(r.reason));
                }
              }
              assert.ok(acked.length < 10_000, 'the disk never filled up');
            }
            assert.ok(failure instanceof StorageUnavailableError);
            assert.match(failure.message, /the server's disk is full \(ENOSPC\) at /);
            assert.ok(acked.length > 20, `some records fitted first (${acked.length})`);
            const v = await store.getVault(node.vaultId);
            assert.ok(v);
            assert.equal(v.lastSeq, acked[acked.length - 1].seq);
            assert.equal(v.bytes, totalBytes(acked));
            assertSameRecords(await readAll(store, node.vaultId), acked);
            const onDisk = listSegments(vaultDirOf(spec, node)).reduce((n, s) => n + fs.statSync(s.path).size, 0);
            assert.equal(onDisk, totalBytes(acked), 'the bytes that were not made durable were cut');
            // Still full: still refused, nothing changes.
            node.resumeFrom(v.lastSeq, v.lastHash);
            await assert.rejects(store.append(node.vaultId, node.next(1, 600_000, 500_000)), /disk is full/);
            // The operator frees space: appends go on from the durable tail.
            fs.rmSync(filler);
            node.resumeFrom(v.lastSeq, v.lastHash);
            const more = node.next(20, 4000);
            await store.append(node.vaultId, more);
            acked.push(...more);
            assertSameRecords(await readAll(store, node.vaultId), acked);
            verifyChain(acked, node);
          } finally {
            await store.close();
          }
          const reader = new VaultReader(readIdentity(vaultDirOf(spec, node)), node.keys, vaultDirOf(spec, node));
          assert.equal([...reader.records()].length, acked.length);
          assert.equal(reader.tornTail, null);
        } finally {
          spawnSync('umount', ['-l', mountPoint]);
        }
      });

      test('a torn tail is cut at open, with a notice; damage before the end is reported and left alone', async (t) => {
        const spec = await h.fresh(t);
        if (!spec) return;
        const node = new NodeVault(1 << 20);
        const all = node.next(5);
        {
          const { store } = await openWithNotices(spec);
          await store.createVault(node.owner, node.vaultId, node.identity);
          await store.append(node.vaultId, all);
          await store.close();
        }
        const dir = vaultDirOf(spec, node);
        const segment = listSegments(dir)[0].path;
        const sizeBefore = fs.statSync(segment).size;
        const torn = [
          { what: 'a partial header', bytes: node.next(1)[0].bytes.subarray(0, 30) },
          { what: 'a header and part of the body', bytes: node.next(1)[0].bytes.subarray(0, 100) },
          { what: 'a zero-filled remainder', bytes: Buffer.alloc(300) },
        ];
        for (const tt of torn) {
          fs.appendFileSync(segment, tt.bytes);
          const { store, notices } = await openWithNotices(spec);
          try {
            assert.equal(notices.length, 1, `${tt.what}: ${JSON.stringify(notices)}`);
            assert.match(notices[0], new RegExp(`vault ${node.vaultId}: cut off a torn record \\(${tt.bytes.length} bytes at .*:${sizeBefore}\\)`));
            assert.equal(fs.statSync(segment).size, sizeBefore, tt.what);
            assert.equal((await store.getVault(node.vaultId))?.lastSeq, 5n);
            assertSameRecords(await readAll(store, node.vaultId), all);
          } finally {
            await store.close();
          }
          node.resumeFrom(5n, recordHash(all[4].bytes.subarray(0, HEADER_BYTES), all[4].bytes.subarray(HEADER_BYTES)));
        }
        // Appends go on after the cut.
        {
          const { store, notices } = await openWithNotices(spec);
          assert.deepEqual(notices, []);
          const more = node.next(2);
          await store.append(node.vaultId, more);
          all.push(...more);
          await store.close();
        }
        const reader = new VaultReader(readIdentity(dir), node.keys, dir);
        assert.equal([...reader.records()].length, 7);
        // Damage in the middle (a header's magic) is not a torn tail: the vault is skipped, not cut.
        const data = fs.readFileSync(segment);
        const third = all[0].bytes.length + all[1].bytes.length;
        data[third] ^= 0xff;
        fs.writeFileSync(segment, data);
        // Without the tail's mirror, which would repair this at open (test/redundancy.test.ts).
        fs.rmSync(segment + '.mirror', { force: true });
        const { store, notices } = await openWithNotices(spec);
        try {
          assert.equal(await store.getVault(node.vaultId), null);
          assert.equal(notices.length, 1);
          assert.match(notices[0], new RegExp(`skipped vault ${node.vaultId} .*this is damage, not a torn tail`));
          assert.equal(fs.statSync(segment).size, data.length, 'nothing was cut');
          await assert.rejects(store.createVault(node.owner, node.vaultId, node.identity), /already exists but is not a usable vault/);
        } finally {
          await store.close();
        }
      });

      test('broken entries under vaults/ are reported and skipped; an interrupted creation is removed', async (t) => {
        const spec = await h.fresh(t);
        if (!spec) return;
        const good = new NodeVault();
        {
          const { store } = await openWithNotices(spec);
          await store.createVault(good.owner, good.vaultId, good.identity);
          await store.append(good.vaultId, good.next(3));
          await store.close();
        }
        const vaults = path.join(spec.dataDir, 'vaults');
        const noOwner = crypto.randomBytes(16).toString('hex');
        fs.mkdirSync(path.join(vaults, noOwner));
        fs.writeFileSync(path.join(vaults, noOwner, IDENTITY_FILE), good.identity);
        const badOwner = crypto.randomBytes(16).toString('hex');
        fs.mkdirSync(path.join(vaults, badOwner));
        fs.writeFileSync(path.join(vaults, badOwner, IDENTITY_FILE), good.identity);
        fs.writeFileSync(path.join(vaults, badOwner, 'owner'), 'someone\n');
        fs.writeFileSync(path.join(vaults, 'README'), 'not a vault');
        fs.mkdirSync(path.join(vaults, `.new-${crypto.randomBytes(16).toString('hex')}`));
        const { store, notices } = await openWithNotices(spec);
        try {
          assert.equal(notices.length, 4, JSON.stringify(notices));
          assert.ok(notices.some((m) => m.includes(`skipped vault ${noOwner}`) && /owner file is missing/.test(m)));
          assert.ok(notices.some((m) => m.includes(`skipped vault ${badOwner}`) && /does not hold an owner key/.test(m)));
          assert.ok(notices.some((m) => /README: not a vault folder/.test(m)));
          assert.ok(notices.some((m) => /creation was interrupted/.test(m)));
          assert.deepEqual(
            (await store.listVaults()).map((v) => v.vaultId),
            [good.vaultId],
          );
          assert.equal((await store.getVault(good.vaultId))?.lastSeq, 3n);
        } finally {
          await store.close();
        }
      });

      test("the data folder is locked: a second server is refused; a dead server's lock is taken over", async (t) => {
        const spec = await h.fresh(t);
        if (!spec) return;
        const first = await FileStore.open(spec.dataDir);
        try {
          await assert.rejects(FileStore.open(spec.dataDir), /in use by another lnbackup server \(pid \d+/);
        } finally {
          await first.close();
        }
        const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
        fs.writeFileSync(path.join(spec.dataDir, 'LOCK'), JSON.stringify({ pid: Number(dead.stdout), host: os.hostname(), since: 'earlier' }));
        const again = await FileStore.open(spec.dataDir);
        await again.close();
        assert.equal(fs.existsSync(path.join(spec.dataDir, 'LOCK')), false, 'the lock is released at close');
      });

      test('openStore: a postgres URL opens PostgreSQL, nothing opens files, anything else is refused', async () => {
        const dataDir = path.join(tempDir('store-open'), 'data');
        const s = await openStore({ dataDir });
        assert.equal(s.kind, 'files');
        assert.equal(s.location, path.resolve(dataDir));
        await s.close();
        await assert.rejects(openStore({ dataDir, storage: 'mysql://x@y/z' }), /not understood/);
      });
    }

    // -- page packs and retention --------------------------------------------------------------

    test('page packs: put, list, read in pieces, delete; the same pack again is fine, other bytes are a conflict', async (t) => {
      await withFreshStore(h, t, async (store, spec) => {
        const node = new NodeVault();
        await store.createVault(node.owner, node.vaultId, node.identity);
        const sizes = [1, 3 * 1024 * 1024 + 17, 70_000];
        const packs = [randomPackName(), randomPackName(), randomPackName()].sort().map((name, i) => ({ name, bytes: crypto.randomBytes(sizes[i]) }));
        for (const p of packs) assert.equal(await store.putPack(node.vaultId, p.name, p.bytes), true, 'stored');
        assert.deepEqual(
          await store.listPacks(node.vaultId),
          packs.map((p) => ({ name: p.name, bytes: p.bytes.length })),
        );
        for (const p of packs) assertSamePack(await readWholePack(store, node.vaultId, p.name, 1 << 20), p.bytes);
        const mid = await store.readPack(node.vaultId, packs[1].name, 1000, 10);
        assert.ok(mid?.bytes.equals(packs[1].bytes.subarray(1000, 1010)), 'a piece from the middle');
        assert.equal(mid?.totalBytes, packs[1].bytes.length);
        assert.equal((await store.readPack(node.vaultId, packs[0].name, 5, 10))?.bytes.length, 0, 'nothing past the end');
        assert.equal(await store.readPack(node.vaultId, randomPackName(), 0, 10), null, 'an absent pack');
        // The same pack again: nothing changes; other bytes under that name: refused, nothing changes.
        assert.equal(await store.putPack(node.vaultId, packs[1].name, Buffer.from(packs[1].bytes)), false);
        const flipped = Buffer.from(packs[1].bytes);
        flipped[100] ^= 1;
        await assert.rejects(store.putPack(node.vaultId, packs[1].name, flipped), PackConflictError);
        await assert.rejects(store.putPack(node.vaultId, packs[2].name, crypto.randomBytes(5)), PackConflictError);
        assertSamePack(await readWholePack(store, node.vaultId, packs[1].name, 1 << 30), packs[1].bytes);
        await assert.rejects(store.putPack(node.vaultId, '../p-00000000000000000000000000000000.pack', Buffer.alloc(1)), /not a pack name/);
        await assert.rejects(store.putPack(crypto.randomBytes(16).toString('hex'), randomPackName(), Buffer.alloc(1)), /no vault/);
        const total = packs.reduce((n, p) => n + p.bytes.length, 0);
        let v = await store.getVault(node.vaultId);
        assert.equal(v?.packBytes, total);
        assert.equal(v?.bytes, 0, 'packs are not record bytes');
        // Deletes: absent names are ignored; the bytes freed are counted.
        assert.equal(await store.deletePacks(node.vaultId, [packs[0].name, packs[1].name, randomPackName()]), packs[0].bytes.length + packs[1].bytes.length);
        assert.deepEqual(await store.listPacks(node.vaultId), [{ name: packs[2].name, bytes: packs[2].bytes.length }]);
        assert.equal(await store.readPack(node.vaultId, packs[1].name, 0, 10), null);
        assert.equal(await store.deletePacks(node.vaultId, [packs[0].name]), 0, 'deleting again frees nothing');
        v = await store.getVault(node.vaultId);
        assert.equal(v?.packBytes, packs[2].bytes.length);
        // Concurrent puts of one pack: one stores it, every one succeeds.
        const dup = { name: randomPackName(), bytes: crypto.randomBytes(200_000) };
        const results = await Promise.all([1, 2, 3].map(() => store.putPack(node.vaultId, dup.name, dup.bytes)));
        assert.deepEqual([...results].sort(), [false, false, true]);
        assert.equal((await store.getVault(node.vaultId))?.packBytes, packs[2].bytes.length + dup.bytes.length);
        // Another vault's packs are its own.
        const other = new NodeVault(4096, node.owner);
        await store.createVault(other.owner, other.vaultId, other.identity);
        assert.deepEqual(await store.listPacks(other.vaultId), []);
        assert.equal(await store.readPack(other.vaultId, dup.name, 0, 10), null);
        assert.equal(await store.deletePacks(other.vaultId, [dup.name]), 0);
        assert.equal((await store.listPacks(node.vaultId)).length, 2);
        if (h.kind === 'files') {
          // Sidecars (parity) aside: only the whole packs, no temporary file.
          const pages = fs
            .readdirSync(path.join(vaultDirOf(spec, node), 'pages'))
            .filter((n) => !n.endsWith('.parity'))
            .sort();
          assert.deepEqual(pages, [packs[2].name, dup.name].sort(), 'only whole packs in pages/, no temporary file');
        }
      });
    });

    test('prune removes whole old generations, never the newest; firstSeq moves; appends go on, also during a prune; it survives a reopen', async (t) => {
      const spec = await h.fresh(t);
      if (!spec) return;
      const node = new NodeVault(4096);
      let { store } = await openWithNotices(spec);
      try {
        await store.createVault(node.owner, node.vaultId, node.identity);
        const gens: StoreRecord[][] = [[]];
        for (let g = 1; g <= 3; g++) {
          node.generation = g;
          const recs = node.next(30, 1500);
          await store.append(node.vaultId, recs);
          gens.push(recs);
        }
        const pack = { name: randomPackName(), bytes: crypto.randomBytes(10_000) };
        await store.putPack(node.vaultId, pack.name, pack.bytes);
        const before = await store.getVault(node.vaultId);
        assert.ok(before);
        let v = await store.prune(node.vaultId, 1);
        assert.equal(v.removedBytes, 0, 'nothing is below generation 1');
        assert.equal(v.firstSeq, 1n);
        v = await store.prune(node.vaultId, 3);
        assert.equal(v.firstSeq, gens[3][0].seq, 'the first record kept is the first of generation 3');
        assert.equal(v.removedBytes, totalBytes(gens[1]) + totalBytes(gens[2]));
        assert.equal(v.bytes, totalBytes(gens[3]));
        assert.equal(v.lastSeq, before.lastSeq);
        assert.ok(v.lastHash?.equals(before.lastHash!));
        assert.equal(v.lastGeneration, 3);
        assert.equal(v.packBytes, pack.bytes.length, 'packs are not touched by a prune');
        assert.deepEqual(await store.getVault(node.vaultId), { ...before, firstSeq: v.firstSeq, bytes: v.bytes });
        assertSameRecords(await readAll(store, node.vaultId), gens[3]);
        assertSameRecords(await store.readRecords(node.vaultId, 5n, 1 << 30), gens[3], 'a read from a removed record starts at the first kept one');
        // The newest generation is never removed, whatever is asked; pruning again changes nothing.
        v = await store.prune(node.vaultId, 1000);
        assert.equal(v.removedBytes, 0);
        assert.equal(v.firstSeq, gens[3][0].seq);
        assertSameRecords(await readAll(store, node.vaultId), gens[3]);

        // A prune among pipelined appends: it runs between two rounds, every append stays in order.
        node.generation = 4;
        const g4a = node.next(10);
        await store.append(node.vaultId, g4a);
        const g4b = node.next(40, 800);
        const g4c = node.next(40, 800);
        const appends = g4b.map((r) => store.append(node.vaultId, [r]));
        const pruning = store.prune(node.vaultId, 4);
        appends.push(...g4c.map((r) => store.append(node.vaultId, [r])));
        await Promise.all(appends);
        v = await pruning;
        assert.equal(v.firstSeq, g4a[0].seq);
        assert.equal(v.removedBytes, totalBytes(gens[3]));
        const expected = [...g4a, ...g4b, ...g4c];
        const now = await store.getVault(node.vaultId);
        assert.equal(now?.firstSeq, g4a[0].seq);
        assert.equal(now?.lastSeq, g4c[g4c.length - 1].seq);
        assert.equal(now?.bytes, totalBytes(expected), 'the bytes count the kept records and every append');
        assertSameRecords(await readAll(store, node.vaultId), expected);
        if (h.kind === 'files') {
          const segments = listSegments(vaultDirOf(spec, node));
          assert.ok(
            segments.every((s) => s.generation >= 4),
            'no segment file of a removed generation is left',
          );
          assert.equal(
            segments.reduce((n, s) => n + fs.statSync(s.path).size, 0),
            totalBytes(expected),
          );
          assert.equal(fs.existsSync(path.join(vaultDirOf(spec, node), 'segments', 'prune-below')), false);
        }
        const state = await store.getVault(node.vaultId);
        await store.close();

        ({ store } = await openWithNotices(spec));
        const reopened = await store.getVault(node.vaultId);
        assert.deepEqual({ ...reopened, lastWriteAt: null }, { ...state, lastWriteAt: null }, 'the same vault after a reopen');
        assertSameRecords(await readAll(store, node.vaultId), expected);
        assert.deepEqual(await store.listPacks(node.vaultId), [{ name: pack.name, bytes: pack.bytes.length }]);
        // It goes on from there.
        node.generation = 5;
        const g5 = node.next(5);
        await store.append(node.vaultId, g5);
        assertSameRecords(await readAll(store, node.vaultId), [...expected, ...g5]);
        assert.equal((await store.prune(node.vaultId, 5)).firstSeq, g5[0].seq);
        assert.equal((await store.getVault(node.vaultId))?.bytes, totalBytes(g5));
      } finally {
        await store.close();
      }
    });

    test('crash safety: a pack writer killed by SIGKILL at random moments leaves each pack whole or absent', async (t) => {
      const spec = await h.fresh(t);
      if (!spec) return;
      const node = new NodeVault();
      {
        const { store } = await openWithNotices(spec);
        await store.createVault(node.owner, node.vaultId, node.identity);
        await store.close();
      }
      const seed = Date.now() >>> 0;
      const prng = new Prng(seed);
      t.diagnostic(`seed ${seed}`);
      const maxBytes = 6 * 1024 * 1024;
      const acked = new Set<string>();
      let partialSeen = 0;
      for (let round = 0; round < 6; round++) {
        const writerSpec: PackWriterSpec = { ...spec, vaultId: node.vaultId, maxBytes };
        const child = spawn(process.execPath, [packWriterEntry, JSON.stringify(writerSpec)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
          child.on('exit', (code, signal) => resolve({ code, signal })),
        );
        const lines = readline.createInterface({ input: child.stdout });
        const linesDone = new Promise<void>((r) => lines.once('close', () => r()));
        const killAfterMs = prng.int(5, 500);
        lines.on('line', (line) => {
          if (line === 'start') {
            setTimeout(() => child.kill('SIGKILL'), killAfterMs);
            return;
          }
          acked.add(line);
        });
        const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
        const how = await exited;
        clearTimeout(timer);
        await linesDone;
        assert.equal(how.signal, 'SIGKILL', `the writer ended by itself (${how.code}): ${stderr}`);
        if (h.kind === 'files') {
          const pages = path.join(vaultDirOf(spec, node), 'pages');
          if (fs.existsSync(pages)) partialSeen += fs.readdirSync(pages).filter((n) => n.includes('.tmp-')).length;
        }
        // The killed writer's last INSERT may still commit on the server: let it end first.
        if (spec.storage) await waitForOtherSessions(spec.storage);
        const { store } = await openWithNotices(spec);
        try {
          const listed = await store.listPacks(node.vaultId);
          const names = new Set(listed.map((p) => p.name));
          for (const name of acked) assert.ok(names.has(name), `round ${round}: acknowledged pack ${name} is present`);
          for (const p of listed) {
            const want = packContents(p.name, maxBytes);
            assert.equal(p.bytes, want.length, `round ${round}: pack ${p.name} is whole`);
            assertSamePack(await readWholePack(store, node.vaultId, p.name, 4 << 20), want);
          }
          assert.equal(
            (await store.getVault(node.vaultId))?.packBytes,
            listed.reduce((n, p) => n + p.bytes, 0),
          );
          if (h.kind === 'files') {
            const pages = path.join(vaultDirOf(spec, node), 'pages');
            const sidecar = (n: string): boolean => n.endsWith('.parity') && names.has(n.slice(0, -'.parity'.length));
            const left: string[] = fs.existsSync(pages) ? fs.readdirSync(pages).filter((n: string) => !names.has(n) && !sidecar(n)) : [];
            assert.deepEqual(left, [], 'temporary files of a killed writer are removed at open');
          }
        } finally {
          await store.close();
        }
      }
      t.diagnostic(`${acked.size} packs acknowledged over 6 kills; ${partialSeen} half-written temporary file(s) found after a kill`);
      assert.ok(acked.size > 0, 'some packs were acknowledged');
    });

    if (h.kind === 'files') {
      test('a prune interrupted by a crash (its marker written, nothing removed yet) is finished at open', async (t) => {
        const spec = await h.fresh(t);
        if (!spec) return;
        const node = new NodeVault(4096);
        const gens: StoreRecord[][] = [[]];
        {
          const { store } = await openWithNotices(spec);
          await store.createVault(node.owner, node.vaultId, node.identity);
          for (let g = 1; g <= 3; g++) {
            node.generation = g;
            const recs = node.next(20, 1500);
            await store.append(node.vaultId, recs);
            gens.push(recs);
          }
          await store.close();
        }
        const dir = vaultDirOf(spec, node);
        fs.writeFileSync(path.join(dir, 'segments', 'prune-below'), '3\n');
        const { store, notices } = await openWithNotices(spec);
        try {
          assert.equal(notices.length, 1, JSON.stringify(notices));
          assert.match(notices[0], /finished removing the generations below 3/);
          const v = await store.getVault(node.vaultId);
          assert.equal(v?.firstSeq, gens[3][0].seq);
          assert.equal(v?.bytes, totalBytes(gens[3]));
          assertSameRecords(await readAll(store, node.vaultId), gens[3]);
          assert.ok(listSegments(dir).every((s) => s.generation === 3));
          assert.equal(fs.existsSync(path.join(dir, 'segments', 'prune-below')), false);
        } finally {
          await store.close();
        }
      });
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The batcher's failure handling, with a scripted store (the failures real storage makes rarely).

/** Keeps records in memory; each round does what `script` says (default: store and succeed). */
class ScriptedBackend implements RoundBackend {
  readonly stored = new Map<string, StoreRecord[]>();
  script: ((round: ReadonlyMap<string, readonly StoreRecord[]>) => 'ok' | 'lost-answer' | 'down' | Map<string, Error>) | null = null;
  recoverDown = false;
  /** While set, a round waits for it (a slow fsync or commit). */
  gate: Promise<void> | null = null;
  rounds = 0;

  async commitRound(round: ReadonlyMap<string, readonly StoreRecord[]>): Promise<ReadonlyMap<string, Error>> {
    this.rounds++;
    if (this.gate) await this.gate;
    const what = this.script?.(round) ?? 'ok';
    if (what === 'down') throw new Error('connection refused');
    const failures = what instanceof Map ? what : new Map<string, Error>();
    for (const [v, records] of round) {
      if (failures.has(v)) continue;
      this.stored.set(v, [...(this.stored.get(v) ?? []), ...records]);
    }
    // Stored, but the answer never arrived.
    if (what === 'lost-answer') throw new Error('connection terminated unexpectedly');
    return failures;
  }

  async recover(ids: readonly string[]): Promise<ReadonlyMap<string, VaultTail | Error>> {
    if (this.recoverDown) throw new Error('still down');
    return new Map(ids.map((v) => [v, advanceTail(EMPTY_TAIL, this.stored.get(v) ?? [], 1)]));
  }

  unavailable(err: unknown): StorageUnavailableError {
    return new StorageUnavailableError(`scripted storage: ${(err as Error).message}`);
  }
}

describe('group commit failure handling (scripted store)', () => {
  const vault = (n: NodeVault) => ({ vaultId: n.vaultId, owner: n.owner, identity: n.identity });

  test('a commit whose answer was lost: the appends fail, the vault is found further on, and appends go on from there', async () => {
    const backend = new ScriptedBackend();
    const gc = new GroupCommit(backend);
    const node = new NodeVault();
    gc.addVault(vault(node), EMPTY_TAIL);
    const first = node.next(3);
    await gc.append(node.vaultId, first);
    // Records 4 and 5 are stored, but the answer is lost; record 6 was queued behind them meanwhile.
    let open = (): void => undefined;
    backend.gate = new Promise<void>((r) => (open = r));
    backend.script = () => 'lost-answer';
    const lost = node.next(2);
    const roundsBefore = backend.rounds;
    const pLost = gc.append(node.vaultId, lost);
    const settled = [Promise.allSettled([pLost])];
    while (backend.rounds === roundsBefore) await new Promise((r) => setImmediate(r));
    const queuedAfter = node.next(1);
    settled.push(Promise.allSettled([gc.append(node.vaultId, queuedAfter)]));
    backend.gate = null;
    open();
    const results = (await Promise.all(settled)).flat();
    for (const r of results) assert.ok(r.status === 'rejected' && r.reason instanceof StorageUnavailableError, String(r));
    backend.script = null;
    assert.equal(gc.vault(node.vaultId)?.lastSeq, 3n, 'what the batcher knows to be durable');
    // The client goes on from there; the store learns that records 4 and 5 were stored after all.
    node.resumeFrom(3n, recordHash(first[2].bytes.subarray(0, HEADER_BYTES), first[2].bytes.subarray(HEADER_BYTES)));
    await assert.rejects(gc.append(node.vaultId, node.next(1)), (e: unknown) => e instanceof AppendRefusedError && /now ends at record 5/.test(e.message));
    const v = gc.vault(node.vaultId);
    assert.equal(v?.lastSeq, 5n);
    assert.ok(v?.lastHash?.equals(recordHash(lost[1].bytes.subarray(0, HEADER_BYTES), lost[1].bytes.subarray(HEADER_BYTES))));
    node.resumeFrom(5n, v.lastHash);
    const next = node.next(2);
    await gc.append(node.vaultId, next);
    assertSameRecords(backend.stored.get(node.vaultId) ?? [], [...first, ...lost, ...next]);
    assert.equal(gc.vault(node.vaultId)?.lastSeq, 7n);
    await gc.close();
  });

  test("one vault's failure fails its pending appends only; the others in the round are durable", async () => {
    const backend = new ScriptedBackend();
    const gc = new GroupCommit(backend);
    const a = new NodeVault();
    const b = new NodeVault();
    gc.addVault(vault(a), EMPTY_TAIL);
    gc.addVault(vault(b), EMPTY_TAIL);
    await gc.append(a.vaultId, a.next(2));
    await gc.append(b.vaultId, b.next(2));
    let rounds = 0;
    backend.script = () => (++rounds === 1 ? new Map([[a.vaultId, Object.assign(new Error('no space left on device'), { code: 'ENOSPC' })]]) : 'ok');
    let open = (): void => undefined;
    backend.gate = new Promise<void>((r) => (open = r));
    const roundsBefore = backend.rounds;
    const first = Promise.allSettled([gc.append(a.vaultId, a.next(1)), gc.append(b.vaultId, b.next(1))]);
    // Queued while the first round is in flight: pa2 continues pa1, so it fails with it.
    while (backend.rounds === roundsBefore) await new Promise((r) => setImmediate(r));
    const second = Promise.allSettled([gc.append(a.vaultId, a.next(1)), gc.append(b.vaultId, b.next(1))]);
    backend.gate = null;
    open();
    const [[ra1, rb1], [ra2, rb2]] = await Promise.all([first, second]);
    assert.ok(ra1.status === 'rejected' && ra1.reason instanceof StorageUnavailableError && /no space left/.test(ra1.reason.message));
    assert.ok(ra2.status === 'rejected' && ra2.reason instanceof StorageUnavailableError, 'the later pending append of the failed vault');
    assert.equal(rb1.status, 'fulfilled');
    assert.equal(rb2.status, 'fulfilled');
    assert.equal(gc.vault(a.vaultId)?.lastSeq, 2n);
    assert.equal(gc.vault(b.vaultId)?.lastSeq, 4n);
    // The failed vault takes appends from its durable tail again.
    const stored = backend.stored.get(a.vaultId) ?? [];
    const last = stored[stored.length - 1].bytes;
    a.resumeFrom(2n, recordHash(last.subarray(0, HEADER_BYTES), last.subarray(HEADER_BYTES)));
    await gc.append(a.vaultId, a.next(1));
    assert.equal(gc.vault(a.vaultId)?.lastSeq, 3n);
    assert.ok(gc.stats.failedRounds >= 1);
    await gc.close();
    await assert.rejects(gc.append(a.vaultId, a.next(1)), /closed/);
  });

  test('while the storage stays down, appends keep failing as unavailable; once it is back they succeed', async () => {
    const backend = new ScriptedBackend();
    const gc = new GroupCommit(backend);
    const node = new NodeVault();
    gc.addVault(vault(node), EMPTY_TAIL);
    backend.script = () => 'down';
    const recs = node.next(2);
    await assert.rejects(gc.append(node.vaultId, recs), /scripted storage: connection refused/);
    backend.script = null;
    backend.recoverDown = true;
    await assert.rejects(gc.append(node.vaultId, recs), /scripted storage: still down/);
    backend.recoverDown = false;
    await gc.append(node.vaultId, recs);
    assertSameRecords(backend.stored.get(node.vaultId) ?? [], recs);
    await gc.close();
  });
});

function vaultDirOf(spec: StoreSpec, node: NodeVault): string {
  return path.join(spec.dataDir, 'vaults', node.vaultId);
}
