// BOLT #1 messages of peer storage (src/peerstorage/wire): round trips, the real messages recorded
// from Core Lightning v26.06.6 (testdata/peer-storage/), bounds, and random garbage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { DecodeError } from '../src/util/bytes.js';
import { decodeMessage, encodeMessage, type LightningMessage } from '../src/peerstorage/wire/message.js';
import { initFeatures, REGTEST_CHAIN_HASH } from '../src/peerstorage/wire/init.js';
import {
  CORE_LIGHTNING_REQUIRED_BITS,
  OPTION_PROVIDE_STORAGE,
  checkRequired,
  featureField,
  offers,
  requiredBits,
  setBits,
} from '../src/peerstorage/wire/features.js';
import { pongFor } from '../src/peerstorage/wire/ping.js';
import { MAX_BLOB_BYTES } from '../src/peerstorage/wire/peerStorage.js';
import { Prng, envCount, mutated } from './helpers/prng.js';
import { testdataDir } from './helpers/paths.js';

const fixtures = path.join(testdataDir, 'peer-storage');

/** Every message hex of a recorded IO log line: `<time> <peer>-<daemon>: [IN|OUT] <hex>`. */
function recordedMessages(file: string): { direction: string; message: Buffer }[] {
  const out: { direction: string; message: Buffer }[] = [];
  for (const line of fs.readFileSync(path.join(fixtures, file), 'utf8').split('\n')) {
    const m = /\[(IN|OUT)\] ([0-9a-f]+)$/.exec(line);
    if (m) out.push({ direction: m[1], message: Buffer.from(m[2], 'hex') });
  }
  return out;
}

const recorded = [...recordedMessages('logs-A-wire.txt'), ...recordedMessages('logs-B-wire.txt')];

test('every recorded init, peer_storage and peer_storage_retrieval decodes and re-encodes byte for byte', () => {
  const counts = new Map<string, number>();
  for (const { message } of recorded) {
    const type = message.readUInt16BE(0);
    if (type === 136) continue; // channel_reestablish: a channel message this peer never speaks
    const m = decodeMessage(message);
    counts.set(m.kind, (counts.get(m.kind) ?? 0) + 1);
    assert.deepEqual(encodeMessage(m), message, `${m.kind} re-encodes to the recorded bytes`);
    if (m.kind === 'peer_storage' || m.kind === 'peer_storage_retrieval') {
      assert.equal(m.blob.length, message.readUInt16BE(2));
    }
  }
  assert.ok((counts.get('init') ?? 0) >= 10, 'the logs hold the inits of every connection');
  assert.ok((counts.get('peer_storage') ?? 0) >= 20);
  assert.ok((counts.get('peer_storage_retrieval') ?? 0) >= 5);
});

test("Core Lightning's recorded init: features, networks, remote_addr, and the bits it requires", () => {
  const inbound = recorded.find((r) => r.direction === 'IN' && r.message.readUInt16BE(0) === 16);
  assert.ok(inbound);
  const m = decodeMessage(inbound.message);
  assert.equal(m.kind, 'init');
  if (m.kind !== 'init') return;
  assert.equal(m.globalFeatures.toString('hex'), '1100');
  assert.equal(m.features.toString('hex'), '800898880a8a59a1');
  assert.deepEqual(m.networks, [REGTEST_CHAIN_HASH]);
  assert.equal(m.remoteAddress?.toString('hex'), '017f000001a720', 'ipv4 127.0.0.1 port 42784');
  const all = initFeatures(m);
  assert.ok(offers(all, OPTION_PROVIDE_STORAGE), 'Core Lightning offers option_provide_storage');
  assert.ok(setBits(all).includes(43), 'as the optional bit 43');
  assert.deepEqual(requiredBits(all), [...CORE_LIGHTNING_REQUIRED_BITS]);
  checkRequired(all, CORE_LIGHTNING_REQUIRED_BITS);
  assert.throws(() => checkRequired(all, [0, 8, 12, 14]), /option_channel_type \(bit 44, required\)/);
});

test('feature fields: bits round trip, union of globalfeatures and features', () => {
  const prng = new Prng(envCount('WIRE_SEED', 7));
  for (let i = 0; i < 200; i++) {
    const bits = [...new Set(Array.from({ length: prng.int(0, 20) }, () => prng.int(0, 300)))].sort((a, b) => a - b);
    assert.deepEqual(setBits(featureField(bits)), bits);
  }
  assert.equal(featureField([43]).toString('hex'), '080000000000');
});

const samples: LightningMessage[] = [
  { kind: 'init', globalFeatures: Buffer.alloc(0), features: featureField([43]), networks: [REGTEST_CHAIN_HASH], remoteAddress: null, otherRecords: [] },
  {
    kind: 'init',
    globalFeatures: Buffer.from('1100', 'hex'),
    features: Buffer.from('800898880a8a59a1', 'hex'),
    networks: null,
    remoteAddress: Buffer.from('017f000001a720', 'hex'),
    otherRecords: [{ type: 101n, value: Buffer.from('ab', 'hex') }],
  },
  { kind: 'ping', numPongBytes: 12, ignored: Buffer.alloc(30) },
  { kind: 'pong', ignored: Buffer.alloc(12) },
  { kind: 'warning', channelId: Buffer.alloc(32), data: Buffer.from('Unsupported feature 44') },
  { kind: 'error', channelId: Buffer.alloc(32, 7), data: Buffer.from('internal error') },
  { kind: 'peer_storage', blob: Buffer.alloc(MAX_BLOB_BYTES, 0x5a) },
  { kind: 'peer_storage_retrieval', blob: Buffer.alloc(0) },
  { kind: 'unknown', type: 32769, payload: Buffer.from('custom') },
];

test('every message round trips', () => {
  for (const m of samples) assert.deepEqual(decodeMessage(encodeMessage(m)), m, m.kind);
});

test('ping: a pong of the asked size, none from 65532 up', () => {
  assert.equal(pongFor({ numPongBytes: 65531, ignored: Buffer.alloc(0) })?.ignored.length, 65531);
  assert.equal(pongFor({ numPongBytes: 65532, ignored: Buffer.alloc(0) }), null);
  assert.equal(pongFor({ numPongBytes: 0, ignored: Buffer.alloc(0) })?.ignored.length, 0);
});

test('bounds: oversize, truncated and malformed messages are refused by name', () => {
  const refuse = (hex: string | Buffer, pattern: RegExp) =>
    assert.throws(
      () => decodeMessage(typeof hex === 'string' ? Buffer.from(hex, 'hex') : hex),
      (e: unknown) => e instanceof DecodeError && pattern.test(e.message),
    );
  refuse('00', /at least its 2-byte type/);
  refuse(Buffer.alloc(65536), /at most 65535 bytes/);
  refuse('0007fffc' + '00'.repeat(10), /65532 bytes, more than the 65531/);
  refuse('00070064' + '00'.repeat(10), /says 100 bytes but only 10 follow/);
  refuse('000900', /ends inside peer_storage_retrieval length/);
  refuse('0010000000', /ends inside init features length/);
  refuse('0010000000000102aabb', /networks is 2 bytes, not a multiple of 32/);
  refuse('00100000000003000100', /not strictly increasing/);
  refuse('00100000000003000300', /not strictly increasing \(3 after 3\)/);
  refuse('001000000000020100', /unknown even TLV type 2/);
  refuse('00100000000001fd0001', /not minimally encoded/);
  refuse('0010000000000105aa', /5 bytes, more than the 1 left/);
  refuse('0012', /ends inside ping num_pong_bytes/);
  refuse('00110000', /ends inside error channel_id/);
  refuse('0064', /unknown even message type 100/);
  refuse('00070001000000', /unknown even TLV type 0/);
  refuse('000700010002000000', /unknown even TLV type 2/);
  assert.throws(() => encodeMessage({ kind: 'peer_storage', blob: Buffer.alloc(MAX_BLOB_BYTES + 1) }), RangeError);
});

test('fuzz: random bytes and mutated messages either decode to a message that re-encodes, or throw DecodeError', () => {
  const seed = envCount('WIRE_SEED', Date.now() % 2 ** 32);
  const prng = new Prng(seed);
  const types = [1, 7, 9, 16, 17, 18, 19];
  const seeds = [...samples.map(encodeMessage), ...recorded.map((r) => r.message).filter((m) => m.readUInt16BE(0) !== 136)];
  const trials = envCount('WIRE_FUZZ', 20000);
  let decoded = 0;
  for (let i = 0; i < trials; i++) {
    let input: Buffer;
    if (prng.next() < 0.5) {
      input = Buffer.alloc(prng.int(0, prng.next() < 0.1 ? 70000 : 80));
      for (let j = 0; j < input.length; j++) input[j] = prng.int(0, 255);
      if (input.length >= 2) input.writeUInt16BE(prng.pick(types), 0);
    } else {
      input = mutated(prng, prng.pick(seeds));
    }
    let m: LightningMessage;
    try {
      m = decodeMessage(input);
    } catch (err) {
      assert.ok(err instanceof DecodeError, `seed ${seed} trial ${i}: ${String(err)} is not a DecodeError`);
      continue;
    }
    decoded++;
    assert.deepEqual(decodeMessage(encodeMessage(m)), m, `seed ${seed} trial ${i}`);
  }
  assert.ok(decoded > 0, 'some inputs decode');
});
