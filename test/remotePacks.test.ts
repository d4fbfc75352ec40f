// Page packs and retention between a node and an lnbackup server, over real TCP on 127.0.0.1
// against in-process BackupServers with the file store: storePack through a black-holed and then
// cut connection, records held back until the pack they refer to is durable, pushVault and
// downloadVault carrying the packs, prune over the wire (dead packs removed only once the server
// holds the kept generation, quota given back), a pruned vault resumed after a restart without
// LOST RECORDS and copied to a new server from its first kept record, and the pack requests'
// refusals (another client's vault, a conflicting pack, an absent pack, pieces under a small
// message limit).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { RunningServer } from '../src/server/server.js';
import { openStore } from '../src/server/storage/openStore.js';
import { DestinationFailedError, type StoredCall } from '../src/destinations/destination.js';
import { formatRemoteUrl } from '../src/destinations/remoteUrl.js';
import { ServerClient, ServerError } from '../src/destinations/serverClient.js';
import { downloadVault, pushVault } from '../src/destinations/transfer.js';
import { ErrorCode } from '../src/protocol/messages.js';
import { encodeSnapshotBegin, encodeWrites } from '../src/journal/payloads.js';
import { genesisHash, RecordType } from '../src/vault/format.js';
import { createIdentity, identityPath, openIdentity, vaultIdBytes } from '../src/vault/identity.js';
import { sealIdentity } from '../src/vault/identityEnvelope.js';
import { vaultKeysFromRoot, type VaultKeys } from '../src/vault/keys.js';
import { deletePacks, listPacks, writePack } from '../src/vault/packFiles.js';
import { pruneGenerations } from '../src/vault/prune.js';
import { RawVaultAppender, readRawRecords } from '../src/vault/rawRecords.js';
import { RecordSealer } from '../src/vault/sealer.js';
import { listSegments } from '../src/vault/segments.js';
import { assertSameRecords, folderMaker, remoteFor, serverVaultDir, startServer, type Notice } from './helpers/remoteFixture.js';
import { storeOverride } from './helpers/storeOverride.js';
import { TcpProxy } from './helpers/tcpProxy.js';
import { sleep, until, within } from './helpers/waiting.js';

const ALL = Number.MAX_SAFE_INTEGER;
const freshDir = folderMaker('remote-packs');

function packName(): string {
  return `p-${crypto.randomBytes(16).toString('hex')}.pack`;
}

/** A node's local vault written keylessly in-process: generations of a snapshot record and Writes records, and page packs. */
class PackVault {
  readonly dir: string;
  readonly keys: VaultKeys;
  readonly vaultId: Buffer;
  private appender: RawVaultAppender;
  private sealer: RecordSealer;
  private dataVersion = 0;
  generation = 0;

  constructor(prefix: string) {
    this.dir = freshDir(prefix);
    this.keys = vaultKeysFromRoot(crypto.randomBytes(32));
    createIdentity(this.dir, this.keys, null, 16 * 1024);
    this.vaultId = vaultIdBytes(openIdentity(this.dir, this.keys));
    this.appender = RawVaultAppender.open(this.dir, 16 * 1024);
    this.sealer = new RecordSealer(this.keys.record, this.vaultId, { lastSeq: 0n, lastHash: genesisHash(this.vaultId), generation: 0 });
  }

  get identityBytes(): Buffer {
    return fs.readFileSync(identityPath(this.dir));
  }

  get tail(): { lastSeq: bigint; lastHash: Buffer } {
    const t = this.appender.tail;
    return { lastSeq: t.lastSeq, lastHash: t.lastHash ?? genesisHash(this.vaultId) };
  }

  /** One db_write call (a new generation starts with a snapshot record), durable in the local vault. */
  call(newGeneration = false, packs: { name: string; bytes: Buffer }[] = []): StoredCall {
    const records = [];
    if (newGeneration || this.generation === 0) {
      this.generation++;
      records.push(
        this.sealer.seal({
          type: RecordType.SnapshotBegin,
          generation: this.generation,
          dataVersion: this.dataVersion,
          supersedes: 0n,
          payload: encodeSnapshotBegin({ dbBytes: 0, takenAt: Date.now() }),
        }),
      );
    }
    const dataVersion = ++this.dataVersion;
    const writes = [`INSERT INTO t VALUES (${dataVersion}, '${crypto.randomBytes(100).toString('hex')}');`];
    records.push(this.sealer.seal({ type: RecordType.Writes, generation: this.generation, dataVersion, supersedes: 0n, payload: encodeWrites(writes) }));
    for (const r of records) this.appender.append(r);
    this.appender.flushSync();
    return { dataVersion, writes, records, snapshot: records.length > 1, supersedes: 0n, packs };
  }

  /** A new page pack, written in the local vault. */
  pack(bytes: number): { name: string; bytes: Buffer } {
    const p = { name: packName(), bytes: crypto.randomBytes(bytes) };
    writePack(this.dir, p.name, p.bytes);
    return p;
  }

  /** The node's own retention: generations below `keep` and the packs named go. */
  prune(keep: number, dead: readonly string[]): void {
    this.appender.close();
    pruneGenerations(this.dir, keep);
    deletePacks(this.dir, dead);
    this.appender = RawVaultAppender.open(this.dir, 16 * 1024);
  }

  close(): void {
    this.appender.close();
  }
}

/** The packs of a vault folder: name -> bytes. */
function packsOf(vaultDir: string): Map<string, Buffer> {
  return new Map(listPacks(vaultDir).map((p) => [p.name, fs.readFileSync(p.path)]));
}

function assertHoldsPacks(vaultDir: string, packs: readonly { name: string; bytes: Buffer }[], what: string): void {
  const held = packsOf(vaultDir);
  for (const p of packs) {
    const got = held.get(p.name);
    assert.ok(got, `${what}: pack ${p.name} is held`);
    assert.ok(got.equals(p.bytes), `${what}: pack ${p.name} is byte for byte the node's`);
  }
}

async function clientStatus(server: RunningServer): Promise<{ totalBytes: number }> {
  const s = await server.status();
  assert.equal(s.clients.length, 1);
  return s.clients[0];
}

test('storePack: an upload cut in the middle (black hole, then dropped) is retried on the next connection until durable', async () => {
  const v = new PackVault('drop');
  const dataDir = freshDir('drop-srv');
  const server = await startServer(dataDir);
  const proxy = await TcpProxy.start(server.port);
  const notices: Notice[] = [];
  const remote = remoteFor(v, formatRemoteUrl(server.publicKey, '127.0.0.1', proxy.port), notices);
  try {
    const started = await remote.start(v.tail, Date.now() + 10_000);
    assert.ok(!started.ahead && started.connected);
    for (let i = 0; i < 20; i++) await remote.store(v.call());
    proxy.blackhole(true);
    const packs = [
      { name: packName(), bytes: crypto.randomBytes(5 * 1024 * 1024 + 3) },
      { name: packName(), bytes: crypto.randomBytes(3 * 1024 * 1024) },
    ];
    let settled = 0;
    const stores = packs.map((p) => remote.storePack(p.name, p.bytes).then(() => void settled++));
    const calls = [remote.store(v.call()), remote.store(v.call())];
    await sleep(500);
    assert.equal(settled, 0, 'nothing is durable while the connection is black-holed');
    assert.equal(packsOf(serverVaultDir(dataDir, v.vaultId)).size, 0, 'no pack reached the server whole');
    const accepted = proxy.accepted;
    proxy.dropAll();
    proxy.blackhole(false);
    await within(Promise.all([...stores, ...calls]), 60_000, 'the packs and calls after the cut');
    assert.ok(proxy.accepted > accepted, 'a new connection carried them');
    assertHoldsPacks(serverVaultDir(dataDir, v.vaultId), packs, 'the server');
    await remote.caughtUp();
    assertSameRecords(v.dir, serverVaultDir(dataDir, v.vaultId));
    // The same pack again: resolved without a second upload.
    await remote.storePack(packs[0].name, packs[0].bytes);
    assert.deepEqual(
      notices.filter((n) => n.level === 'broken'),
      [],
    );
  } finally {
    await remote.close(1000);
    await proxy.close();
    await server.stop();
    v.close();
  }
});

test('records that refer to a pack are not sent before the pack is durable on the server', async () => {
  const v = new PackVault('gate');
  const dataDir = freshDir('gate-srv');
  const real = await openStore({ dataDir });
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let putStarted = false;
  const store = storeOverride(real, {
    putPack: async (id, name, bytes) => {
      putStarted = true;
      await held; // a slow disk
      return real.putPack(id, name, bytes);
    },
  });
  const server = await startServer(dataDir, { store });
  const notices: Notice[] = [];
  const remote = remoteFor(v, server.url, notices);
  try {
    await remote.start(v.tail, Date.now() + 10_000);
    for (let i = 0; i < 5; i++) await remote.store(v.call());
    const before = (await real.getVault(v.vaultId.toString('hex')))?.lastSeq;
    const pack = v.pack(200_000);
    const withPack = v.call(true, [pack]);
    let done = false;
    const delivered = remote.store(withPack).then(() => void (done = true));
    const later = remote.store(v.call());
    await until('the pack upload to start', () => putStarted);
    await sleep(300);
    assert.equal(done, false);
    assert.equal((await real.getVault(v.vaultId.toString('hex')))?.lastSeq, before, 'no record after the pack was sent while it is not durable');
    release();
    await within(Promise.all([delivered, later]), 30_000, 'the call with its pack');
    assertHoldsPacks(serverVaultDir(dataDir, v.vaultId), [pack], 'the server');
    assertSameRecords(v.dir, serverVaultDir(dataDir, v.vaultId));
  } finally {
    release();
    await remote.close(1000);
    await server.stop();
    v.close();
  }
});

test('transfer: pushVault uploads the packs the server lacks, then the records; downloadVault brings both back', async () => {
  const v = new PackVault('push');
  const packs = [v.pack(1), v.pack(2 * 1024 * 1024 + 5), v.pack(9 * 1024 * 1024)];
  for (let g = 0; g < 2; g++) for (let i = 0; i < 10; i++) v.call(i === 0);
  const dataDir = freshDir('push-srv');
  const server = await startServer(dataDir);
  try {
    const progress: [number, number][] = [];
    const pushed = await pushVault({ vaultDir: v.dir, url: server.url, keys: v.keys, onProgress: (d, t) => progress.push([d, t]) });
    assert.equal(pushed.packs, 3);
    assert.equal(
      pushed.packBytes,
      packs.reduce((n, p) => n + p.bytes.length, 0),
    );
    assert.equal(pushed.lastSeq, v.tail.lastSeq);
    const [doneBytes, totalBytes] = progress[progress.length - 1];
    assert.equal(doneBytes, totalBytes, 'the progress ends at the whole vault, packs included');
    assertHoldsPacks(serverVaultDir(dataDir, v.vaultId), packs, 'the server');
    assertSameRecords(v.dir, serverVaultDir(dataDir, v.vaultId));
    const again = await pushVault({ vaultDir: v.dir, url: server.url, keys: v.keys });
    assert.equal(again.packs, 0, 'a second push uploads no pack');
    assert.equal(again.records, 0);

    const to = path.join(freshDir('push-down'), 'vault');
    const down = await downloadVault({ url: server.url, keys: v.keys, toDir: to });
    assert.equal(down.packs, 3);
    assertHoldsPacks(to, packs, 'the download');
    assert.equal(listPacks(to).length, 3);
    assertSameRecords(v.dir, to);
  } finally {
    await server.stop();
    v.close();
  }
});

test('prune over the wire: old generations go at once, dead packs once the server holds the kept generation; the quota is given back; a restart resumes without LOST RECORDS', async () => {
  const v = new PackVault('prune');
  const dataDir = freshDir('prune-srv');
  const MiB = 1024 * 1024;
  // Room for the records and three packs of 1 MiB, not for two and one of 1.5 MiB; after two packs are removed, there is.
  const server = await startServer(dataDir, { quotaBytes: 3 * MiB + 200 * 1024 });
  const notices: Notice[] = [];
  let remote = remoteFor(v, server.url, notices);
  const hex = v.vaultId.toString('hex');
  try {
    await remote.start(v.tail, Date.now() + 10_000);
    const a = v.pack(MiB);
    await remote.store(v.call(true, [a]));
    for (let i = 0; i < 20; i++) await remote.store(v.call());
    const b = v.pack(MiB);
    await remote.store(v.call(true, [b]));
    for (let i = 0; i < 20; i++) await remote.store(v.call());
    const c = v.pack(MiB);
    const gen3 = v.call(true, [c]);
    const gen3First = gen3.records[0].seq;
    // A fourth pack does not fit in the quota yet.
    const tooMuch = { name: packName(), bytes: crypto.randomBytes(1.5 * MiB) };
    await assert.rejects(remote.storePack(tooMuch.name, tooMuch.bytes), (e: unknown) => e instanceof DestinationFailedError && /quota/.test(e.message));

    // Retention asked while the server's newest generation is 2: generation 1 goes, but the dead
    // packs stay (generation 2, the server's newest, still uses b).
    let pruned = false;
    const pruning = remote.prune(3, [a.name, b.name]).then(() => void (pruned = true));
    const serverDir = serverVaultDir(dataDir, v.vaultId);
    await until('generation 1 removed on the server', () => listSegments(serverDir)[0]?.generation === 2);
    await sleep(300);
    assert.equal(pruned, false, 'not done while the server lacks generation 3');
    assertHoldsPacks(serverDir, [a, b], 'the server before it holds generation 3');
    // Generation 3 reaches the server: the prune finishes.
    await remote.store(gen3);
    for (let i = 0; i < 5; i++) await remote.store(v.call());
    await within(pruning, 30_000, 'the prune');
    assert.equal(readRawRecords(serverDir, 0n, ALL)[0].seq, gen3First, 'the server copy starts at generation 3');
    assert.deepEqual([...packsOf(serverDir).keys()], [c.name]);
    const state = (await server.status()).clients[0].vaults[0];
    assert.equal(state.firstSeq, gen3First.toString());
    const recordBytes = readRawRecords(serverDir, 0n, ALL).reduce((n, r) => n + r.bytes.length, 0);
    assert.equal((await clientStatus(server)).totalBytes, recordBytes + c.bytes.length, 'the status counts the kept records and packs');
    // The quota was given back.
    await remote.storePack(tooMuch.name, tooMuch.bytes);
    assertHoldsPacks(serverDir, [tooMuch], 'the server after the prune');

    // The node prunes its own vault and restarts: the server (firstSeq > 1) is level, not a loss.
    await remote.close(1000);
    v.prune(3, [a.name, b.name]);
    assert.equal(readRawRecords(v.dir, 0n, ALL)[0].seq, gen3First);
    const restartNotices: Notice[] = [];
    remote = remoteFor(v, server.url, restartNotices);
    const started = await remote.start(v.tail, Date.now() + 10_000);
    assert.ok(!started.ahead && started.connected && started.serverLastSeq === v.tail.lastSeq);
    for (let i = 0; i < 30; i++) await remote.store(v.call());
    await remote.caughtUp();
    assertSameRecords(v.dir, serverDir);
    assert.deepEqual(
      restartNotices.filter((n) => n.level !== 'info' || /LOST|lost/.test(n.message)),
      [],
      'no LOST RECORDS, nothing unusual',
    );

    // A new server gets the pruned vault from its first kept record, with its packs.
    const dataDir2 = freshDir('prune-srv2');
    const server2 = await startServer(dataDir2);
    try {
      const pushed = await pushVault({ vaultDir: v.dir, url: server2.url, keys: v.keys });
      assert.equal(pushed.records, Number(v.tail.lastSeq - gen3First + 1n));
      assert.equal(pushed.packs, 1, 'the one pack the local vault keeps');
      assertSameRecords(v.dir, serverVaultDir(dataDir2, v.vaultId));
      const to = path.join(freshDir('prune-down'), 'vault');
      await downloadVault({ url: server2.url, keys: v.keys, toDir: to, vaultId: hex });
      assertSameRecords(v.dir, to);
      assertHoldsPacks(to, [c], 'the download of the pruned vault');
      assert.equal(listPacks(to).length, 1);
    } finally {
      await server2.stop();
    }
  } finally {
    await remote.close(1000);
    await server.stop();
    v.close();
  }
});

test('pack requests: pieces under a small message limit, a conflicting pack, an absent pack, another client and an unopened vault', async () => {
  const v = new PackVault('requests');
  for (let i = 0; i < 5; i++) v.call(i === 2);
  const dataDir = freshDir('requests-srv');
  const server = await startServer(dataDir, { maxMessageBytes: 256 * 1024 });
  const hex = v.vaultId.toString('hex');
  await pushVault({ vaultDir: v.dir, url: server.url, keys: v.keys });
  const client = await ServerClient.connect(server.url, v.keys.transport);
  const stranger = await ServerClient.connect(server.url, crypto.randomBytes(32));
  try {
    const expectCode = async (p: Promise<unknown>, code: ErrorCode, what: string): Promise<void> => {
      await assert.rejects(p, (e: unknown) => e instanceof ServerError && e.code === code, what);
    };
    // Before OpenVault on this connection: unknown.
    await expectCode(client.listPacks(v.vaultId), ErrorCode.UnknownVault, 'list before open');
    await client.openVault(v.vaultId, sealIdentity(v.keys, hex, v.identityBytes));
    const big = { name: packName(), bytes: crypto.randomBytes(3 * 1024 * 1024 + 11) };
    await client.putPack(v.vaultId, big.name, big.bytes);
    const back = await client.downloadPack(v.vaultId, big.name, big.bytes.length);
    assert.ok(back.equals(big.bytes), 'read back in pieces, byte for byte');
    assert.deepEqual(await client.listPacks(v.vaultId), [{ name: big.name, bytes: big.bytes.length }]);
    await client.putPack(v.vaultId, big.name, big.bytes); // the same again: fine
    const other = Buffer.from(big.bytes);
    other[other.length - 1] ^= 0x80;
    await expectCode(client.putPack(v.vaultId, big.name, other), ErrorCode.PackConflict, 'other bytes under the same name');
    await expectCode(client.readPack(v.vaultId, packName(), 0, 100), ErrorCode.UnknownPack, 'an absent pack');
    // Another client: the vault is unknown to it, whatever it asks.
    await expectCode(stranger.openVault(v.vaultId, Buffer.alloc(0)), ErrorCode.UnknownVault, 'open of another client vault');
    await expectCode(stranger.listPacks(v.vaultId), ErrorCode.UnknownVault, 'list of another client vault');
    await expectCode(stranger.readPack(v.vaultId, big.name, 0, 10), ErrorCode.UnknownVault, 'read of another client vault');
    await expectCode(stranger.putPack(v.vaultId, packName(), Buffer.alloc(10)), ErrorCode.UnknownVault, 'put into another client vault');
    await expectCode(stranger.deletePacks(v.vaultId, [big.name]), ErrorCode.UnknownVault, 'delete in another client vault');
    await expectCode(stranger.prune(v.vaultId, 5), ErrorCode.UnknownVault, 'prune of another client vault');
    assert.deepEqual(await client.listPacks(v.vaultId), [{ name: big.name, bytes: big.bytes.length }], 'untouched');
    // Prune answers with the vault's state; deletes free the pack.
    const state = await client.prune(v.vaultId, 10);
    assert.equal(state.lastSeq, v.tail.lastSeq, 'the newest generation stays');
    assert.equal(state.lastGeneration, 2);
    assert.equal(state.firstSeq, readRawRecords(v.dir, 0n, ALL).find((r) => r.generation === 2)?.seq, 'generation 1 is gone');
    await client.deletePacks(v.vaultId, [big.name, packName()]);
    assert.deepEqual(await client.listPacks(v.vaultId), []);
    assert.equal((await clientStatusOf(server, client.clientKey)).totalBytes, Number(state.bytes));
    assert.ok(client.isOpen, 'refusals do not close the connection');
  } finally {
    client.close();
    stranger.close();
    await server.stop();
    v.close();
  }
});

async function clientStatusOf(server: RunningServer, key: string): Promise<{ totalBytes: number }> {
  const c = (await server.status()).clients.find((x) => x.publicKey === key);
  assert.ok(c, `the server knows client ${key}`);
  return c;
}
