// The node's side of an lnbackup server, over real TCP on 127.0.0.1 against an in-process
// BackupServer with its file store: pipelined stores, resumption from the server's VaultState
// through dropped, cut and black-holed connections (tcpProxy), a server that lost acknowledged
// records, a server ahead of the node (records proven and adopted), a diverged server, refusals,
// a full quota, and whole-vault push and download followed by a real restore.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { RunningServer } from '../src/server/server.js';
import { DestinationFailedError, type StoredCall } from '../src/destinations/destination.js';
import { ACKS_DIR, AckLedger } from '../src/destinations/ackLedger.js';
import { RemoteDestination, type SyncEvent } from '../src/destinations/remote.js';
import { formatRemoteUrl } from '../src/destinations/remoteUrl.js';
import { ProtocolError, ServerClient } from '../src/destinations/serverClient.js';
import { SecureConnection } from '../src/transport/connection.js';
import { generatePrivateKey, publicKeyOf } from '../src/transport/keys.js';
import { decodeMessage, encodeMessage, MessageType } from '../src/protocol/messages.js';
import { downloadDir, downloadVault, pushVault } from '../src/destinations/transfer.js';
import { adoptRecords } from '../src/vault/adopt.js';
import { encodeSnapshotBegin, encodeSnapshotEnd, encodeWrites } from '../src/journal/payloads.js';
import { RecordType } from '../src/vault/format.js';
import { createIdentity, identityPath, openIdentity, vaultIdBytes, type VaultIdentity } from '../src/vault/identity.js';
import { vaultKeysFromRoot, type VaultKeys } from '../src/vault/keys.js';
import { LOCK_FILE } from '../src/vault/lock.js';
import { readRawRecords } from '../src/vault/rawRecords.js';
import { RecordSealer, type ChainPosition } from '../src/vault/sealer.js';
import { listSegments } from '../src/vault/segments.js';
import { VaultWriter } from '../src/vault/writer.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import { assertSameRecords, folderMaker, remoteFor, serverVaultDir, startServer, type Notice } from './helpers/remoteFixture.js';
import { dumpFile, dumpOf, effectiveWrites, node3Calls, plainReplay } from './helpers/reference.js';
import { makeNode } from './helpers/testNode.js';
import { feedNode } from './helpers/vaultFixture.js';
import { TcpProxy } from './helpers/tcpProxy.js';
import { sleep, until } from './helpers/waiting.js';

const ALL = Number.MAX_SAFE_INTEGER;

/** A new folder under this file's temporary root. */
const freshDir = folderMaker('remote');

/** A local vault written in-process: a generation-1 snapshot of an empty database, then Writes records. */
class TestVault {
  private dataVersion = 0;

  private constructor(
    readonly dir: string,
    readonly keys: VaultKeys,
    readonly identity: VaultIdentity,
    private writer: VaultWriter,
    private sealer: RecordSealer,
  ) {}

  static create(prefix: string, segmentBytes = 16 * 1024): TestVault {
    const dir = freshDir(prefix);
    const keys = vaultKeysFromRoot(crypto.randomBytes(32));
    createIdentity(dir, keys, null, segmentBytes);
    const v = TestVault.open(dir, keys);
    const put = (type: RecordType, payload: Buffer): void => {
      v.writer.append(v.sealer.seal({ type, generation: 1, dataVersion: 0, supersedes: 0n, payload }));
    };
    put(RecordType.SnapshotBegin, encodeSnapshotBegin({ dbBytes: 0, takenAt: Date.now() }));
    put(RecordType.SnapshotEnd, encodeSnapshotEnd({ dbBytes: 0, sha256: crypto.createHash('sha256').digest() }));
    v.writer.sync();
    return v;
  }

  static open(dir: string, keys: VaultKeys): TestVault {
    const identity = openIdentity(dir, keys);
    const writer = VaultWriter.open(dir, keys);
    const v = new TestVault(dir, keys, identity, writer, new RecordSealer(keys.record, vaultIdBytes(identity), writer.tail));
    v.dataVersion = Number(writer.tail.lastSeq);
    return v;
  }

  get vaultId(): Buffer {
    return vaultIdBytes(this.identity);
  }

  get identityBytes(): Buffer {
    return fs.readFileSync(identityPath(this.dir));
  }

  get tail(): ChainPosition {
    return this.writer.tail;
  }

  /** Seals and writes one db_write call (as the journal does with deferred sync), for the destinations. */
  call(): StoredCall {
    const dataVersion = ++this.dataVersion;
    const writes = [`INSERT INTO t VALUES (${dataVersion}, '${crypto.randomBytes(50 + (dataVersion % 7) * 60).toString('hex')}');`];
    const record = this.sealer.seal({ type: RecordType.Writes, generation: 1, dataVersion, supersedes: 0n, payload: encodeWrites(writes) });
    this.writer.append(record);
    if (dataVersion % 50 === 0) this.writer.sync();
    return { dataVersion, writes, records: [record], snapshot: false, supersedes: 0n, packs: [] };
  }

  /** A copy of the vault as it is now (without the writer's lock), opened for writing. */
  copy(prefix: string): TestVault {
    this.writer.sync();
    const dir = freshDir(prefix);
    fs.cpSync(this.dir, dir, { recursive: true, filter: (src) => path.basename(src) !== LOCK_FILE });
    return TestVault.open(dir, this.keys);
  }

  close(): void {
    this.writer.close();
  }
}

/** Removes the newest `n` records of a vault directory at record boundaries (a store that lost its tail). */
function dropTail(dir: string, n: number): void {
  for (let k = 0; k < n; k++) {
    const last = listSegments(dir).at(-1)!;
    const records = readRawRecords(dir, last.firstSeq, ALL);
    if (records.length <= 1) fs.rmSync(last.path);
    else fs.truncateSync(last.path, fs.statSync(last.path).size - records.at(-1)!.bytes.length);
  }
}

test('remote: 500 pipelined calls are all acknowledged, and the server copy equals the local vault byte for byte', async () => {
  const v = TestVault.create('remote-pipe');
  const dataDir = freshDir('remote-pipe-srv');
  const server = await startServer(dataDir);
  const notices: Notice[] = [];
  const remote = remoteFor(v, server.url, notices);
  try {
    const started = await remote.start(v.tail, Date.now() + 10_000);
    assert.equal(started.ahead, false);
    assert.ok(!started.ahead && started.connected && started.serverLastSeq === 0n);
    const t0 = performance.now();
    const order: number[] = [];
    const stores: Promise<void>[] = [];
    for (let i = 0; i < 500; i++) {
      const call = v.call();
      stores.push(remote.store(call).then(() => void order.push(call.dataVersion)));
    }
    await Promise.all(stores);
    const ms = performance.now() - t0;
    console.log(`500 pipelined stores: ${ms.toFixed(0)} ms (${((500 * 1000) / ms).toFixed(0)} calls/s)`);
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
      'calls resolve in chain order',
    );
    const s = remote.status();
    assert.equal(s.state, 'ok');
    assert.equal(s.durableSeq, v.tail.lastSeq.toString());
    assert.equal(s.lagRecords, 0);
    assert.ok(s.lastDurableAt !== null);
    await remote.caughtUp();
    assertSameRecords(v.dir, serverVaultDir(dataDir, v.vaultId));
    assert.deepEqual(
      notices.filter((n) => n.level !== 'info'),
      [],
    );
  } finally {
    await remote.close(1000);
    await server.stop();
    v.close();
  }
});

test('remote: drops and mid-frame cuts during 1000 calls: every call resolves, resumption from VaultState, no gap or duplicate', async () => {
  const v = TestVault.create('remote-chaos');
  const dataDir = freshDir('remote-chaos-srv');
  const server = await startServer(dataDir);
  const proxy = await TcpProxy.start(server.port);
  const notices: Notice[] = [];
  const syncs: SyncEvent[] = [];
  const remote = remoteFor(v, formatRemoteUrl(server.publicKey, '127.0.0.1', proxy.port), notices, { onSync: (e) => syncs.push(e) });
  try {
    await remote.start(v.tail, Date.now() + 10_000);
    const stores: Promise<void>[] = [];
    for (let i = 1; i <= 1000; i++) {
      stores.push(remote.store(v.call()));
      if (i % 100 === 50) {
        // Disrupt a live connection with records in flight: wait until it is up again first.
        await until('a connection', () => remote.status().state !== 'stalled');
        if (i % 200 === 50) proxy.dropAll();
        else proxy.cutMidFrame();
      }
      if (i % 25 === 0) await sleep(5);
    }
    await Promise.all(stores);
    await remote.caughtUp();
    assertSameRecords(v.dir, serverVaultDir(dataDir, v.vaultId));
    assert.ok(syncs.length >= 8, `only ${syncs.length} agreements with the server: the disruptions did not cut connections`);
    assert.ok(proxy.accepted >= 8);
    // Every reconnection resumed at the server's own last record: had the client resumed from its
    // own idea (what it sent, or what was acked), the server would have refused appends out of order.
    assert.deepEqual(
      notices.filter((n) => /does not follow|out of order/i.test(n.message)),
      [],
    );
    const ackLost = syncs.filter((e) => e.serverLastSeq > e.acked).length;
    console.log(`${syncs.length} agreements, ${proxy.accepted} connections; the server was ahead of the acks received ${ackLost} time(s)`);
    assert.ok(ackLost >= 1, 'some disruption lost acks of records the server had stored: resuming from them would have sent duplicates');
    assert.equal(remote.status().state, 'ok');
  } finally {
    await remote.close(1000);
    await proxy.close();
    await server.stop();
    v.close();
  }
});

test('remote: a server that lost acknowledged records is seen from its VaultState, logged as LOST RECORDS, and refilled', async () => {
  const v = TestVault.create('remote-lost');
  const dataDir = freshDir('remote-lost-srv');
  let server = await startServer(dataDir);
  const port = server.port;
  const notices: Notice[] = [];
  const remote = remoteFor(v, server.url, notices);
  try {
    await remote.start(v.tail, Date.now() + 10_000);
    await Promise.all(Array.from({ length: 60 }, () => remote.store(v.call())));
    const acked = v.tail.lastSeq;
    assert.equal(remote.status().durableSeq, acked.toString());
    await server.stop();
    dropTail(serverVaultDir(dataDir, v.vaultId), 3);
    assert.equal(readRawRecords(serverVaultDir(dataDir, v.vaultId), 1n, ALL).at(-1)!.seq, acked - 3n);
    server = await startServer(dataDir, { port });
    await until('the LOST RECORDS notice', () => notices.some((n) => n.level === 'broken'));
    const lost = notices.filter((n) => n.level === 'broken');
    assert.equal(lost.length, 1);
    assert.match(
      lost[0].message,
      new RegExp(
        `^lnbackup://[0-9a-f]{66}@127\\.0\\.0\\.1:${port} LOST RECORDS IT HAD ACKNOWLEDGED \\(acked up to ${acked}, now holds ${acked - 3n}\\); resending them from the local vault$`,
      ),
    );
    await Promise.all(Array.from({ length: 10 }, () => remote.store(v.call())));
    await remote.caughtUp();
    assertSameRecords(v.dir, serverVaultDir(dataDir, v.vaultId));
  } finally {
    await remote.close(1000);
    await server.stop();
    v.close();
  }
});

test('remote: a server ahead of the node is reported by start(); its records are proven and adopted; a tampered record is refused by name', async () => {
  const v = TestVault.create('remote-ahead');
  const dataDir = freshDir('remote-ahead-srv');
  const server = await startServer(dataDir);
  for (let i = 0; i < 20; i++) v.call();
  const behind = v.copy('remote-ahead-old');
  const behindTail = behind.tail;
  behind.close();
  for (let i = 0; i < 30; i++) v.call();
  v.close();
  const pushed = await pushVault({ vaultDir: v.dir, url: server.url, keys: v.keys });
  assert.equal(pushed.records, 52);
  const serverLast = pushed.lastSeq;
  const identity = fs.readFileSync(identityPath(behind.dir));
  const notices: Notice[] = [];
  const remote = new RemoteDestination({
    url: server.url,
    vaultDir: behind.dir,
    identity,
    vaultId: v.vaultId,
    keys: v.keys,
    onNotice: (level, message) => notices.push({ level, message }),
  });
  try {
    const started = await remote.start(behindTail, Date.now() + 10_000);
    assert.ok(started.ahead, 'the server is ahead');
    assert.equal(started.serverLastSeq, serverLast);
    assert.equal(started.records.length, 30);
    assert.equal(started.records[0].seq, behindTail.lastSeq + 1n);

    // A tampered copy of what the server returned is refused, naming the record, and nothing is written.
    const sizeBefore = listSegments(behind.dir).map((s) => fs.statSync(s.path).size);
    const tampered = started.records.map((r, i) => (i === 7 ? { ...r, bytes: flipByte(r.bytes, r.bytes.length - 20) } : r));
    await assert.rejects(adoptRecords({ vaultDir: behind.dir, keys: v.keys, tail: behindTail, records: tampered, source: server.url }), (err: Error) => {
      assert.match(
        err.message,
        new RegExp(`^record ${behindTail.lastSeq + 8n} from lnbackup://.* fails authentication: the server altered it, or it belongs to another vault`),
      );
      return true;
    });
    const missing = started.records.filter((_, i) => i !== 3);
    await assert.rejects(
      adoptRecords({ vaultDir: behind.dir, keys: v.keys, tail: behindTail, records: missing, source: server.url }),
      new RegExp(`^AdoptError: record ${behindTail.lastSeq + 5n} from .* is out of place: record ${behindTail.lastSeq + 4n} comes next`),
    );
    const otherKeys = vaultKeysFromRoot(crypto.randomBytes(32));
    await assert.rejects(
      adoptRecords({ vaultDir: behind.dir, keys: { ...v.keys, record: otherKeys.record }, tail: behindTail, records: started.records, source: server.url }),
      /fails authentication/,
    );
    assert.deepEqual(
      listSegments(behind.dir).map((s) => fs.statSync(s.path).size),
      sizeBefore,
      'nothing was written',
    );

    const adopted = await adoptRecords({ vaultDir: behind.dir, keys: v.keys, tail: behindTail, records: started.records, source: server.url });
    assert.equal(adopted.records, 30);
    assert.equal(adopted.lastSeq, serverLast);
    assertSameRecords(v.dir, behind.dir);
    assert.equal(verifyVault(behind.dir, v.keys).ok, true);

    // Started again on the longer chain, the server is level.
    const again = await remote.start({ lastSeq: adopted.lastSeq, lastHash: adopted.lastHash }, Date.now() + 10_000);
    assert.ok(!again.ahead && again.connected);
    assert.equal(again.serverLastSeq, serverLast);
    await remote.caughtUp();
    assert.equal(remote.status().state, 'ok');
  } finally {
    await remote.close(0);
    await server.stop();
  }
});

function flipByte(bytes: Buffer, at: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[at] ^= 0x01;
  return copy;
}

test('remote: a server holding a different record N than the node is diverged: start() fails and nothing is sent', async () => {
  const mine = TestVault.create('remote-div');
  const theirs = mine.copy('remote-div-other');
  for (let i = 0; i < 10; i++) theirs.call();
  theirs.close();
  for (let i = 0; i < 15; i++) mine.call();
  const dataDir = freshDir('remote-div-srv');
  const server = await startServer(dataDir);
  await pushVault({ vaultDir: theirs.dir, url: server.url, keys: theirs.keys });
  const before = readRawRecords(serverVaultDir(dataDir, mine.vaultId), 1n, ALL);
  assert.equal(before.length, 12);
  const notices: Notice[] = [];
  const remote = remoteFor(mine, server.url, notices);
  try {
    await assert.rejects(remote.start(mine.tail, Date.now() + 10_000), (err: unknown) => {
      assert.ok(err instanceof DestinationFailedError);
      assert.match(err.message, /holds a different record 12 than this node .* must not be used; nothing was sent to it/);
      return true;
    });
    assert.equal(remote.status().state, 'failed');
    await assert.rejects(remote.store(mine.call()), DestinationFailedError);
    await sleep(200);
    const after = readRawRecords(serverVaultDir(dataDir, mine.vaultId), 1n, ALL);
    assert.deepEqual(
      after.map((r) => r.bytes.toString('hex')),
      before.map((r) => r.bytes.toString('hex')),
      'the server copy is untouched',
    );
    assert.ok(notices.some((n) => n.level === 'broken' && /different record 12/.test(n.message)));
  } finally {
    await remote.close(0);
    await server.stop();
    mine.close();
  }
});

test('remote: a refusing server (key not allowed) and a full quota stall with a clear error, logged once', async () => {
  const v = TestVault.create('remote-refused');
  const closed = await startServer(freshDir('remote-refused-srv'), { allow: [] });
  const notices: Notice[] = [];
  await assert.rejects(ServerClient.connect(closed.url, v.keys.transport), /does not allow this node's transport key [0-9a-f]{66}.*allow-list/);
  const refused = remoteFor(v, closed.url, notices);
  const t0 = Date.now();
  const r = await refused.start(v.tail, Date.now() + 30_000);
  assert.ok(Date.now() - t0 < 15_000, 'a refusal ends start() before its deadline');
  assert.ok(!r.ahead && !r.connected);
  assert.match(r.lastError ?? '', /does not allow this node's transport key/);
  assert.equal(refused.status().state, 'stalled');
  assert.ok(notices.some((n) => n.level === 'broken' && /does not allow/.test(n.message)));
  await refused.close(0);
  await closed.stop();

  const dataDir = freshDir('remote-quota-srv');
  const server = await startServer(dataDir, { quotaBytes: 40 * 1024 });
  const quotaNotices: Notice[] = [];
  const remote = remoteFor(v, server.url, quotaNotices);
  try {
    await remote.start(v.tail, Date.now() + 10_000);
    const stores = Array.from({ length: 200 }, () => remote.store(v.call()));
    const outcomes = Promise.allSettled(stores);
    await until('the quota stall', () => remote.status().lastError !== null && /quota/.test(remote.status().lastError!));
    await sleep(1500);
    const s = remote.status();
    assert.equal(s.state, 'stalled');
    assert.ok(s.lagRecords > 0);
    assert.match(s.lastError!, /quota on the server is full.*raise it/);
    assert.equal(quotaNotices.filter((n) => /quota/.test(n.message)).length, 1, 'logged once, not once per record');
    await remote.close(0);
    const settled = await outcomes;
    assert.ok(
      settled.some((o) => o.status === 'rejected' && o.reason instanceof DestinationFailedError),
      'close() rejects the calls still waiting',
    );
  } finally {
    await remote.close(0);
    await server.stop();
    v.close();
  }
});

test('remote: a server unreachable at start: start() resolves at its deadline, calls wait, and complete once it is up (older records read back from the vault)', async () => {
  const v = TestVault.create('remote-late');
  const port = await freePort();
  const dataDir = freshDir('remote-late-srv');
  // The server's key is made now, so that its URL is known before it listens.
  const first = await startServer(dataDir);
  await first.stop();
  const url = formatRemoteUrl(first.publicKey, '127.0.0.1', port);
  const notices: Notice[] = [];
  const remote = remoteFor(v, url, notices, { memoryBytes: 4096 });
  let server: RunningServer | null = null;
  try {
    const t0 = Date.now();
    const started = await remote.start(v.tail, Date.now() + 300);
    assert.ok(!started.ahead && !started.connected);
    assert.match(started.lastError ?? '', /cannot connect to 127\.0\.0\.1:\d+/);
    assert.ok(Date.now() - t0 < 10_000);
    assert.equal(remote.status().state, 'stalled');
    const stores = Array.from({ length: 40 }, () => remote.store(v.call()));
    let resolved = 0;
    for (const p of stores) void p.then(() => resolved++);
    await sleep(300);
    assert.equal(resolved, 0, 'nothing resolves before the server holds it');
    assert.equal(remote.status().lagRecords, 42);
    assert.equal(notices.filter((n) => /cannot connect/.test(n.message)).length, 1, 'the first failure is logged at once, repeats are not');
    server = await startServer(dataDir, { port });
    await Promise.all(stores);
    await remote.caughtUp();
    assertSameRecords(v.dir, serverVaultDir(dataDir, v.vaultId));
    assert.ok(notices.some((n) => n.level === 'info' && /reachable again/.test(n.message)));
  } finally {
    await remote.close(1000);
    await server?.stop();
    v.close();
  }
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** A server that completes the handshake and Hello, then does what `then` says with each later message. */
async function fakeServer(then: (conn: SecureConnection, message: Buffer) => void): Promise<{ url: string; close: () => Promise<void> }> {
  const key = generatePrivateKey();
  const conns = new Set<SecureConnection>();
  const server = net.createServer((socket) => {
    void SecureConnection.accept(socket, key).then(
      (conn) => {
        conns.add(conn);
        let hello = true;
        conn.onClose(() => conns.delete(conn));
        conn.onMessage((message) => {
          if (!hello) return then(conn, message);
          hello = false;
          assert.equal(decodeMessage(message).type, MessageType.Hello);
          conn.send(encodeMessage({ type: MessageType.Welcome, version: 1, agent: 'fake', maxMessageBytes: 1 << 20, maxPendingAppends: 16 }));
        });
      },
      () => undefined,
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: formatRemoteUrl(publicKeyOf(key), '127.0.0.1', port),
    close: async () => {
      for (const c of conns) c.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

test('serverClient: a message that does not decode, and a server that goes silent, end the connection with a clear error', async () => {
  const keys = vaultKeysFromRoot(crypto.randomBytes(32));
  const garbling = await fakeServer((conn) => conn.send(Buffer.from([0xee, 1, 2, 3])));
  try {
    const client = await ServerClient.connect(garbling.url, keys.transport);
    const closed = new Promise<Error | null>((resolve) => client.onClose(resolve));
    await assert.rejects(client.listVaults(), /cannot decode \(unknown message type 238\)/);
    const err = await closed;
    assert.ok(err instanceof ProtocolError);
  } finally {
    await garbling.close();
  }
  const silent = await fakeServer(() => undefined);
  try {
    const client = await ServerClient.connect(silent.url, keys.transport, { pingAfterMs: 200, deadAfterMs: 800 });
    const closed = new Promise<Error | null>((resolve) => client.onClose(resolve));
    const t0 = Date.now();
    const answer = client.openVault(Buffer.alloc(16, 1), Buffer.alloc(0));
    answer.catch(() => undefined);
    const err = await closed;
    assert.match(err?.message ?? '', /nothing arrived from lnbackup:\/\/.* for \d+ s while an answer was awaited/);
    await assert.rejects(answer, /nothing arrived/);
    assert.ok(Date.now() - t0 >= 700);
  } finally {
    await silent.close();
  }
});

test('remote: a black-holed connection is cut by the watchdog (15 s of silence) and the client reconnects and completes', { timeout: 120_000 }, async () => {
  const v = TestVault.create('remote-hole');
  const dataDir = freshDir('remote-hole-srv');
  const server = await startServer(dataDir);
  const proxy = await TcpProxy.start(server.port);
  const notices: Notice[] = [];
  const remote = remoteFor(v, formatRemoteUrl(server.publicKey, '127.0.0.1', proxy.port), notices);
  try {
    await remote.start(v.tail, Date.now() + 10_000);
    await Promise.all(Array.from({ length: 20 }, () => remote.store(v.call())));
    const t0 = Date.now();
    proxy.blackhole(true);
    const stores = Array.from({ length: 5 }, () => remote.store(v.call()));
    await until('the watchdog', () => notices.some((n) => /nothing arrived from .* for 1[5-9] s/.test(n.message)), 60_000);
    const cutAfter = Date.now() - t0;
    assert.ok(cutAfter >= 14_000, `cut after ${cutAfter} ms`);
    await sleep(Math.max(0, 20_000 - (Date.now() - t0)));
    proxy.blackhole(false);
    await Promise.all(stores);
    await remote.caughtUp();
    console.log(`black hole: cut after ${cutAfter} ms, all stored after ${Date.now() - t0} ms`);
    assertSameRecords(v.dir, serverVaultDir(dataDir, v.vaultId));
  } finally {
    await remote.close(1000);
    await proxy.close();
    await server.stop();
    v.close();
  }
});

test('transfer: pushVault, then downloadVault, then the real restore on the downloaded folder gives the node database', async () => {
  const node = makeNode('remote-restore', { segmentBytes: 16 * 1024 });
  const calls = node3Calls();
  feedNode(node, calls);
  const dataDir = freshDir('remote-restore-srv');
  const server = await startServer(dataDir);
  try {
    const progress: number[] = [];
    const pushed = await pushVault({ vaultDir: node.vault, url: server.url, keys: node.keys, onProgress: (done, total) => progress.push(done / total) });
    assert.ok(pushed.records > calls.length);
    assert.equal(progress.at(-1), 1);
    const again = await pushVault({ vaultDir: node.vault, url: server.url, keys: node.keys });
    assert.equal(again.records, 0, 'a second push finds the server level');

    const toDir = path.join(freshDir('remote-restore-dl'), 'vault');
    let last = 0;
    const got = await downloadVault({ url: server.url, keys: node.keys, toDir, onProgress: (done) => (last = done) });
    assert.equal(got.vaultId, node.vaultId);
    assert.equal(got.records, pushed.records);
    assert.equal(last, got.bytes);
    assert.equal(verifyVault(toDir, node.keys).ok, true);
    const to = path.join(node.dir, 'restored.sqlite3');
    const r = restoreDatabase({ vaultDir: toDir, keys: node.keys, to });
    assert.ok(dumpFile(to) === dumpOf(plainReplay(effectiveWrites(calls))), 'the restore from the downloaded vault differs from the plain replay');
    assert.ok(r.version > 0);
    await assert.rejects(downloadVault({ url: server.url, keys: node.keys, toDir }), /is not empty/);

    // downloadDir: a temporary folder, removed afterwards.
    let seen = '';
    const version = await downloadDir({ url: server.url, keys: node.keys }, (dir) => {
      seen = dir;
      return restoreDatabase({ vaultDir: dir, keys: node.keys, to: path.join(node.dir, 'again.sqlite3') }).version;
    });
    assert.equal(version, r.version);
    assert.equal(fs.existsSync(seen), false);

    // The wrong identity key: the download stops at VAULT.json.
    const wrongKeys = { ...node.keys, identity: crypto.randomBytes(32) };
    await assert.rejects(
      downloadVault({ url: server.url, keys: wrongKeys, toDir: path.join(freshDir('remote-dl-wrong'), 'v') }),
      /vault [0-9a-f]{32} belongs to another key/,
    );
    // Another node's key sees no vault.
    const stranger = vaultKeysFromRoot(crypto.randomBytes(32));
    await assert.rejects(
      downloadVault({ url: server.url, keys: stranger, toDir: path.join(freshDir('remote-dl-none'), 'v') }),
      /holds no vault for this node's key/,
    );
    // Two vaults of the same node: the user must choose.
    const twin = freshDir('remote-restore-twin');
    createIdentity(twin, node.keys, node.nodeId);
    await pushVault({ vaultDir: twin, url: server.url, keys: node.keys });
    await assert.rejects(
      downloadVault({ url: server.url, keys: node.keys, toDir: path.join(freshDir('remote-dl-two'), 'v') }),
      /holds 2 vaults for this node's key: .*--vault-id/,
    );
    const chosen = await downloadVault({ url: server.url, keys: node.keys, vaultId: node.vaultId, toDir: path.join(freshDir('remote-dl-chosen'), 'v') });
    assert.equal(chosen.records, got.records);
  } finally {
    await server.stop();
  }
});

test('transfer: pushVault refuses a server that is ahead of the vault', async () => {
  const v = TestVault.create('push-ahead');
  for (let i = 0; i < 5; i++) v.call();
  const old = v.copy('push-ahead-old');
  old.close();
  for (let i = 0; i < 5; i++) v.call();
  v.close();
  const server = await startServer(freshDir('srv'));
  try {
    await pushVault({ vaultDir: v.dir, url: server.url, keys: v.keys });
    await assert.rejects(
      pushVault({ vaultDir: old.dir, url: server.url, keys: v.keys }),
      /holds records up to 12, more than the vault .* \(up to 7\): restore from that server first/,
    );
  } finally {
    await server.stop();
  }
});

test("ack ledger: what a server acknowledged survives a restart; another vault's ledger, a garbled or oversized file count as nothing", async () => {
  const dir = freshDir('ack-ledger');
  const server = generatePrivateKey();
  const key = publicKeyOf(server);
  const a = new AckLedger(dir, 'aa'.repeat(16), key);
  assert.equal(a.ackedSeq, 0n);
  a.note(41n);
  a.note(40n); // never goes back
  await a.flush();
  assert.equal(new AckLedger(dir, 'aa'.repeat(16), key).ackedSeq, 41n);
  assert.equal(new AckLedger(dir, 'bb'.repeat(16), key).ackedSeq, 0n, 'another vault at this folder');
  assert.equal(new AckLedger(dir, 'aa'.repeat(16), publicKeyOf(generatePrivateKey())).ackedSeq, 0n, 'another server');
  const file = path.join(dir, ACKS_DIR, `${key.toString('hex')}.json`);
  for (const bad of [
    '{"vaultId":"' + 'aa'.repeat(16) + '","ackedSeq":"-3"}',
    '{"vaultId":"' + 'aa'.repeat(16) + '","ackedSeq":41}',
    'not json',
    ' '.repeat(5000),
  ]) {
    fs.writeFileSync(file, bad);
    assert.equal(new AckLedger(dir, 'aa'.repeat(16), key).ackedSeq, 0n, `file ${JSON.stringify(bad.slice(0, 40))}`);
  }
});
