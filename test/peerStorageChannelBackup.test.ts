// Core Lightning's channel backup (src/peerstorage/channelBackup): the real blobs recorded from
// Core Lightning v26.06.6 (testdata/peer-storage/) decrypt under the key derived from hsm_secret
// and decode to exactly `staticbackup`; sealing writes Core Lightning's exact bytes; altered,
// short and foreign blobs are refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { parseHsmSecret } from '../src/keys/hsmSecret.js';
import { DecodeError } from '../src/util/bytes.js';
import { channelBackupKey, openChannelBackup, sealChannelBackup } from '../src/peerstorage/channelBackup/emergencyRecover.js';
import { SecretstreamError, openOneMessage, sealOneMessage } from '../src/peerstorage/channelBackup/secretstream.js';
import { decodeScbChannel, decodeStaticChanBackup, encodeScbChannel } from '../src/peerstorage/channelBackup/scbRecords.js';
import { Prng, envCount, mutated } from './helpers/prng.js';
import { testdataDir } from './helpers/paths.js';

const fixtures = path.join(testdataDir, 'peer-storage');
const read = (name: string) => fs.readFileSync(path.join(fixtures, name));
const json = (name: string) => JSON.parse(read(name).toString('utf8'));

function keyOf(node: 'A' | 'B'): Buffer {
  return channelBackupKey(parseHsmSecret(Buffer.from(read(`node${node}.hsm_secret.hex`).toString('utf8').trim(), 'hex')));
}

test('the channel backup key derived from hsm_secret equals what lightningd makesecret returned for "scb secret"', () => {
  for (const node of ['A', 'B'] as const) {
    assert.equal(keyOf(node).toString('hex'), json(`node${node}.makesecret-scb-secret.json`).secret, node);
  }
});

test("node A's emergency.recover decrypts and decodes to exactly its staticbackup", () => {
  const backup = openChannelBackup(keyOf('A'), read('nodeA.emergency.recover'));
  const expected = json('nodeA.emergency.recover.decrypted.json').parsed;
  assert.equal(backup.version, 1n);
  assert.equal(backup.timestamp, expected.timestamp);
  const scb: string[] = json('nodeA.staticbackup.json').scb;
  assert.deepEqual(
    backup.channels.map((c) => c.raw.toString('hex')),
    scb,
  );
  const [ch] = backup.channels;
  assert.equal(ch.channelId.toString('hex'), '3ac88cdf82da56fdb6b38f3dbe2eea15ef2f6e154cbb904a6bd400bba364d295');
  assert.equal(ch.peerId.toString('hex'), json('nodeB.getinfo.json').id);
  assert.equal(Buffer.from(ch.fundingTxid).reverse().toString('hex'), expected.channels[0].funding_txid);
  assert.equal(ch.fundingSats, 1_000_000n);
  assert.equal(ch.addressType, 1);
  assert.equal(`${[...ch.address].join('.')}:${ch.port}`, '127.0.0.1:39736');
  assert.equal(ch.shachain?.entries.length, 3);
  assert.equal(ch.opener, 0);
  assert.equal(ch.remoteToSelfDelay, 6);
  assert.equal(ch.basepoints?.length, 132);
  assert.deepEqual(encodeScbChannel(ch), ch.raw, 'the fields re-encode to the record');
});

test("node B's file matches its staticbackup except the inbound peer's ephemeral port (RECORDING.md)", () => {
  const [ch] = openChannelBackup(keyOf('B'), read('nodeB.emergency.recover')).channels;
  const fromRpc = decodeScbChannel(Buffer.from(json('nodeB.staticbackup.json').scb[0], 'hex'));
  assert.notEqual(ch.port, fromRpc.port);
  assert.deepEqual(encodeScbChannel({ ...ch, port: fromRpc.port }), fromRpc.raw);
});

test('every recorded peer_storage / peer_storage_retrieval blob opens with its owner key, or is refused as Core Lightning refused it', () => {
  const { blobs, keys } = json('blobs-decrypted.json');
  const byHex = new Map<string, string>();
  let opened = 0;
  for (const b of blobs) {
    if (b.blob_hex !== undefined) byHex.set(String(b.t), b.blob_hex);
    const blob = Buffer.from(b.blob_hex ?? byHex.get(String(b.same_blob_as_t)), 'hex');
    const key = keys[b.owner];
    if (key === undefined) continue; // C and D: their keys were not captured
    if (b.mac_ok === true) {
      const backup = openChannelBackup(Buffer.from(key, 'hex'), blob);
      assert.equal(backup.timestamp, b.scb_timestamp ?? decodeStaticChanBackup(Buffer.from(b.plaintext_hex, 'hex')).timestamp);
      if (b.plaintext_hex) assert.equal(openOneMessage(Buffer.from(key, 'hex'), blob).plaintext.toString('hex'), b.plaintext_hex);
      opened++;
    } else {
      assert.throws(() => openChannelBackup(Buffer.from(key, 'hex'), blob), SecretstreamError, `t=${b.t}`);
    }
  }
  assert.ok(opened >= 40, `${opened} blobs opened`);
});

test('secretstream: the vectors libsodium 1.0.18 made (every length mod 16, every tag) open, and sealing them again under their header gives the same bytes', () => {
  const { key_hex: keyHex, vectors } = json('libsodium-secretstream-vectors.json');
  const key = Buffer.from(keyHex, 'hex');
  assert.ok(vectors.length >= 50);
  for (const v of vectors) {
    const stream = Buffer.from(v.stream_hex, 'hex');
    const { plaintext, tag } = openOneMessage(key, stream);
    assert.equal(plaintext.toString('hex'), v.message_hex);
    assert.equal(tag, v.tag);
    assert.deepEqual(sealOneMessage(key, plaintext, stream.subarray(0, 24), tag), stream);
  }
});

test("sealing the staticbackup records under the file's header gives Core Lightning's exact bytes", () => {
  const file = read('nodeA.emergency.recover');
  const records = json('nodeA.staticbackup.json').scb.map((h: string) => Buffer.from(h, 'hex'));
  const timestamp = json('nodeA.emergency.recover.decrypted.json').parsed.timestamp;
  assert.deepEqual(sealChannelBackup(keyOf('A'), records, timestamp, file.subarray(0, 24)), file);
});

test('seal then open round trips for 0 to 300 channels and messages of every length mod 16', () => {
  const key = keyOf('A');
  const [record] = openChannelBackup(key, read('nodeA.emergency.recover')).channels;
  for (const n of [0, 1, 2, 17, 300]) {
    const sealed = sealChannelBackup(key, Array(n).fill(record.raw), 1796656682);
    const back = openChannelBackup(key, sealed);
    assert.equal(back.channels.length, n);
    assert.ok(back.channels.every((c) => c.raw.equals(record.raw)));
  }
  for (let len = 0; len < 40; len++) {
    const m = Buffer.alloc(len, len);
    assert.deepEqual(openOneMessage(key, sealOneMessage(key, m)).plaintext, m);
  }
});

test('refused: every flipped byte, truncation, another node key, garbage plaintext', () => {
  const file = read('nodeA.emergency.recover');
  const key = keyOf('A');
  for (let i = 0; i < file.length; i++) {
    const bad = Buffer.from(file);
    bad[i] ^= 1 << (i % 8);
    assert.throws(() => openChannelBackup(key, bad), SecretstreamError, `byte ${i}`);
  }
  for (const n of [0, 10, 40, 41, 100, file.length - 1]) assert.throws(() => openChannelBackup(key, file.subarray(0, n)), SecretstreamError);
  assert.throws(() => openChannelBackup(keyOf('B'), file), /MAC does not verify/);
  assert.throws(() => openChannelBackup(key, sealOneMessage(key, Buffer.from('17f7', 'hex'))), /legacy SCB format/);
  assert.throws(() => openChannelBackup(key, sealOneMessage(key, Buffer.alloc(16))), /SCB message type is 0/);
});

test('fuzz: mutated plaintexts decode or throw DecodeError, never anything else', () => {
  const seed = envCount('SCB_SEED', Date.now() % 2 ** 32);
  const prng = new Prng(seed);
  const plain = openOneMessage(keyOf('A'), read('nodeA.emergency.recover')).plaintext;
  for (let i = 0; i < envCount('SCB_FUZZ', 5000); i++) {
    const m = mutated(prng, plain);
    try {
      const b = decodeStaticChanBackup(m);
      for (const c of b.channels) assert.deepEqual(encodeScbChannel(c), c.raw, `seed ${seed} trial ${i}`);
    } catch (err) {
      assert.ok(err instanceof DecodeError, `seed ${seed} trial ${i}: ${String(err)}`);
    }
  }
});
