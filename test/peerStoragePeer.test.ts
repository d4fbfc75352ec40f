// The minimal Lightning peer over real TCP on 127.0.0.1: against the simulated peer (a real child
// process keeping blobs by the provider's rules) it connects as the node, gets nothing the first
// time, leaves a blob, and gets it back byte-identical on the next connection, ignoring the
// channel_reestablish a real node sends; 1,100 messages cross BOLT #8's key rotation. Against
// hand-made responders: Core Lightning's recorded reconnection replayed, pings answered across
// the key rotation of both directions, a peer requiring an unknown even feature, an unknown
// even message, garbage instead of a handshake, a bad frame MAC, and silence are refused clearly
// and in bounded time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { LightningPeer, type PeerAddress } from '../src/peerstorage/peer/lightningPeer.js';
import { NoiseSocket } from '../src/peerstorage/peer/noiseSocket.js';
import { featureField } from '../src/peerstorage/wire/features.js';
import { encodeMessage, decodeMessage } from '../src/peerstorage/wire/message.js';
import { generatePrivateKey, publicKeyOf } from '../src/transport/keys.js';
import { tempDir, testdataDir } from './helpers/paths.js';
import { startSimPeer } from './helpers/simPeer/simPeer.js';

function addressOf(nodeId: string, port: number): PeerAddress {
  return { nodeId: Buffer.from(nodeId, 'hex'), host: '127.0.0.1', port };
}

test('a blob left with the simulated peer comes back byte-identical on the next connection, across key rotation', async () => {
  const nodeKey = generatePrivateKey();
  const nodeId = publicKeyOf(nodeKey).toString('hex');
  const sim = await startSimPeer({ dataDir: path.join(tempDir('peer'), 'sim'), channelPeers: [nodeId], cooldownMs: 100 });
  try {
    const first = await LightningPeer.connect(nodeKey, addressOf(sim.nodeId, sim.port));
    assert.equal(first.providesStorage, true);
    assert.equal(await first.retrieval(500), null, 'an empty slot sends no retrieval');
    const blobs = Array.from({ length: 1100 }, (_, i) => crypto.randomBytes(100 + (i % 50)));
    for (const b of blobs) first.sendPeerStorage(b);
    await new Promise((r) => setTimeout(r, 300));
    await first.close();
    const second = await LightningPeer.connect(nodeKey, addressOf(sim.nodeId, sim.port));
    const back = await second.retrieval(5000);
    assert.ok(back !== null && back.equals(blobs[blobs.length - 1]), 'the newest blob did not come back byte-identical');
    await second.close();
  } finally {
    assert.equal(await sim.stop(), 0, sim.stderr());
  }
});

/** A one-connection responder that runs `script` on the accepted socket. */
async function responder(
  script: (socket: net.Socket, key: Buffer) => Promise<void>,
): Promise<{ address: PeerAddress; done: Promise<void>; close: () => void }> {
  const key = generatePrivateKey();
  let done!: Promise<void>;
  const server = net.createServer((socket) => {
    done = script(socket, key).catch(() => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as net.AddressInfo;
  return {
    address: { nodeId: publicKeyOf(key), host: '127.0.0.1', port },
    get done() {
      return done;
    },
    close: () => server.close(),
  };
}

const INIT = (bits: number[]): Buffer =>
  encodeMessage({ kind: 'init', globalFeatures: Buffer.alloc(0), features: featureField(bits), networks: null, remoteAddress: null, otherRecords: [] });

/** What node B sent node A on one recorded reconnection (logs-A-wire.txt): init, its type 7, its type 9, channel_reestablish. */
function recordedReconnection(): Buffer[] {
  const inbound = fs
    .readFileSync(path.join(testdataDir, 'peer-storage', 'logs-A-wire.txt'), 'utf8')
    .split('\n')
    .map((line) => /\[IN\] ([0-9a-f]+)$/.exec(line)?.[1])
    .filter((hex): hex is string => hex !== undefined)
    .map((hex) => Buffer.from(hex, 'hex'));
  const inits = inbound.flatMap((m, i) => (m.readUInt16BE(0) === 16 ? [i] : []));
  return inbound.slice(inits[1], inits[2]);
}

test("Core Lightning's recorded reconnection, replayed: its init is accepted, its type 9 taken, its type 7 noted, its channel_reestablish ignored", async () => {
  const messages = recordedReconnection();
  assert.deepEqual(
    messages.map((m) => m.readUInt16BE(0)),
    [16, 7, 9, 136],
  );
  const r = await responder(async (socket, key) => {
    const noise = await NoiseSocket.accept(socket, key);
    for (const m of messages) noise.send(m);
    await noise.closed;
  });
  const peer = await LightningPeer.connect(generatePrivateKey(), r.address);
  const blob = await peer.retrieval(3000);
  assert.ok(blob?.equals(messages[2].subarray(4)), 'the recorded type 9 blob did not come back');
  assert.ok(peer.notes.theirStorage?.equals(messages[1].subarray(4)));
  assert.deepEqual([...peer.notes.ignoredTypes], []);
  assert.equal(await peer.next(300, 'message'), null, 'channel_reestablish is not ignored');
  assert.deepEqual([...peer.notes.ignoredTypes], [136]);
  await assert.rejects(peer.next(300, 'message'), /sent no message within 300 ms/);
  await peer.close();
  r.close();
});

test('pings are answered with the pong asked for', async () => {
  const r = await responder(async (socket, key) => {
    const noise = await NoiseSocket.accept(socket, key);
    await noise.receive(2000, 'init');
    noise.send(INIT([43]));
    // 1,005 pings and pongs: both directions' keys rotate (every 1000 nonces, two per message).
    for (let i = 0; i < 1005; i++) noise.send(encodeMessage({ kind: 'ping', numPongBytes: 7, ignored: Buffer.alloc(3) }));
    for (let i = 0; i < 1005; i++) {
      const pong = decodeMessage(await noise.receive(2000, 'pong'));
      assert.equal(pong.kind, 'pong');
      assert.equal(pong.kind === 'pong' && pong.ignored.length, 7);
    }
    noise.send(encodeMessage({ kind: 'peer_storage_retrieval', blob: Buffer.from('held') }));
    await noise.closed;
  });
  const peer = await LightningPeer.connect(generatePrivateKey(), r.address);
  assert.deepEqual(await peer.retrieval(3000), Buffer.from('held'));
  await peer.close();
  await r.done;
  r.close();
});

test('a peer requiring an unknown even feature, or sending an unknown even message, is refused by name', async () => {
  const unknownBit = await responder(async (socket, key) => {
    const noise = await NoiseSocket.accept(socket, key);
    noise.send(INIT([43, 100]));
    await noise.closed;
  });
  await assert.rejects(LightningPeer.connect(generatePrivateKey(), unknownBit.address), /requires unknown feature 100\/101 \(bit 100, required\)/);
  unknownBit.close();

  const unknownType = await responder(async (socket, key) => {
    const noise = await NoiseSocket.accept(socket, key);
    noise.send(INIT([43]));
    noise.send(encodeMessage({ kind: 'unknown', type: 1000, payload: Buffer.alloc(4) }));
    await noise.closed;
  });
  const peer = await LightningPeer.connect(generatePrivateKey(), unknownType.address);
  await assert.rejects(peer.retrieval(3000), /unknown even message type 1000/);
  unknownType.close();
});

test('garbage, a bad frame MAC and silence are refused clearly, each within its timeout', async () => {
  const garbage = await responder(async (socket) => {
    socket.write(crypto.randomBytes(50));
  });
  await assert.rejects(LightningPeer.connect(generatePrivateKey(), garbage.address, { handshakeTimeoutMs: 2000 }), /BOLT #8 handshake failed: act two/);
  garbage.close();

  const badFrame = await responder(async (socket, key) => {
    await NoiseSocket.accept(socket, key);
    socket.write(crypto.randomBytes(18 + 40));
  });
  await assert.rejects(LightningPeer.connect(generatePrivateKey(), badFrame.address), /fails its MAC/);
  badFrame.close();

  const silent = await responder(async () => undefined);
  const started = Date.now();
  await assert.rejects(LightningPeer.connect(generatePrivateKey(), silent.address, { handshakeTimeoutMs: 300 }), /did not complete within 300 ms/);
  assert.ok(Date.now() - started < 2000);
  silent.close();

  const mute = await responder(async (socket, key) => {
    await NoiseSocket.accept(socket, key);
  });
  await assert.rejects(LightningPeer.connect(generatePrivateKey(), mute.address, { initTimeoutMs: 300 }), /sent no init within 300 ms/);
  mute.close();
});
