// A hostile lnbackup server (guarantee 4: untrusted storage can change nothing unnoticed). Real
// vaults built by the real Journal from recorded traces are uploaded to a real in-process
// BackupServer whose store is a HostileStore (test/helpers/hostileStore.ts): it then drops,
// reorders, replays, alters and substitutes records, lies in VaultState, acknowledges without
// storing, or is not the pinned server at all. On the restore side (download + restore/verify,
// and the CLI's --from) every lie must be refused with a message naming the record and what is
// wrong, and nothing wrong restored; on the node side (RemoteDestination, NodeBackup) every lie
// must be noticed before it can cost a record. What the server alone can NOT be caught at is
// shown too: a tail cut cleanly at a record boundary (or a whole newest generation hidden) looks
// like an older vault, and is restored as one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Journal } from '../src/journal/journal.js';
import { readConfig } from '../src/cln/config.js';
import { NodeBackup } from '../src/cln/backup/nodeBackup.js';
import { DestinationFailedError } from '../src/destinations/destination.js';
import type { RemoteDestination } from '../src/destinations/remote.js';
import { formatRemoteUrl } from '../src/destinations/remoteUrl.js';
import { ServerClient } from '../src/destinations/serverClient.js';
import { downloadDir, downloadVault, pushVault, vaultTail } from '../src/destinations/transfer.js';
import { restoreDatabase, type RestoreResult } from '../src/restore/rebuild.js';
import { verifyVault, type VerifyReport } from '../src/restore/verify.js';
import type { StoreRecord, StoredVault } from '../src/server/storage/store.js';
import { generatePrivateKey, publicKeyOf } from '../src/transport/keys.js';
import { createIdentity, identityPath } from '../src/vault/identity.js';
import { rawRecordHash, readRawRecords } from '../src/vault/rawRecords.js';
import { decodeHeader, HEADER_BYTES, RecordType } from '../src/vault/format.js';
import { openRecord } from '../src/vault/record.js';
import { bumpedFrom } from '../src/journal/dataVersion.js';
import { RecordSealer } from '../src/vault/sealer.js';
import { listSegments } from '../src/vault/segments.js';
import { decodeCall, encodeWrites, isCallRecord } from '../src/journal/payloads.js';
import { readTraceFile } from '../src/simulator/trace.js';
import { dropNewest, dropRecord, flipBit, relabelGeneration, replaceRecord, replayRecord, swapRecords, type HostileStore } from './helpers/hostileStore.js';
import { startHostileServer, type HostileServer } from './helpers/inProcessServer.js';
import { cliEntry, tracePath } from './helpers/paths.js';
import { folderMaker, remoteFor, type Notice } from './helpers/remoteFixture.js';
import { callsOf, dumpFile, dumpOf, effectiveWrites, isTransaction, node3Calls, plainReplay } from './helpers/reference.js';
import { recordCall } from './helpers/storedCalls.js';
import { makeNode, type VaultNode } from './helpers/testNode.js';
import { feedNode } from './helpers/vaultFixture.js';
import { sleep, until } from './helpers/waiting.js';

const freshDir = folderMaker('hostile');

// -- fixtures -------------------------------------------------------------------------------------

interface Fixture {
  readonly node: VaultNode;
  /** The logical dump the restore must give (the node's database at the end). */
  readonly dump: string;
  /** data_version of the newest record. */
  readonly version: number;
  readonly lastSeq: bigint;
}

let nodeA: Fixture | null = null;

/** Node A: node3's whole recorded history (rewinds included) in one generation, 16 KiB segments. */
function fixtureA(): Fixture {
  if (nodeA) return nodeA;
  const node = makeNode('hostile-a', { segmentBytes: 16 * 1024 });
  const calls = node3Calls();
  feedNode(node, calls);
  const dump = dumpOf(plainReplay(effectiveWrites(calls)));
  const tail = vaultTail(node.vault, Buffer.from(node.vaultId, 'hex'));
  nodeA = { node, dump, version: calls[calls.length - 1].dataVersion, lastSeq: tail.lastSeq };
  return nodeA;
}

let nodeB: Fixture | null = null;

/** Node B: another node (its own hsm_secret, vault and server key) with a short history. */
function fixtureB(): Fixture {
  if (nodeB) return nodeB;
  const node = makeNode('hostile-b', { segmentBytes: 16 * 1024 });
  const calls = node3Calls().slice(0, 120);
  feedNode(node, calls);
  const tail = vaultTail(node.vault, Buffer.from(node.vaultId, 'hex'));
  nodeB = { node, dump: '', version: calls[calls.length - 1].dataVersion, lastSeq: tail.lastSeq };
  return nodeB;
}

interface TwoGenerations extends Fixture {
  /** First record of generation 2 (its SnapshotBegin). */
  readonly gen2FirstSeq: bigint;
  /** data_version generation 1 ends at. */
  readonly gen1Version: number;
}

let nodeG: TwoGenerations | null = null;

/**
 * Node G: node6's history with the plugin on its database as lightningd runs it (hook inside the
 * transaction, before COMMIT); the node ran ten calls without the plugin in the middle, so the
 * plugin took a snapshot and started generation 2.
 */
function fixtureG(): TwoGenerations {
  if (nodeG) return nodeG;
  const calls = callsOf(readTraceFile(tracePath('cln-v26.06-node6.jsonl.gz')));
  const node = makeNode('hostile-g', { segmentBytes: 4096 });
  const db = plainReplay([], node.dbPath);
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  let gen2FirstSeq = 0n;
  try {
    const hook = (i: number): void => {
      const c = calls[i];
      const tx = isTransaction(c.writes);
      if (tx) db.exec('BEGIN');
      for (const sql of c.writes) db.exec(sql);
      const out = journal.record(c.dataVersion, c.writes);
      assert.equal(out.kind, 'stored', `call ${i} (version ${c.dataVersion}) was not stored`);
      if (out.kind === 'stored' && out.snapshot !== null) gen2FirstSeq = out.records[0].seq;
      if (tx) db.exec('COMMIT');
    };
    for (let i = 0; i < 40; i++) hook(i);
    for (let i = 40; i < 50; i++) for (const sql of calls[i].writes) db.exec(sql); // without the plugin
    for (let i = 50; i < calls.length; i++) hook(i);
  } finally {
    journal.close();
    db.close();
  }
  assert.ok(gen2FirstSeq > 0n, 'the fixture has a second generation');
  const tail = vaultTail(node.vault, Buffer.from(node.vaultId, 'hex'));
  assert.equal(tail.generation, 2);
  nodeG = {
    node,
    dump: dumpFile(node.dbPath),
    version: calls[calls.length - 1].dataVersion,
    lastSeq: tail.lastSeq,
    gen2FirstSeq,
    gen1Version: calls[39].dataVersion,
  };
  return nodeG;
}

// -- helpers --------------------------------------------------------------------------------------

/** A hostile server holding the fixtures' vaults (uploaded honestly). */
async function serverWith(...fixtures: Fixture[]): Promise<HostileServer> {
  const srv = await startHostileServer(freshDir('srv'));
  try {
    for (const f of fixtures) {
      const pushed = await pushVault({ vaultDir: f.node.vault, url: srv.url, keys: f.node.keys });
      assert.equal(pushed.lastSeq, f.lastSeq);
    }
  } catch (err) {
    await srv.stop();
    throw err;
  }
  return srv;
}

async function withServer(fixtures: Fixture[], fn: (srv: HostileServer) => Promise<void>): Promise<void> {
  const srv = await serverWith(...fixtures);
  try {
    await fn(srv);
  } finally {
    await srv.stop();
  }
}

/** Downloads the vault from the server and restores it into `to`, as `lnbackup restore --from` does. */
function restoreFrom(srv: HostileServer, f: Fixture, to: string, force = false): Promise<RestoreResult> {
  return downloadDir({ url: srv.url, keys: f.node.keys }, (dir) => restoreDatabase({ vaultDir: dir, keys: f.node.keys, to, force }));
}

/** Downloads the vault from the server and verifies it, as `lnbackup verify --from` does. */
function verifyFrom(srv: HostileServer, f: Fixture): Promise<VerifyReport> {
  return downloadDir({ url: srv.url, keys: f.node.keys }, (dir) => verifyVault(dir, f.node.keys));
}

/** A restore target in a folder of its own (nothing there yet). */
function target(): { dir: string; to: string } {
  const dir = freshDir('target');
  return { dir, to: path.join(dir, 'lightningd.sqlite3') };
}

/**
 * The lie must stop both restore and verify with `why` (which names the record): the restore
 * writes nothing at all into the target's folder, verify either throws the same or reports a bad
 * record. Returns the restore's error message.
 */
async function refused(srv: HostileServer, f: Fixture, why: RegExp): Promise<string> {
  const t = target();
  let message = '';
  await assert.rejects(restoreFrom(srv, f, t.to), (err: Error) => {
    message = err.message;
    assert.match(err.message, why);
    return true;
  });
  assert.deepEqual(fs.readdirSync(t.dir), [], 'nothing was written where the database goes');
  return message;
}

/** The whole truth the real store holds for a vault. */
function truth(store: HostileStore, f: Fixture): Promise<StoreRecord[]> {
  return store.allRecords(f.node.vaultId);
}

/** What a server that lost its newest `n` records would say of the vault (a clean tail cut). */
function cutState(all: readonly StoreRecord[], n: number): (v: StoredVault) => StoredVault {
  const kept = all.slice(0, all.length - n);
  const last = kept[kept.length - 1];
  return (v) => ({
    ...v,
    lastSeq: last.seq,
    lastHash: rawRecordHash(last.bytes),
    lastGeneration: last.generation,
    bytes: kept.reduce((s, r) => s + r.bytes.length, 0),
  });
}

/** Runs the built `lnbackup` command without blocking this process (the server is in it). */
function cli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliEntry, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

function nodeRemote(node: VaultNode, url: string, notices: Notice[]): RemoteDestination {
  const vault = { dir: node.vault, identityBytes: fs.readFileSync(identityPath(node.vault)), vaultId: Buffer.from(node.vaultId, 'hex'), keys: node.keys };
  return remoteFor(vault, url, notices);
}

/**
 * Another record `n` of the node's vault, authentic and following record n-1: a fork, as a writer
 * that crashed before its ack and then wrote seq n again would make. It is the same call (same
 * data_version, same version bump, if any) with other statements.
 */
function forkAt(node: VaultNode, all: readonly StoreRecord[], n: bigint): StoreRecord {
  const vaultId = Buffer.from(node.vaultId, 'hex');
  const prev = all.find((r) => r.seq === n - 1n)!;
  const original = all.find((r) => r.seq === n)!;
  const headerBytes = original.bytes.subarray(0, HEADER_BYTES);
  const body = openRecord(node.keys.record, vaultId, decodeHeader(headerBytes), headerBytes, original.bytes.subarray(HEADER_BYTES));
  assert.ok(body !== null && isCallRecord(body.type), `record ${n} is a call record`);
  const writes = decodeCall(body).writes;
  const bump = bumpedFrom(writes) === null ? [] : [writes[writes.length - 1]];
  const sealer = new RecordSealer(node.keys.record, vaultId, { lastSeq: prev.seq, lastHash: rawRecordHash(prev.bytes), generation: prev.generation });
  const r = sealer.seal({ ...body, type: RecordType.Writes, payload: encodeWrites(["INSERT INTO vars (name, intval) VALUES ('forked', 1);", ...bump]) });
  return { seq: r.seq, generation: r.generation, bytes: r.bytes };
}

/** The bytes of every segment file of a vault, by name. */
function vaultBytes(dir: string): Map<string, string> {
  return new Map(listSegments(dir).map((s) => [s.name, crypto.createHash('sha256').update(fs.readFileSync(s.path)).digest('hex')]));
}

// -- the restore side -----------------------------------------------------------------------------

test('hostile: control: the honest server gives back the exact database, and verify passes', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    const report = await verifyFrom(srv, a);
    assert.equal(report.ok, true);
    assert.equal(BigInt(report.records), a.lastSeq);
    const t = target();
    const r = await restoreFrom(srv, a, t.to);
    assert.equal(r.version, a.version);
    assert.equal(dumpFile(t.to), a.dump);
    assert.equal(srv.store.liedReads, 0);
  });
});

test('hostile: a record dropped in the middle is refused by its number; nothing is restored', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    const n = a.lastSeq / 2n;
    srv.store.lie(a.node.vaultId, { records: dropRecord(n) });
    await refused(srv, a, new RegExp(`answered a read from record ${n} with record ${n + 1n}`));
    await assert.rejects(verifyFrom(srv, a), new RegExp(`record ${n} with record ${n + 1n}`));
    assert.ok(srv.store.liedReads > 0);
  });
});

test('hostile: the newest records withheld while VaultState still says where the vault ends: refused, naming the missing records', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    srv.store.lie(a.node.vaultId, { records: dropNewest(3) });
    await refused(srv, a, new RegExp(`ends at record ${a.lastSeq}, but sent records only up to ${a.lastSeq - 3n}`));
  });
});

test('hostile: LIMIT: a tail cut cleanly at a record boundary (records and VaultState) looks like an older vault and is restored as one', async () => {
  // What the chain cannot prove on its own (docs/FORMAT.md): nothing the node sealed says where its
  // history ends, so a server that forgets its newest records and says so consistently serves a
  // valid, older vault. The restore is consistent (the database at an older version), but OLD: a
  // server alone cannot be trusted to be current; compare with the node's own vault or a second
  // destination.
  const a = fixtureA();
  await withServer([a], async (srv) => {
    const all = await truth(srv.store, a);
    const k = 5;
    srv.store.lie(a.node.vaultId, { records: dropNewest(k), state: cutState(all, k) });
    const report = await verifyFrom(srv, a);
    assert.equal(report.ok, true, 'the shorter chain verifies');
    assert.equal(BigInt(report.records), a.lastSeq - BigInt(k));
    const t = target();
    const r = await restoreFrom(srv, a, t.to);
    assert.ok(r.version < a.version, `restored version ${r.version}, older than the node's ${a.version}`);
    assert.equal(r.inFlight, true, 'the cut tail makes a confirmed transaction look in flight');
    assert.equal(dumpFile(t.to), dumpOf(plainReplay(effectiveWrites(node3Calls(), r.version))), 'a consistent older database, not a mix');
    assert.notEqual(dumpFile(t.to), a.dump);
  });
});

test('hostile: two records swapped (under their own numbers, or relabelled) are refused by number', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    const n = a.lastSeq - 40n;
    srv.store.lie(a.node.vaultId, { records: swapRecords(n, n + 1n) });
    await refused(srv, a, new RegExp(`answered a read from record ${n} with record ${n + 1n}`));
    // The bytes swapped under the wire numbers: the header (authenticated) says which record it is.
    srv.store.lie(a.node.vaultId, { records: swapRecords(n, n + 1n, true) });
    await refused(srv, a, new RegExp(`record ${n}: its header says it is record ${n + 1n}`));
  });
});

test('hostile: an old record replayed in place of a newer one is refused by number', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    const n = a.lastSeq - 10n;
    const old = 7n;
    srv.store.lie(a.node.vaultId, { records: replayRecord(n, old) });
    await refused(srv, a, new RegExp(`answered a read from record ${n} with record ${old}`));
    srv.store.lie(a.node.vaultId, { records: replayRecord(n, old, true) });
    await refused(srv, a, new RegExp(`record ${n}: its header says it is record ${old}`));
  });
});

test('hostile: a flipped bit in a record fails authentication at restore and verify, named by seq; an existing database is left untouched', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    const n = a.lastSeq - 25n;
    srv.store.lie(a.node.vaultId, { records: flipBit(n) });
    await refused(srv, a, new RegExp(`^record ${n} \\(g0000000001-s\\d{20}\\.seg at byte \\d+\\): authentication failed`));
    const report = await verifyFrom(srv, a);
    assert.equal(report.ok, false);
    assert.equal(report.firstBadRecord?.seq, n.toString());
    assert.match(report.firstBadRecord?.reason ?? '', /authentication failed: the bytes were altered/);
    assert.equal(BigInt(report.records), n - 1n, 'every record before it was good');

    // With --force over an existing database: the failed restore leaves it exactly as it was.
    const t = target();
    fs.writeFileSync(t.to, 'the database that was here');
    fs.writeFileSync(`${t.to}-journal`, 'its journal');
    await assert.rejects(restoreFrom(srv, a, t.to, true), /authentication failed/);
    assert.equal(fs.readFileSync(t.to, 'utf8'), 'the database that was here');
    assert.equal(fs.readFileSync(`${t.to}-journal`, 'utf8'), 'its journal');
    assert.deepEqual(fs.readdirSync(t.dir).sort(), ['lightningd.sqlite3', 'lightningd.sqlite3-journal'], 'no scratch file left behind');
  });
});

test('hostile: a flipped bit in the newest record (the in-flight one) is damage, not a torn tail', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    srv.store.lie(a.node.vaultId, { records: flipBit(a.lastSeq) });
    await refused(srv, a, new RegExp(`^record ${a.lastSeq} \\(.*\\): authentication failed`));
    const report = await verifyFrom(srv, a);
    assert.equal(report.ok, false);
    assert.equal(report.firstBadRecord?.seq, a.lastSeq.toString());
    assert.equal(report.tornTail, null);
  });
});

test("hostile: a record of another node's vault on the same server, served in place of record N, fails authentication at N", async () => {
  const a = fixtureA();
  const b = fixtureB();
  await withServer([a, b], async (srv) => {
    const n = 60n;
    const theirs = (await truth(srv.store, b)).find((r) => r.seq === n)!;
    assert.ok(theirs, `node B has a record ${n}`);
    srv.store.lie(a.node.vaultId, { records: replaceRecord(n, theirs) });
    await refused(srv, a, new RegExp(`^record ${n} \\(.*\\): authentication failed: .*another vault or key`));
    const report = await verifyFrom(srv, a);
    assert.equal(report.firstBadRecord?.seq, n.toString());
  });
});

test('hostile: an authentic record of a fork of the same vault breaks the hash chain after it; LIMIT: a forked newest record cannot be told apart', async () => {
  // A fork: another record N sealed by this node's key on this vault's chain (as a writer that
  // crashed before its ack and reused seq N would make). It is authentic and follows N-1, so the
  // chain breaks only at N+1, which does not follow it: the reader names N+1.
  const a = fixtureA();
  await withServer([a], async (srv) => {
    const all = await truth(srv.store, a);
    const n = a.lastSeq - 30n;
    srv.store.lie(a.node.vaultId, { records: replaceRecord(n, forkAt(a.node, all, n)) });
    await refused(srv, a, new RegExp(`^record ${n + 1n} \\(.*\\): hash chain broken: this record does not follow the one before it`));
    const report = await verifyFrom(srv, a);
    assert.equal(report.firstBadRecord?.seq, (n + 1n).toString());

    // The newest record forked: nothing follows it, so the chain proves nothing against it.
    srv.store.lie(a.node.vaultId, { records: replaceRecord(a.lastSeq, forkAt(a.node, all, a.lastSeq)) });
    assert.equal((await verifyFrom(srv, a)).ok, true, 'LIMIT: a fork of the newest record passes as the newest record');
    const t = target();
    const r = await restoreFrom(srv, a, t.to);
    assert.equal(r.version, a.version);
    const restored = dumpFile(t.to);
    assert.ok(restored !== a.dump && restored.includes("'forked'"), 'the forked call was restored in place of the real one');
  });
});

test("hostile: another vault's VAULT.json (another node's, or another vault of this node) is refused before any record", async () => {
  const a = fixtureA();
  const b = fixtureB();
  // A second vault of node A on the same server (same key, another vault id).
  const twin = freshDir('twin');
  createIdentity(twin, a.node.keys, a.node.nodeId);
  await withServer([a, b], async (srv) => {
    await pushVault({ vaultDir: twin, url: srv.url, keys: a.node.keys });
    const twinId = JSON.parse(fs.readFileSync(identityPath(twin), 'utf8')).vaultId as string;
    const stored = async (id: string): Promise<Buffer> => (await srv.store.truth(id))!.identity;
    const idOfB = await stored(b.node.vaultId);
    const idOfTwin = await stored(twinId);
    const download = (): Promise<unknown> => downloadVault({ url: srv.url, keys: a.node.keys, vaultId: a.node.vaultId, toDir: path.join(freshDir('dl'), 'v') });

    srv.store.lie(a.node.vaultId, { state: (v) => ({ ...v, identity: idOfB }) });
    await assert.rejects(download(), new RegExp(`vault ${a.node.vaultId} belongs to another key`));
    srv.store.lie(a.node.vaultId, { state: (v) => ({ ...v, identity: idOfTwin }) });
    await assert.rejects(
      download(),
      new RegExp(`vault ${a.node.vaultId} belongs to another key|sent the identity of vault ${twinId} for vault ${a.node.vaultId}`),
    );
    // The vault's own identity, one character changed (a letter or digit in its middle for
    // another: still well-formed, whether the server holds VAULT.json or a sealed envelope of it).
    const own = await stored(a.node.vaultId);
    const altered = Buffer.from(own);
    let at = Math.floor(altered.length / 2);
    while (!/[0-9a-zA-Z]/.test(String.fromCharCode(altered[at]))) at++;
    altered[at] = altered[at] === 0x61 ? 0x62 : 0x61;
    srv.store.lie(a.node.vaultId, { state: (v) => ({ ...v, identity: altered }) });
    await assert.rejects(
      download(),
      new RegExp(`vault ${a.node.vaultId} belongs to another key|sent the identity of vault [0-9a-f]{32} for vault ${a.node.vaultId}`),
    );
    const t = target();
    await assert.rejects(
      downloadDir({ url: srv.url, keys: a.node.keys, vaultId: a.node.vaultId }, (dir) => restoreDatabase({ vaultDir: dir, keys: a.node.keys, to: t.to })),
      /belongs to another key/,
    );
    assert.deepEqual(fs.readdirSync(t.dir), []);
  });
});

test('hostile: VaultState over-claiming lastSeq, or moving firstSeq past the snapshot, is refused, naming the records', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    srv.store.lie(a.node.vaultId, { state: (v) => ({ ...v, lastSeq: v.lastSeq + 4n }) });
    await refused(srv, a, new RegExp(`said its copy of vault ${a.node.vaultId} ends at record ${a.lastSeq + 4n}, but sent records only up to ${a.lastSeq}`));
    // firstSeq moved up (the older records, snapshot included, "never held"): the first record
    // present does not start a generation.
    const first = a.lastSeq - 10n;
    srv.store.lie(a.node.vaultId, { state: (v) => ({ ...v, firstSeq: first }), records: (all) => all.filter((r) => r.seq >= first) });
    await refused(
      srv,
      a,
      new RegExp(`^record 1 \\(.*\\): records 1\\.\\.${first - 1n} are missing .*the first record present, ${first}, does not start a generation`),
    );
  });
});

test('hostile: a record listed under another generation is refused by number', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    // The newest record moved to a "generation 2" of its own (a segment file g0000000002-...).
    srv.store.lie(a.node.vaultId, { records: relabelGeneration(a.lastSeq, 2) });
    await refused(srv, a, new RegExp(`^record ${a.lastSeq} \\(g0000000002-.*\\): record says generation 1 but lies in a segment of generation 2`));
    // A record in the middle: the next one would go back to generation 1.
    const n = a.lastSeq - 12n;
    srv.store.lie(a.node.vaultId, { records: relabelGeneration(n, 2) });
    await refused(srv, a, new RegExp(`record ${n + 1n} is of generation 1, older than the vault's generation 2`));
  });
});

test('hostile: two generations: a bit flipped in the older one is reported by verify; restore, which reads the newest, restores the right database', async () => {
  const g = fixtureG();
  await withServer([g], async (srv) => {
    const n = g.gen2FirstSeq - 5n;
    srv.store.lie(g.node.vaultId, { records: flipBit(n) });
    const report = await verifyFrom(srv, g);
    assert.equal(report.ok, false);
    assert.equal(report.firstBadRecord?.seq, n.toString());
    const t = target();
    const r = await restoreFrom(srv, g, t.to);
    assert.equal(r.generation, 2);
    assert.equal(r.version, g.version);
    assert.equal(dumpFile(t.to), g.dump, 'the newest generation is whole and proven: its database is right');
    // Damage in the newest generation stops the restore.
    srv.store.lie(g.node.vaultId, { records: flipBit(g.gen2FirstSeq + 2n) });
    await refused(srv, g, new RegExp(`^record ${g.gen2FirstSeq + 2n} \\(g0000000002-.*\\): authentication failed`));
  });
});

test("hostile: two generations: damage in the older generation's FIRST record does not stop the restore of the newest one", async () => {
  const g = fixtureG();
  await withServer([g], async (srv) => {
    srv.store.lie(g.node.vaultId, { records: flipBit(1n) });
    const report = await verifyFrom(srv, g);
    assert.equal(report.firstBadRecord?.seq, '1');
    const t = target();
    const r = await restoreFrom(srv, g, t.to);
    assert.equal(r.generation, 2);
    assert.equal(dumpFile(t.to), g.dump);
  });
});

test('hostile: LIMIT: the whole newest generation hidden (cut at its first record) restores the older generation without a word', async () => {
  const g = fixtureG();
  await withServer([g], async (srv) => {
    const all = await truth(srv.store, g);
    const k = all.filter((r) => r.seq >= g.gen2FirstSeq).length;
    srv.store.lie(g.node.vaultId, { records: dropNewest(k), state: cutState(all, k) });
    const t = target();
    const r = await restoreFrom(srv, g, t.to);
    assert.equal(r.generation, 1);
    assert.equal(r.version, g.gen1Version, 'generation 1 ends where the plugin stopped seeing the node');
    assert.ok(r.version < g.version);
    assert.equal((await verifyFrom(srv, g)).ok, true);
  });
});

test('hostile: the CLI: verify --from names the altered record (exit 3), restore --from refuses a dropped one (exit 1) and writes nothing', async () => {
  const a = fixtureA();
  await withServer([a], async (srv) => {
    const keyArgs = ['--hsm-secret', a.node.hsmSecretPath];
    const n = a.lastSeq - 3n;
    srv.store.lie(a.node.vaultId, { records: flipBit(n) });
    const v = await cli(['verify', '--from', srv.url, ...keyArgs]);
    assert.equal(v.code, 3, v.stderr);
    assert.match(v.stdout, new RegExp(`first bad record: ${n} in g0000000001-s\\d{20}\\.seg at byte \\d+: authentication failed`));

    const m = a.lastSeq / 3n;
    srv.store.lie(a.node.vaultId, { records: dropRecord(m) });
    const t = target();
    const r = await cli(['restore', '--from', srv.url, ...keyArgs, '--to', t.to]);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, new RegExp(`^lnbackup: lnbackup://[0-9a-f]{66}@127\\.0\\.0\\.1:\\d+ answered a read from record ${m} with record ${m + 1n}`));
    assert.deepEqual(fs.readdirSync(t.dir), []);

    srv.store.honest();
    const ok = await cli(['restore', '--from', srv.url, ...keyArgs, '--to', t.to]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(dumpFile(t.to), a.dump);
  });
});

// -- the node side --------------------------------------------------------------------------------

/** A node set up for lnbackup with an open journal fed by node3's first calls. */
function liveNode(prefix: string): { node: VaultNode; journal: Journal; next: () => ReturnType<typeof recordCall> } {
  const node = makeNode(prefix, { segmentBytes: 16 * 1024 });
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const calls = node3Calls();
  let i = 0;
  return { node, journal, next: () => recordCall(journal, calls[i].dataVersion, calls[i++].writes) };
}

test('hostile node side: a server that acked records without storing them is caught on reconnect (LOST RECORDS) and refilled', async () => {
  const { node, journal, next } = liveNode('hostile-lost');
  let srv = await startHostileServer(freshDir('srv'));
  const notices: Notice[] = [];
  const remote = nodeRemote(node, srv.url, notices);
  try {
    const started = await remote.start(journal.chainTail, Date.now() + 10_000);
    assert.ok(!started.ahead && started.connected);
    await Promise.all(Array.from({ length: 30 }, () => remote.store(next())));
    const stored = journal.chainTail.lastSeq;
    srv.store.swallowAppends(node.vaultId, stored + 1n);
    await Promise.all(Array.from({ length: 20 }, () => remote.store(next())));
    const acked = journal.chainTail.lastSeq;
    assert.equal(remote.status().durableSeq, acked.toString(), 'the server acknowledged them all');
    assert.equal(BigInt(srv.store.swallowed.length), acked - stored, 'and threw those away');
    assert.equal((await srv.store.truth(node.vaultId))!.lastSeq, stored);

    srv = await srv.restart();
    await until('the LOST RECORDS notice', () => notices.some((n) => n.level === 'broken'));
    const lost = notices.filter((n) => n.level === 'broken');
    assert.equal(lost.length, 1);
    assert.match(
      lost[0].message,
      new RegExp(
        `^lnbackup://[0-9a-f]{66}@127\\.0\\.0\\.1:${srv.port} LOST RECORDS IT HAD ACKNOWLEDGED \\(acked up to ${acked}, now holds ${stored}\\); resending them from the local vault$`,
      ),
    );
    await Promise.all(Array.from({ length: 5 }, () => remote.store(next())));
    await remote.caughtUp();
    const local = readRawRecords(node.vault, 1n, Number.MAX_SAFE_INTEGER);
    const server = await srv.store.allRecords(node.vaultId);
    assert.equal(server.length, local.length);
    assert.ok(
      server.every((r, i) => r.seq === local[i].seq && r.bytes.equals(local[i].bytes)),
      'the server copy is the local vault, byte for byte',
    );
  } finally {
    await remote.close(1000);
    await srv.stop();
    journal.close();
  }
});

test("hostile node side: a server that lost acknowledged records is flagged also when the node restarted in between (the vault's acks/ ledger)", async () => {
  const { node, journal, next } = liveNode('hostile-lost-restart');
  let srv = await startHostileServer(freshDir('srv'));
  let remote = nodeRemote(node, srv.url, []);
  try {
    await remote.start(journal.chainTail, Date.now() + 10_000);
    await Promise.all(Array.from({ length: 30 }, () => remote.store(next())));
    const stored = journal.chainTail.lastSeq;
    srv.store.swallowAppends(node.vaultId, stored + 1n);
    await Promise.all(Array.from({ length: 20 }, () => remote.store(next())));
    assert.equal(BigInt(srv.store.swallowed.length), journal.chainTail.lastSeq - stored);
    // The plugin stops (lightningd restarts) and the server comes back without those records.
    await remote.close(1000);
    srv = await srv.restart();
    const notices: Notice[] = [];
    remote = nodeRemote(node, srv.url, notices);
    const started = await remote.start(journal.chainTail, Date.now() + 10_000);
    assert.ok(!started.ahead && started.connected && started.serverLastSeq === stored);
    await remote.caughtUp();
    assert.ok(
      notices.some((n) => n.level === 'broken' && /LOST RECORDS/.test(n.message)),
      `notices: ${JSON.stringify(notices)}`,
    );
  } finally {
    await remote.close(0);
    await srv.stop();
    journal.close();
  }
});

test('hostile node side: VaultState with a wrong lastHash is a diverged copy: start() fails, nothing is sent', async () => {
  const { node, journal, next } = liveNode('hostile-hash');
  for (let i = 0; i < 40; i++) next();
  const srv = await startHostileServer(freshDir('srv'));
  const notices: Notice[] = [];
  let remote: RemoteDestination | null = null;
  try {
    await pushVault({ vaultDir: node.vault, url: srv.url, keys: node.keys });
    const serverLast = journal.chainTail.lastSeq;
    for (let i = 0; i < 10; i++) next(); // the node is ahead: it would send these
    srv.store.lie(node.vaultId, { state: (v) => ({ ...v, lastHash: crypto.createHash('sha256').update('not this record').digest() }) });
    const appendsBefore = srv.store.appendCalls;
    remote = nodeRemote(node, srv.url, notices);
    await assert.rejects(remote.start(journal.chainTail, Date.now() + 10_000), (err: unknown) => {
      assert.ok(err instanceof DestinationFailedError);
      assert.match(err.message, new RegExp(`holds a different record ${serverLast} than this node \\(its hash differs\\).*nothing was sent to it`));
      return true;
    });
    assert.equal(remote.status().state, 'failed');
    await assert.rejects(remote.store(next()), DestinationFailedError);
    await sleep(200);
    assert.equal(srv.store.appendCalls, appendsBefore, 'no Append reached the server');
    assert.equal((await srv.store.truth(node.vaultId))!.lastSeq, serverLast);
    assert.ok(notices.some((n) => n.level === 'broken' && /diverged/.test(n.message)));

    // Control: the same server telling the truth is continued.
    srv.store.honest();
    const honest = nodeRemote(node, srv.url, []);
    try {
      const s = await honest.start(journal.chainTail, Date.now() + 10_000);
      assert.ok(!s.ahead && s.connected && s.serverLastSeq === serverLast);
      await honest.caughtUp();
      assert.ok(srv.store.appendCalls > appendsBefore);
    } finally {
      await honest.close(0);
    }
  } finally {
    await remote?.close(0);
    await srv.stop();
    journal.close();
  }
});

interface AheadCase {
  readonly node: VaultNode;
  readonly srv: HostileServer;
  /** Where the node's own (older) vault ends. */
  readonly localLast: bigint;
  /** Where the server's copy ends. */
  readonly serverLast: bigint;
  /** Hashes of the local vault's segment files before anything was tried. */
  readonly before: Map<string, string>;
  readonly lines: string[];
  /** NodeBackup.open as the plugin runs it: the error it threw, or null when it opened (then closed again). */
  open(): Promise<Error | null>;
}

/**
 * A node whose disk lost its newest 40 records, and a server that holds them: NodeBackup.open
 * must prove them before adopting them into the node's vault.
 */
async function serverAhead(prefix: string, stallLimitSeconds: number): Promise<AheadCase> {
  const node = makeNode(prefix, { segmentBytes: 16 * 1024 });
  const calls = node3Calls();
  feedNode(node, calls.slice(0, 60));
  const older = freshDir('older');
  fs.cpSync(node.vault, older, { recursive: true });
  feedNode(node, calls.slice(60, 100));
  const srv = await startHostileServer(freshDir('srv'));
  const pushed = await pushVault({ vaultDir: node.vault, url: srv.url, keys: node.keys });
  fs.rmSync(node.vault, { recursive: true });
  fs.cpSync(older, node.vault, { recursive: true });
  const localLast = vaultTail(node.vault, Buffer.from(node.vaultId, 'hex')).lastSeq;
  assert.ok(pushed.lastSeq > localLast);
  const config = { ...readConfig(node.networkDir), remotes: [srv.url], stallLimitSeconds };
  const lines: string[] = [];
  const log = (level: string, m: string): void => void lines.push(`${level}: ${m}`);
  const events = { onStall: () => {}, onRecovered: () => {}, onBackgroundFailure: () => {} };
  return {
    node,
    srv,
    localLast,
    serverLast: pushed.lastSeq,
    before: vaultBytes(node.vault),
    lines,
    open: () =>
      NodeBackup.open(node.networkDir, config, log, events, { signal: new AbortController().signal, callStartedAt: Date.now() }).then(
        async (nb) => {
          await nb.close();
          return null;
        },
        (err: Error) => err,
      ),
  };
}

function escaped(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
}

test('hostile node side: a server ahead with a record that fails proof: NodeBackup.open refuses by name, the local vault is untouched; honest, it is adopted', async () => {
  const c = await serverAhead('hostile-ahead', 10);
  const { node, srv } = c;
  try {
    const all = await srv.store.allRecords(node.vaultId);
    const bad = c.localLast + 7n;
    const cases: [string, (all: StoreRecord[]) => StoreRecord[], RegExp][] = [
      ['a flipped bit', flipBit(bad), new RegExp(`^record ${bad} from ${escaped(srv.url)} fails authentication: the server altered it`)],
      [
        'two records swapped under their numbers',
        swapRecords(bad, bad + 1n, true),
        new RegExp(`^record ${bad} from ${escaped(srv.url)} says in its header that it is record ${bad + 1n}`),
      ],
      ['an old record replayed', replayRecord(bad, 3n, true), new RegExp(`^record ${bad} from ${escaped(srv.url)} says in its header that it is record 3`)],
      [
        'a forked record',
        replaceRecord(bad, forkAt(node, all, bad)),
        new RegExp(`^record ${bad + 1n} from ${escaped(srv.url)} does not follow record ${bad} \\(hash chain broken\\)`),
      ],
      [
        'the newest record relabelled to generation 2',
        relabelGeneration(c.serverLast, 2),
        new RegExp(`^record ${c.serverLast} from ${escaped(srv.url)} is sealed as generation 1 but the server lists it as generation 2`),
      ],
    ];
    for (const [what, lie, why] of cases) {
      srv.store.lie(node.vaultId, { records: lie });
      const err = await c.open();
      assert.ok(err !== null, `NodeBackup.open adopted ${what} (record ${bad}):\n${c.lines.join('\n')}`);
      assert.match(err.message, why, what);
      assert.deepEqual(vaultBytes(node.vault), c.before, `${what}: the local vault is untouched`);
    }

    // Control: the same records, honestly served, are proven and adopted.
    srv.store.honest();
    assert.equal(await c.open(), null);
    assert.ok(
      c.lines.some((l) =>
        new RegExp(`held ${c.serverLast - c.localLast} record\\(s\\) beyond the local vault \\(up to ${c.serverLast}\\); proved and adopted them`).test(l),
      ),
    );
    assert.equal(vaultTail(node.vault, Buffer.from(node.vaultId, 'hex')).lastSeq, c.serverLast);
    assert.equal(verifyVault(node.vault, node.keys).ok, true);
  } finally {
    await srv.stop();
  }
});

test('hostile node side: a server ahead that leaves out a record it says it holds: NodeBackup.open refuses by name', async () => {
  const c = await serverAhead('hostile-ahead-gap', 3);
  const { node, srv } = c;
  try {
    const bad = c.localLast + 7n;
    srv.store.lie(node.vaultId, { records: dropRecord(bad) });
    const err = await c.open();
    assert.deepEqual(vaultBytes(node.vault), c.before, 'the local vault is untouched');
    assert.ok(err !== null, `NodeBackup.open went on without the server's records, which it never proved:\n${c.lines.join('\n')}`);
    assert.match(err.message, new RegExp(`record ${bad}`));
  } finally {
    await srv.stop();
  }
});

test('hostile node side: a server claiming records it cannot produce is never taken as ahead, and gets nothing', async () => {
  const { node, journal, next } = liveNode('hostile-claim');
  for (let i = 0; i < 20; i++) next();
  const srv = await startHostileServer(freshDir('srv'));
  const notices: Notice[] = [];
  const remote = nodeRemote(node, srv.url, notices);
  try {
    await pushVault({ vaultDir: node.vault, url: srv.url, keys: node.keys });
    const tail = journal.chainTail;
    srv.store.lie(node.vaultId, { state: (v) => ({ ...v, lastSeq: v.lastSeq + 3n }) });
    const appendsBefore = srv.store.appendCalls;
    const why = new RegExp(`says it holds records up to ${tail.lastSeq + 3n}, beyond this node's ${tail.lastSeq}, but sends none of them`);
    await assert.rejects(remote.start(tail, null), why);
    assert.equal(remote.status().state, 'failed');
    assert.ok(
      notices.some((n) => n.level === 'broken' && why.test(n.message)),
      'logged loudly',
    );
    assert.equal(srv.store.appendCalls, appendsBefore, 'nothing was sent');
  } finally {
    await remote.close(0);
    await srv.stop();
    journal.close();
  }
});

test('hostile node side: a server that is not the pinned key is refused at the handshake, by the node and by restore', async () => {
  const a = fixtureA();
  const srv = await startHostileServer(freshDir('srv'));
  const impostor = formatRemoteUrl(publicKeyOf(generatePrivateKey()), '127.0.0.1', srv.port);
  const pinned = /closed the connection during the handshake .*the server's key does not match the pinned key/;
  const notices: Notice[] = [];
  const remote = nodeRemote(a.node, impostor, notices);
  try {
    await assert.rejects(ServerClient.connect(impostor, a.node.keys.transport), pinned);
    const started = remote.start(vaultTail(a.node.vault, Buffer.from(a.node.vaultId, 'hex')), null);
    await until('the notice', () => notices.some((n) => pinned.test(n.message)));
    assert.match(remote.status().lastError ?? '', pinned);
    await remote.close(0);
    const r = await started;
    assert.ok(!r.ahead && !r.connected);
    await assert.rejects(downloadVault({ url: impostor, keys: a.node.keys, toDir: path.join(freshDir('dl'), 'v') }), pinned);
    await assert.rejects(pushVault({ vaultDir: a.node.vault, url: impostor, keys: a.node.keys, stallTimeoutMs: 3000 }), pinned);
    assert.deepEqual(await srv.store.listVaults(), [], 'the server got nothing');
    assert.equal(srv.store.appendCalls, 0);
  } finally {
    await remote.close(0);
    await srv.stop();
  }
});
