// The beacon (src/peerstorage/beacon): every blob is exactly 65531 bytes; a beacon comes back
// exactly; tampered, truncated, oversize, foreign, replayed-older and non-beacon blobs are refused
// by name; a striped beacon (n=5, k=3) survives any 2 lost shards and is refused with 3 lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DecodeError } from '../src/util/bytes.js';
import { beaconKeyFromRoot } from '../src/peerstorage/beacon/beaconKey.js';
import { decodeBeaconContent, encodeBeaconContent, type BeaconContent } from '../src/peerstorage/beacon/beaconContent.js';
import { buildBeacon, recoverBeacon } from '../src/peerstorage/beacon/beacon.js';
import { BeaconError, type BeaconRefusal } from '../src/peerstorage/beacon/beaconError.js';
import { BLOB_BYTES, openBlob } from '../src/peerstorage/beacon/sealedBlob.js';
import { Prng, envCount, mutated } from './helpers/prng.js';
import { testdataDir } from './helpers/paths.js';

const fixtures = path.join(testdataDir, 'peer-storage');
const scbRecord = Buffer.from(JSON.parse(fs.readFileSync(path.join(fixtures, 'nodeA.staticbackup.json'), 'utf8')).scb[0], 'hex');
const nodeId = Buffer.from('039e7449de1cede60cd56069d4f66e43c3aceadc9be9733d3d88b317c334d4dce6', 'hex');
const key = beaconKeyFromRoot(crypto.createHash('sha256').update('root of node A').digest());
const otherKey = beaconKeyFromRoot(crypto.createHash('sha256').update('root of node B').digest());

function content(channels: number): BeaconContent {
  return {
    nodeId,
    createdMs: 1796656682000,
    servers: [
      { url: 'lnbackup://02aa@backup.example:9736', pinnedKey: Buffer.alloc(33, 2), vaultId: Buffer.alloc(16, 9) },
      { url: 'lnbackup://03bb@127.0.0.1:9737', pinnedKey: Buffer.alloc(33, 3), vaultId: Buffer.alloc(16, 9) },
    ],
    highWater: { generation: 7, sequence: 123456789n, recordHash: Buffer.alloc(32, 0xab), dataVersion: 8178, timeMs: 1796656681000 },
    channelBackup: Array(channels).fill(scbRecord),
  };
}

function refusedAs(reason: BeaconRefusal) {
  return (err: unknown) => err instanceof BeaconError && err.reason === reason;
}

test('a beacon is one blob of exactly 65531 bytes, whatever it holds, and comes back exactly', async () => {
  for (const channels of [0, 1, 50, 150]) {
    const c = content(channels);
    const blobs = await buildBeacon(key, 42n, c);
    assert.equal(blobs.length, 1);
    assert.equal(blobs[0].length, BLOB_BYTES);
    const back = await recoverBeacon(key, blobs, 42n, nodeId);
    assert.deepEqual(back.content, c);
    assert.equal(back.counter, 42n);
    assert.equal(back.from, 'whole');
  }
});

test('refused by name: tampered, truncated, oversize, foreign, replayed older, not a beacon', async () => {
  const [blob] = await buildBeacon(key, 10n, content(1));
  for (const at of [5, 22, 29, 30, 54, 1000, BLOB_BYTES - 1]) {
    const bad = Buffer.from(blob);
    bad[at] ^= 0x01;
    assert.throws(() => openBlob(key, bad, -1n), at === 5 ? refusedAs('malformed') : refusedAs('tampered'), `byte ${at}`);
  }
  assert.throws(() => openBlob(key, blob.subarray(0, BLOB_BYTES - 1), -1n), refusedAs('truncated'));
  assert.throws(() => openBlob(key, blob.subarray(0, 57), -1n), refusedAs('truncated'));
  assert.throws(() => openBlob(key, Buffer.concat([blob, Buffer.of(0)]), -1n), refusedAs('oversize'));
  assert.throws(() => openBlob(otherKey, blob, -1n), refusedAs('foreign'));
  assert.throws(() => openBlob(key, blob, 11n), refusedAs('replayed'));
  assert.equal(openBlob(key, blob, 10n).counter, 10n, 'the same counter is not a replay');
  const clnBlob = fs.readFileSync(path.join(fixtures, 'nodeA.emergency.recover'));
  assert.throws(() => openBlob(key, Buffer.concat([clnBlob, Buffer.alloc(BLOB_BYTES - clnBlob.length)]), -1n), refusedAs('not-a-beacon'));
  await assert.rejects(recoverBeacon(key, [blob], 11n), refusedAs('replayed'));
  await assert.rejects(recoverBeacon(otherKey, [blob]), refusedAs('foreign'));
  await assert.rejects(recoverBeacon(key, [blob], -1n, Buffer.alloc(33, 2)), refusedAs('foreign'));
  await assert.rejects(recoverBeacon(key, []), refusedAs('no-beacon'));
});

test('the newest valid beacon wins; bad blobs beside it are listed by name', async () => {
  const [b3] = await buildBeacon(key, 3n, content(0));
  const [b7] = await buildBeacon(key, 7n, content(2));
  const [b5] = await buildBeacon(key, 5n, content(1));
  const tampered = Buffer.from(b7);
  tampered[2000] ^= 4;
  const back = await recoverBeacon(key, [b3, tampered, b7, b5, Buffer.alloc(10)], 4n);
  assert.equal(back.counter, 7n);
  assert.equal(back.content.channelBackup.length, 2);
  assert.deepEqual(
    back.refused.map((r) => [r.blob, r.error.reason]),
    [
      [0, 'replayed'],
      [1, 'tampered'],
      [4, 'truncated'],
    ],
  );
});

test('striping n=5, k=3: every shard is 65531 bytes; any 2 lost still rebuild it, any 3 lost are refused', async () => {
  const big = content(400);
  assert.ok(encodeBeaconContent(big).length > 65531, 'too large for one blob');
  const shards = await buildBeacon(key, 9n, big, { k: 3, n: 5 });
  assert.equal(shards.length, 5);
  for (const s of shards) assert.equal(s.length, BLOB_BYTES);
  for (let a = 0; a < 5; a++) {
    for (let b = a + 1; b < 5; b++) {
      const kept = shards.filter((_, i) => i !== a && i !== b);
      const back = await recoverBeacon(key, kept, -1n, nodeId);
      assert.deepEqual(back.content, big, `lost ${a} and ${b}`);
      assert.deepEqual(
        back.from,
        [0, 1, 2, 3, 4].filter((i) => i !== a && i !== b),
      );
      for (let c = b + 1; c < 5; c++) {
        const two = shards.filter((_, i) => i !== a && i !== b && i !== c);
        await assert.rejects(
          recoverBeacon(key, two),
          /too-few-shards: the newest striped beacon \(counter 9\) has 2 of the 3 shards/,
          `lost ${a}, ${b} and ${c}`,
        );
      }
    }
  }
  const tampered = Buffer.from(shards[1]);
  tampered[40000] ^= 1;
  const back = await recoverBeacon(key, [shards[0], tampered, shards[3], shards[4]]);
  assert.deepEqual(back.content, big, 'a tampered shard counts as lost');
  assert.deepEqual(
    back.refused.map((r) => r.error.reason),
    ['tampered'],
  );
  const older = await buildBeacon(key, 8n, { ...big, createdMs: big.createdMs - 1 }, { k: 3, n: 5 });
  assert.deepEqual(
    (await recoverBeacon(key, [older[0], shards[1], older[2], shards[3], older[4], shards[0]])).counter,
    9n,
    'shards of different counters are never mixed',
  );
  await assert.rejects(recoverBeacon(key, [older[0], shards[1], shards[2]]), refusedAs('too-few-shards'));
  const [whole] = await buildBeacon(key, 5n, content(1));
  assert.equal((await recoverBeacon(key, [whole, shards[0], shards[2], shards[4]])).counter, 9n, 'a newer stripe beats an older whole beacon');
  assert.equal((await recoverBeacon(key, [whole, shards[0], shards[2]])).counter, 5n, 'an incomplete stripe leaves the whole one');
  await assert.rejects(buildBeacon(key, 1n, content(2000), { k: 3, n: 5 }), /stripe it with a larger k/);
});

test('a rebuilt stripe that names another node is refused, and an older whole beacon is used', async () => {
  const foreignStripe = await buildBeacon(key, 9n, { ...content(400), nodeId: Buffer.alloc(33, 2) }, { k: 3, n: 5 });
  const [whole] = await buildBeacon(key, 4n, content(1));
  const back = await recoverBeacon(key, [foreignStripe[0], foreignStripe[1], foreignStripe[4], whole], -1n, nodeId);
  assert.equal(back.counter, 4n);
  assert.deepEqual(
    back.refused.map((r) => [r.blob, r.error.reason]),
    [
      [0, 'foreign'],
      [1, 'foreign'],
      [2, 'foreign'],
    ],
  );
  await assert.rejects(recoverBeacon(key, foreignStripe.slice(0, 3), -1n, nodeId), refusedAs('foreign'), 'a complete but foreign stripe is refused as foreign');
});

test('fuzz: every mutated blob is refused with a BeaconError', async () => {
  const seed = envCount('BEACON_SEED', Date.now() % 2 ** 32);
  const prng = new Prng(seed);
  const [whole] = await buildBeacon(key, 3n, content(1));
  const shards = await buildBeacon(key, 3n, content(400));
  for (let i = 0; i < envCount('BEACON_FUZZ', 300); i++) {
    const original = prng.pick([whole, ...shards]);
    const m = mutated(prng, original);
    if (m.equals(original)) continue;
    assert.throws(() => openBlob(key, m, -1n), BeaconError, `seed ${seed} trial ${i}`);
  }
});

test('fuzz: mutated beacon contents decode or throw DecodeError', () => {
  const seed = envCount('BEACON_SEED', Date.now() % 2 ** 32);
  const prng = new Prng(seed);
  const bytes = encodeBeaconContent(content(2));
  for (let i = 0; i < envCount('BEACON_FUZZ', 5000); i++) {
    const m = mutated(prng, bytes);
    try {
      const c = decodeBeaconContent(m);
      assert.deepEqual(encodeBeaconContent(c), m, `seed ${seed} trial ${i}`);
    } catch (err) {
      assert.ok(err instanceof DecodeError, `seed ${seed} trial ${i}: ${String(err)}`);
    }
  }
});
