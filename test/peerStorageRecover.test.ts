// Recovery from the seed alone, end to end with real processes: a simulated node (the simulator
// driving the real plugin) backs up to a real `lnbackup server` child process; its beacon (the
// server's URL, key and vault id, the high-water mark, the channel records) is left with three
// simulated Lightning peers (child processes speaking BOLT #8 + BOLT #1 on 127.0.0.1, keeping
// blobs by the provider's rules); the machine is wiped; the real `lnbackup recover` from the
// hsm_secret and the peers' addresses gives a database whose dump equals the node's. With the
// server rolled back to an older copy it refuses by name, naming the server and both points; with
// the server gone it still yields the channel backup, as Core Lightning's emergency.recover. And
// in alongside mode, peers holding Core Lightning's real recorded channel backup give its channels.
// A beacon too large for one blob, striped k=2 of n=3 over the peers, is rebuilt with one peer
// gone and refused as too few shards with two gone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { vaultTail } from '../src/destinations/transfer.js';
import { parseRemoteUrl } from '../src/destinations/remoteUrl.js';
import { openIdentity, vaultIdBytes } from '../src/vault/identity.js';
import { makesecret, nodeIdFromHsmSecret, parseHsmSecret, VAULT_KEY_INFO } from '../src/keys/hsmSecret.js';
import { buildBeacon } from '../src/peerstorage/beacon/beacon.js';
import { beaconKeyFromRoot } from '../src/peerstorage/beacon/beaconKey.js';
import { channelBackupKey, openChannelBackup } from '../src/peerstorage/channelBackup/emergencyRecover.js';
import { LightningPeer } from '../src/peerstorage/peer/lightningPeer.js';
import { nodePrivateKey } from '../src/peerstorage/peer/nodeKey.js';
import { parsePeerAddress } from '../src/peerstorage/recovery/collectBlobs.js';
import { checkReachesHighWater, highWaterMarkOf } from '../src/peerstorage/recovery/highWater.js';
import { testdataDir } from './helpers/paths.js';
import { dataVersionOf, dumpFile, NODE3_CHAIN } from './helpers/reference.js';
import { cli, makeRemoteNode, serverVaultOf, startServerAt, until, type RemoteNode } from './helpers/remoteNode.js';
import { makeTestNode } from './helpers/testNode.js';
import { startSimPeer, type SimPeer } from './helpers/simPeer/simPeer.js';

process.setMaxListeners(100);
const fixtures = path.join(testdataDir, 'peer-storage');
const scbRecords = (JSON.parse(fs.readFileSync(path.join(fixtures, 'nodeA.staticbackup.json'), 'utf8')) as { scb: string[] }).scb.map((h) =>
  Buffer.from(h, 'hex'),
);

async function startPeers(dir: string, nodeId: string): Promise<SimPeer[]> {
  return Promise.all([0, 1, 2].map((i) => startSimPeer({ dataDir: path.join(dir, `peer-${i}`), channelPeers: [nodeId] })));
}

/** Connects to each peer as the node (key from its hsm_secret) and leaves a blob with it: the i-th, or the only one. */
async function leaveWith(hsmSecretFile: string, peers: readonly SimPeer[], blobs: readonly Buffer[]): Promise<void> {
  const key = nodePrivateKey(parseHsmSecret(fs.readFileSync(hsmSecretFile)));
  for (const [i, p] of peers.entries()) {
    const peer = await LightningPeer.connect(key, parsePeerAddress(p.address));
    assert.equal(await peer.retrieval(300), null, 'the peer held something already');
    peer.sendPeerStorage(blobs.length === 1 ? blobs[0] : blobs[i]);
    await peer.close();
  }
}

async function serverHolds(server: { dataDir: string }, node: RemoteNode, lastSeq: bigint): Promise<void> {
  await until(
    `the server to hold records up to ${lastSeq}`,
    async () => (await serverVaultOf(server as never, node.transportKey))?.lastSeq === lastSeq.toString(),
    30_000,
  );
}

function lastSeqOf(node: RemoteNode): bigint {
  return vaultTail(node.vault, vaultIdBytes(openIdentity(node.vault, node.keys))).lastSeq;
}

test(
  'recover from the seed and three peers restores the node; a rolled-back server is refused by name; with no server the channel backup remains',
  { timeout: 120_000 },
  async () => {
    let server = await startServerAt();
    const node = await makeRemoteNode('recover', { remotes: [server.url] });
    const peers = await startPeers(node.dir, node.nodeId as string);
    try {
      // The node runs part of its life; a copy of the server's data at that point is kept.
      await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 200 });
      const oldSeq = lastSeqOf(node);
      await serverHolds(server, node, oldSeq);
      assert.equal(await server.stop(), 0);
      const oldData = path.join(node.dir, 'server-data-old');
      fs.cpSync(server.dataDir, oldData, { recursive: true });
      server = await server.restart();
      await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH });
      const endSeq = lastSeqOf(node);
      assert.ok(endSeq > oldSeq);
      await serverHolds(server, node, endSeq);

      // The beacon, as the consumer makes it, left with the three peers.
      const root = makesecret(parseHsmSecret(fs.readFileSync(node.hsmSecretPath)), Buffer.from(VAULT_KEY_INFO));
      const mark = highWaterMarkOf(node.vault, node.keys, dataVersionOf(node.dbPath), Date.now());
      const [blob, ...more] = await buildBeacon(beaconKeyFromRoot(root), 1n, {
        nodeId: Buffer.from(node.nodeId as string, 'hex'),
        createdMs: Date.now(),
        servers: [{ url: server.url, pinnedKey: parseRemoteUrl(server.url).publicKey, vaultId: vaultIdBytes(openIdentity(node.vault, node.keys)) }],
        highWater: mark,
        channelBackup: scbRecords,
      });
      assert.equal(more.length, 0);
      // The check itself, on the node's own vault: the mark is reached; a later record, a newer
      // generation or another hash at the mark is not.
      assert.deepEqual(checkReachesHighWater(node.vault, node.keys, mark), { ok: true, copy: { generation: mark.generation, sequence: mark.sequence } });
      assert.equal(checkReachesHighWater(node.vault, node.keys, { ...mark, sequence: mark.sequence + 1n }).ok, false);
      assert.equal(checkReachesHighWater(node.vault, node.keys, { ...mark, generation: mark.generation + 1 }).ok, false);
      const otherHash = Buffer.from(mark.recordHash);
      otherHash[0] ^= 1;
      assert.deepEqual(checkReachesHighWater(node.vault, node.keys, { ...mark, recordHash: otherHash }), {
        ok: false,
        copy: { generation: mark.generation, sequence: mark.sequence },
        reason: 'diverged',
      });
      await leaveWith(node.hsmSecretPath, peers, [blob]);

      // The machine is lost: only the hsm_secret and the peers' addresses are left.
      const nodeDump = dumpFile(node.dbPath);
      fs.rmSync(node.dbPath);
      fs.rmSync(node.vault, { recursive: true });
      const peerArgs = peers.flatMap((p) => ['--peer', p.address]);
      const started = Date.now();
      const to = path.join(node.dir, 'recovered.sqlite3');
      const ok = await cli(['recover', '--hsm-secret', node.hsmSecretPath, ...peerArgs, '--to', to, '--json']);
      const recoverMs = Date.now() - started;
      assert.equal(ok.code, 0, ok.stderr + ok.stdout);
      assert.equal(ok.json?.mode, 'lnbackup');
      assert.deepEqual(
        (ok.json?.peers as { held: string }[]).map((p) => p.held),
        ['beacon', 'beacon', 'beacon'],
      );
      assert.equal((ok.json?.channels as unknown[]).length, scbRecords.length);
      assert.ok(dumpFile(to) === nodeDump, "the recovered database differs from the node's");
      const plainStarted = Date.now();
      const plain = await cli(['restore', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--to', path.join(node.dir, 'plain.sqlite3'), '--json']);
      assert.equal(plain.code, 0, plain.stderr);
      process.stdout.write(
        `# lnbackup recover (3 peers + download + restore, ${endSeq} records): ${recoverMs} ms; lnbackup restore --from: ${Date.now() - plainStarted} ms\n`,
      );

      // The server is rolled back to its older copy: refused by name, both points given.
      assert.equal(await server.stop(), 0);
      fs.rmSync(server.dataDir, { recursive: true });
      fs.cpSync(oldData, server.dataDir, { recursive: true });
      server = await server.restart();
      const rolledBack = await cli(['recover', '--hsm-secret', node.hsmSecretPath, ...peerArgs, '--to', path.join(node.dir, 'rolled-back.sqlite3'), '--json']);
      assert.equal(rolledBack.code, 3, rolledBack.stderr + rolledBack.stdout);
      const [refusal] = rolledBack.json?.servers as { outcome: string; reason: string; message: string }[];
      assert.equal(refusal.outcome, 'refused');
      assert.equal(refusal.reason, 'behind');
      assert.ok(refusal.message.includes(server.url), refusal.message);
      assert.ok(
        refusal.message.includes(`record ${oldSeq},`) && refusal.message.includes(`record ${mark.sequence} (data_version ${mark.dataVersion}`),
        refusal.message,
      );
      assert.ok(!fs.existsSync(path.join(node.dir, 'rolled-back.sqlite3')), 'a database was written from the refused copy');

      // Every server gone: the channel backup is still there, as Core Lightning's file.
      assert.equal(await server.stop(), 0);
      const emergency = path.join(node.dir, 'emergency.recover');
      const gone = await cli([
        'recover',
        '--hsm-secret',
        node.hsmSecretPath,
        ...peerArgs,
        '--to',
        path.join(node.dir, 'gone.sqlite3'),
        '--emergency-recover',
        emergency,
        '--json',
      ]);
      assert.equal(gone.code, 1, gone.stderr + gone.stdout);
      assert.equal((gone.json?.servers as { outcome: string }[])[0].outcome, 'failed');
      const backup = openChannelBackup(channelBackupKey(parseHsmSecret(fs.readFileSync(node.hsmSecretPath))), fs.readFileSync(emergency));
      assert.deepEqual(
        backup.channels.map((c) => c.raw.toString('hex')),
        scbRecords.map((r) => r.toString('hex')),
      );
    } finally {
      for (const p of peers) assert.equal(await p.stop(), 0, p.stderr());
      await server.stop();
    }
  },
);

test("alongside mode: peers holding Core Lightning's recorded channel backup give its channels and its emergency.recover", { timeout: 60_000 }, async () => {
  const node = makeTestNode('recover-alongside', Buffer.from(fs.readFileSync(path.join(fixtures, 'nodeA.hsm_secret.hex'), 'utf8').trim(), 'hex'));
  const nodeId = (JSON.parse(fs.readFileSync(path.join(fixtures, 'nodeA.getinfo.json'), 'utf8')) as { id: string }).id;
  const peers = await startPeers(node.dir, nodeId);
  try {
    const recorded = fs.readFileSync(path.join(fixtures, 'nodeA.emergency.recover'));
    await leaveWith(node.hsmSecretPath, peers, [recorded]);
    const emergency = path.join(node.dir, 'emergency.recover');
    // A fourth "peer" answers the handshake with garbage: reported by name, the others still count.
    const garbage = net.createServer((socket) => socket.end(crypto.randomBytes(50)));
    await new Promise<void>((resolve) => garbage.listen(0, '127.0.0.1', resolve));
    const garbageAddress = `${peers[0].nodeId}@127.0.0.1:${(garbage.address() as net.AddressInfo).port}`;
    const r = await cli([
      'recover',
      '--hsm-secret',
      node.hsmSecretPath,
      ...peers.flatMap((p) => ['--peer', p.address]),
      '--peer',
      garbageAddress,
      '--emergency-recover',
      emergency,
      '--json',
    ]);
    garbage.close();
    assert.equal(r.code, 0, r.stderr + r.stdout);
    assert.equal(r.json?.mode, 'alongside');
    const held = r.json?.peers as { held: string; detail: string }[];
    assert.deepEqual(
      held.map((p) => p.held),
      ['channel-backup', 'channel-backup', 'channel-backup', 'unreachable'],
    );
    assert.match(held[3].detail, /BOLT #8 handshake failed: act two/);
    assert.equal((r.json?.channels as unknown[]).length, scbRecords.length);
    assert.ok(fs.readFileSync(emergency).equals(recorded), 'the emergency.recover written is not the recorded one');
    const withTo = await cli([
      'recover',
      '--hsm-secret',
      node.hsmSecretPath,
      ...peers.flatMap((p) => ['--peer', p.address]),
      '--to',
      path.join(node.dir, 'db.sqlite3'),
    ]);
    assert.equal(withTo.code, 1, 'a database was asked for and none can be found in alongside mode');
    assert.match(withTo.stdout, /alongside/);
  } finally {
    for (const p of peers) assert.equal(await p.stop(), 0, p.stderr());
  }
});

test('a beacon striped 2 of 3 over the peers is rebuilt with one peer gone, and refused by name with two gone', { timeout: 60_000 }, async () => {
  const node = makeTestNode('recover-striped');
  const secret = parseHsmSecret(fs.readFileSync(node.hsmSecretPath));
  const nodeId = nodeIdFromHsmSecret(secret);
  const peers = await startPeers(node.dir, nodeId);
  const stopped = new Set<SimPeer>();
  try {
    const channels = Array.from({ length: 200 }, (_, i) => scbRecords[i % scbRecords.length]);
    const shards = await buildBeacon(
      beaconKeyFromRoot(makesecret(secret, Buffer.from(VAULT_KEY_INFO))),
      7n,
      {
        nodeId: Buffer.from(nodeId, 'hex'),
        createdMs: Date.now(),
        servers: [],
        highWater: { generation: 1, sequence: 1n, recordHash: Buffer.alloc(32), dataVersion: 1, timeMs: Date.now() },
        channelBackup: channels,
      },
      { k: 2, n: 3 },
    );
    assert.equal(shards.length, 3);
    await leaveWith(node.hsmSecretPath, peers, shards);
    const args = ['recover', '--hsm-secret', node.hsmSecretPath, ...peers.flatMap((p) => ['--peer', p.address]), '--timeout', '2', '--json'];

    assert.equal(await peers[0].stop(), 0);
    stopped.add(peers[0]);
    const oneGone = await cli(args);
    assert.equal(oneGone.code, 0, oneGone.stderr + oneGone.stdout);
    assert.deepEqual((oneGone.json?.beacon as { from: number[]; counter: string }).from, [1, 2]);
    assert.equal((oneGone.json?.beacon as { counter: string }).counter, '7');
    assert.equal((oneGone.json?.channels as unknown[]).length, 200);
    assert.deepEqual(
      (oneGone.json?.peers as { held: string }[]).map((p) => p.held),
      ['unreachable', 'shard', 'shard'],
    );

    assert.equal(await peers[1].stop(), 0);
    stopped.add(peers[1]);
    const twoGone = await cli(args);
    assert.equal(twoGone.code, 1, twoGone.stderr + twoGone.stdout);
    assert.equal(twoGone.json?.mode, 'none');
    const last = (twoGone.json?.peers as { held: string; detail: string }[])[2];
    assert.equal(last.held, 'shard');
    assert.match(last.detail, /^counter 7 \(too-few-shards: /);
  } finally {
    for (const p of peers) if (!stopped.has(p)) assert.equal(await p.stop(), 0, p.stderr());
  }
});
