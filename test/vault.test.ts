// Tests of src/vault and the payload codecs: the AEAD against noble's reference XChaCha20-Poly1305,
// header bounds, payload decoders under fuzzing, the writer's durability across reopen, torn-tail
// repair, the single-writer lock against real child processes, and segment rotation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { xchacha20poly1305 } from '@noble/ciphers/chacha';
import { open, seal, KEY_BYTES, NONCE_BYTES, TAG_BYTES } from '../src/vault/aead.js';
import { BODY_PREFIX_BYTES, decodeBody, decodeHeader, encodeHeader, FormatError, HEADER_BYTES, MAX_SEALED_BYTES, RecordType } from '../src/vault/format.js';
import {
  decodeSnapshotBegin,
  decodeSnapshotChunk,
  decodeSnapshotEnd,
  decodeWrites,
  encodeSnapshotBegin,
  encodeSnapshotChunk,
  encodeSnapshotEnd,
  encodeWrites,
} from '../src/journal/payloads.js';
import { createIdentity, vaultIdBytes, type VaultIdentity } from '../src/vault/identity.js';
import { vaultKeysFromRoot, type VaultKeys } from '../src/vault/keys.js';
import { LOCK_FILE, VaultLock } from '../src/vault/lock.js';
import { processAlive } from '../src/util/processAlive.js';
import { VaultReader, type StoredRecord } from '../src/vault/reader.js';
import { RecordSealer, type SealedRecord } from '../src/vault/sealer.js';
import { listSegments, segmentName, segmentsDir } from '../src/vault/segments.js';
import { VaultWriter } from '../src/vault/writer.js';
import { CorruptRecordError, VaultError } from '../src/vault/errors.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import { tempDir } from './helpers/paths.js';
import { Prng } from './helpers/prng.js';
import { dumpFile, dumpOf, effectiveWrites, node3Calls, plainReplay } from './helpers/reference.js';
import { makeNode } from './helpers/testNode.js';
import { feedNode } from './helpers/vaultFixture.js';

// ---------------------------------------------------------------------------------------------
// AEAD

test('aead: seal equals noble xchacha20poly1305 for random keys, nonces, AD and lengths; open inverts it', () => {
  for (const len of [0, 1, 15, 16, 63, 64, 65, 1000, 1024 * 1024]) {
    for (const adLen of [0, 1, 60]) {
      const key = crypto.randomBytes(KEY_BYTES);
      const nonce = crypto.randomBytes(NONCE_BYTES);
      const ad = crypto.randomBytes(adLen);
      const plain = crypto.randomBytes(len);
      const ours = seal(key, nonce, ad, [plain]);
      const ref = Buffer.from(xchacha20poly1305(key, nonce, ad).encrypt(plain));
      assert.equal(ours.length, len + TAG_BYTES);
      assert.ok(ours.equals(ref), `seal differs from noble for length ${len}, AD ${adLen}`);
      const back = open(key, nonce, ad, ref);
      assert.ok(back !== null && back.equals(plain), `open fails on noble's output for length ${len}`);
      if (len === 1024 * 1024) break; // one AD size is enough for the big one
    }
  }
});

test('aead: a flipped ciphertext/tag byte, another AD, key or nonce, or a short input fails to open (null)', () => {
  const key = crypto.randomBytes(32);
  const nonce = crypto.randomBytes(24);
  const ad = crypto.randomBytes(60);
  const plain = crypto.randomBytes(200);
  const sealed = seal(key, nonce, ad, [plain]);
  for (const at of [0, 1, 100, 199, 200, 215]) {
    const bad = Buffer.from(sealed);
    bad[at] ^= 0x01;
    assert.equal(open(key, nonce, ad, bad), null, `byte ${at} flipped`);
  }
  for (const at of [0, 30, 59]) {
    const badAd = Buffer.from(ad);
    badAd[at] ^= 0x80;
    assert.equal(open(key, nonce, badAd, sealed), null, `AD byte ${at} flipped`);
  }
  assert.equal(open(key, nonce, ad.subarray(0, 59), sealed), null, 'shorter AD');
  assert.equal(open(key, nonce, Buffer.concat([ad, Buffer.alloc(1)]), sealed), null, 'longer AD');
  const otherKey = Buffer.from(key);
  otherKey[31] ^= 1;
  assert.equal(open(otherKey, nonce, ad, sealed), null);
  const otherNonce = Buffer.from(nonce);
  otherNonce[0] ^= 1; // in the HChaCha part
  assert.equal(open(key, otherNonce, ad, sealed), null);
  const otherNonce2 = Buffer.from(nonce);
  otherNonce2[23] ^= 1; // in the ChaCha IV part
  assert.equal(open(key, otherNonce2, ad, sealed), null);
  assert.equal(open(key, nonce, ad, sealed.subarray(0, sealed.length - 1)), null, 'truncated');
  assert.equal(open(key, nonce, ad, sealed.subarray(0, TAG_BYTES - 1)), null, 'shorter than a tag');
  assert.equal(open(key, nonce, ad, Buffer.alloc(0)), null, 'empty');
  assert.ok(open(key, nonce, ad, sealed)?.equals(plain));
  assert.throws(() => seal(key.subarray(0, 31), nonce, ad, [plain]), /key must be 32 bytes/);
  assert.throws(() => seal(key, nonce.subarray(0, 12), ad, [plain]), /nonce must be 24 bytes/);
});

// ---------------------------------------------------------------------------------------------
// Header and body bounds

const MIN_SEALED = BODY_PREFIX_BYTES + TAG_BYTES;

function header(sealedLength = 100, seq = 7n): Buffer {
  return encodeHeader(sealedLength, seq, crypto.randomBytes(NONCE_BYTES));
}

function refuses(h: Buffer, pattern: RegExp): void {
  assert.throws(
    () => decodeHeader(h),
    (err: unknown) => err instanceof FormatError && pattern.test(err.message),
  );
}

test('decodeHeader: round trip, and refusal of bad magic, version, reserved bytes, lengths and seq 0', () => {
  const nonce = crypto.randomBytes(NONCE_BYTES);
  const h = encodeHeader(12345, 0x0102030405060708n, nonce);
  assert.equal(h.length, HEADER_BYTES);
  const d = decodeHeader(h);
  assert.equal(d.sealedLength, 12345);
  assert.equal(d.seq, 0x0102030405060708n);
  assert.ok(d.nonce.equals(nonce));
  // The nonce is a copy: changing the buffer afterwards does not change the decoded header.
  h[20] ^= 0xff;
  assert.ok(d.nonce.equals(nonce));

  refuses(header().subarray(0, HEADER_BYTES - 1), /truncated/);
  refuses(Buffer.alloc(0), /truncated/);
  for (let i = 0; i < 4; i++) {
    const b = header();
    b[i] ^= 0x20;
    refuses(b, /bad magic/);
  }
  for (const v of [0, 2, 255]) {
    const b = header();
    b[4] = v;
    refuses(b, new RegExp(`unsupported record format version ${v}`));
  }
  for (const i of [5, 6, 7]) {
    const b = header();
    b[i] = 1;
    refuses(b, /reserved header bytes/);
  }
  for (const len of [0, 1, MIN_SEALED - 1, MAX_SEALED_BYTES + 1, 0x7fffffff, 0xffffffff]) {
    const b = header();
    b.writeUInt32BE(len, 8);
    refuses(b, new RegExp(`sealed length ${len} is out of bounds`));
  }
  for (const len of [MIN_SEALED, MAX_SEALED_BYTES]) {
    const b = header();
    b.writeUInt32BE(len, 8);
    assert.equal(decodeHeader(b).sealedLength, len);
  }
  refuses(header(100, 0n), /sequence number 0/);
  assert.equal(decodeHeader(header(100, 0xffffffffffffffffn)).seq, 0xffffffffffffffffn);
  // A longer buffer is fine: only the first 44 bytes are the header.
  assert.equal(decodeHeader(Buffer.concat([header(100, 3n), Buffer.alloc(10, 0xee)])).seq, 3n);
});

test('decodeHeader: a header claiming 4 GiB is refused without allocating it', () => {
  const b = header();
  b.writeUInt32BE(0xffffffff, 8);
  const before = process.memoryUsage().arrayBuffers;
  for (let i = 0; i < 100; i++) refuses(b, /out of bounds/);
  assert.ok(process.memoryUsage().arrayBuffers - before < 16 * 1024 * 1024);
});

test('decodeBody: refuses a short body and unknown record types with FormatError', () => {
  assert.throws(() => decodeBody(Buffer.alloc(BODY_PREFIX_BYTES - 1, 1)), FormatError);
  for (const t of [0, 8, 9, 127, 255]) {
    const p = Buffer.alloc(BODY_PREFIX_BYTES);
    p[0] = t;
    assert.throws(
      () => decodeBody(p),
      (e: unknown) => e instanceof FormatError && /unknown record type/.test(e.message),
      `type ${t}`,
    );
  }
  const p = Buffer.alloc(BODY_PREFIX_BYTES + 3);
  p[0] = RecordType.SnapshotEnd;
  p.writeUInt32BE(9, 4);
  p.writeUInt32BE(4294967295, 8);
  p.writeBigUInt64BE(77n, 12);
  p.fill(0xab, 20, 52);
  p.fill(0xcd, 52);
  const b = decodeBody(p);
  assert.deepEqual([b.type, b.generation, b.dataVersion, b.supersedes], [RecordType.SnapshotEnd, 9, 4294967295, 77n]);
  assert.ok(b.prevHash.equals(Buffer.alloc(32, 0xab)));
  assert.ok(b.payload.equals(Buffer.alloc(3, 0xcd)));
});

// ---------------------------------------------------------------------------------------------
// Payload codecs

test('payloads: round trips and precise refusals (counts and lengths beyond the buffer, trailing bytes)', () => {
  const writes = ['', 'a', "INSERT INTO t VALUES ('é🙂')", 'x'.repeat(70_000)];
  assert.deepEqual(decodeWrites(encodeWrites(writes)), writes);
  assert.deepEqual(decodeWrites(encodeWrites([])), []);
  assert.equal(encodeWrites([]).length, 4);

  const enc = encodeWrites(['abc', 'de']);
  const bad = (b: Buffer, pattern: RegExp): void => {
    assert.throws(
      () => decodeWrites(b),
      (e: unknown) => e instanceof FormatError && pattern.test(e.message),
    );
  };
  bad(Buffer.alloc(0), /truncated/);
  bad(Buffer.alloc(3), /truncated/);
  bad(Buffer.concat([enc, Buffer.alloc(1)]), /trailing bytes/);
  bad(enc.subarray(0, enc.length - 1), /statement 2 length 2 is out of bounds/);
  bad(enc.subarray(0, 4 + 4 + 3 + 2), /statement 2 is truncated/);
  const c = Buffer.from(enc);
  c.writeUInt32BE(0xffffffff, 0); // 4 billion statements claimed in 17 bytes
  bad(c, /statement count 4294967295 is out of bounds/);
  const c2 = Buffer.from(enc);
  c2.writeUInt32BE(3, 0);
  bad(c2, /statement count 3 is out of bounds|statement 3 is truncated/);
  const l = Buffer.from(enc);
  l.writeUInt32BE(0xffffffff, 4); // first statement 4 GiB long
  bad(l, /statement 1 length 4294967295 is out of bounds/);
  const one = Buffer.from(enc);
  one.writeUInt32BE(1, 0);
  bad(one, /trailing bytes/);

  const begin = { dbBytes: 123456789, takenAt: 1_700_000_000_000 };
  assert.deepEqual(decodeSnapshotBegin(encodeSnapshotBegin(begin)), begin);
  assert.throws(() => decodeSnapshotBegin(Buffer.alloc(15)), FormatError);
  assert.throws(() => decodeSnapshotBegin(Buffer.alloc(17)), FormatError);
  const huge = Buffer.alloc(16);
  huge.writeBigUInt64BE(2n ** 63n, 0);
  assert.throws(
    () => decodeSnapshotBegin(huge),
    (e: unknown) => e instanceof FormatError && /database size/.test(e.message),
  );

  const chunk = decodeSnapshotChunk(encodeSnapshotChunk(1 << 20, Buffer.from('hello')));
  assert.equal(chunk.offset, 1 << 20);
  assert.equal(chunk.bytes.toString(), 'hello');
  assert.deepEqual(decodeSnapshotChunk(encodeSnapshotChunk(0, Buffer.alloc(0))).bytes.length, 0);
  assert.throws(() => decodeSnapshotChunk(Buffer.alloc(7)), FormatError);
  const farChunk = Buffer.alloc(9);
  farChunk.writeBigUInt64BE(0xffffffffffffffffn, 0);
  assert.throws(
    () => decodeSnapshotChunk(farChunk),
    (e: unknown) => e instanceof FormatError && /chunk offset/.test(e.message),
  );

  const end = { dbBytes: 42, sha256: crypto.randomBytes(32) };
  const endBack = decodeSnapshotEnd(encodeSnapshotEnd(end));
  assert.equal(endBack.dbBytes, 42);
  assert.ok(endBack.sha256.equals(end.sha256));
  assert.throws(() => decodeSnapshotEnd(Buffer.alloc(39)), FormatError);
  assert.throws(() => decodeSnapshotEnd(Buffer.alloc(41)), FormatError);
});

function randomBuffer(rng: Prng, maxLen: number): Buffer {
  const b = Buffer.alloc(Math.floor(rng.next() * (maxLen + 1)));
  for (let i = 0; i < b.length; i++) b[i] = Math.floor(rng.next() * 256);
  return b;
}

/** Random statement lists that are almost well-formed: small counts and lengths, then damage. */
function nearWrites(rng: Prng): Buffer {
  const n = Math.floor(rng.next() * 4);
  const parts: Buffer[] = [Buffer.alloc(4)];
  parts[0].writeUInt32BE(rng.next() < 0.8 ? n : Math.floor(rng.next() * 0xffffffff), 0);
  for (let i = 0; i < n; i++) {
    const s = randomBuffer(rng, 12);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(rng.next() < 0.8 ? s.length : Math.floor(rng.next() * 0xffffffff), 0);
    parts.push(len, s);
  }
  let b = Buffer.concat(parts);
  const r = rng.next();
  if (r < 0.2) b = b.subarray(0, Math.floor(rng.next() * b.length));
  else if (r < 0.4) b = Buffer.concat([b, randomBuffer(rng, 6)]);
  return b;
}

test('payloads fuzz: decoders return or throw FormatError, never anything else', () => {
  const seed = Date.now() >>> 0;
  const rng = new Prng(seed);
  const decoders: [string, (b: Buffer) => unknown][] = [
    ['decodeWrites', decodeWrites],
    ['decodeSnapshotBegin', decodeSnapshotBegin],
    ['decodeSnapshotChunk', decodeSnapshotChunk],
    ['decodeSnapshotEnd', decodeSnapshotEnd],
    ['decodeBody', decodeBody],
    ['decodeHeader', decodeHeader],
  ];
  let accepted = 0;
  let refused = 0;
  for (let i = 0; i < 4000; i++) {
    const inputs = [randomBuffer(rng, 80), nearWrites(rng)];
    // Buffers of the sizes the fixed-size decoders accept, and headers with the magic and version.
    const fixed = Buffer.alloc([8, 9, 16, 40, 44, 52, 60][i % 7]);
    for (let j = 0; j < fixed.length; j++) fixed[j] = rng.next() < 0.3 ? 0 : Math.floor(rng.next() * 256);
    inputs.push(fixed);
    const h = Buffer.alloc(44);
    for (let j = 0; j < h.length; j++) h[j] = Math.floor(rng.next() * 256);
    h.write('LNBK', 0, 'latin1');
    h[4] = 1;
    if (rng.next() < 0.5) h.fill(0, 5, 8);
    inputs.push(h);
    for (const input of inputs) {
      for (const [name, decode] of decoders) {
        try {
          decode(input);
          accepted++;
        } catch (err) {
          if (!(err instanceof FormatError)) {
            assert.fail(`${name} threw ${(err as Error).name}: ${(err as Error).message} for ${input.toString('hex')} (seed ${seed})`);
          }
          refused++;
        }
      }
    }
  }
  assert.ok(accepted > 1000 && refused > 1000, `fuzz reached too few paths (seed ${seed}): ${accepted} accepted, ${refused} refused`);
  // Near-valid statement lists decode exactly the count they claim when accepted.
  for (let i = 0; i < 2000; i++) {
    const b = nearWrites(rng);
    try {
      const list = decodeWrites(b);
      assert.equal(list.length, b.readUInt32BE(0));
    } catch (err) {
      assert.ok(err instanceof FormatError, `seed ${seed}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Writer, reader, lock, segments (records sealed directly, no journal)

interface RawVault {
  dir: string;
  keys: VaultKeys;
  rootHex: string;
  identity: VaultIdentity;
}

function rawVault(prefix: string, segmentBytes = 1 << 20): RawVault {
  const dir = path.join(tempDir(prefix), 'vault');
  fs.mkdirSync(dir);
  const root = crypto.randomBytes(32);
  const keys = vaultKeysFromRoot(root);
  const identity = createIdentity(dir, keys, null, segmentBytes);
  return { dir, keys, rootHex: root.toString('hex'), identity };
}

function sealerFor(v: RawVault, writer: VaultWriter): RecordSealer {
  return new RecordSealer(v.keys.record, vaultIdBytes(v.identity), writer.tail);
}

function makeRecord(sealer: RecordSealer, dataVersion: number, payloadBytes = 100, generation = 1): SealedRecord {
  return sealer.seal({ type: RecordType.Writes, generation, dataVersion, supersedes: 0n, payload: crypto.randomBytes(payloadBytes) });
}

/** Opens a writer, appends `count` records (versions from `firstVersion`), syncs and closes. */
function appendRecords(v: RawVault, count: number, firstVersion: number, payloadBytes = 100): SealedRecord[] {
  const w = VaultWriter.open(v.dir, v.keys);
  try {
    const s = sealerFor(v, w);
    const out: SealedRecord[] = [];
    for (let i = 0; i < count; i++) {
      const r = makeRecord(s, firstVersion + i, payloadBytes);
      w.append(r);
      out.push(r);
    }
    w.sync();
    return out;
  } finally {
    w.close();
  }
}

function readAll(v: RawVault): { records: StoredRecord[]; reader: VaultReader } {
  const reader = new VaultReader(v.identity, v.keys, v.dir);
  return { records: [...reader.records()], reader };
}

function lastSegmentPath(dir: string): string {
  const segs = listSegments(dir);
  return segs[segs.length - 1].path;
}

test('writer: records survive close and reopen; the chain continues; the reader proves it', () => {
  const v = rawVault('writer');
  const first = appendRecords(v, 5, 1);
  assert.ok(!fs.existsSync(path.join(v.dir, LOCK_FILE)), 'close releases the lock');
  const seen: bigint[] = [];
  const w = VaultWriter.open(v.dir, v.keys, { onRecord: (r) => seen.push(r.seq) });
  assert.deepEqual(seen, [1n, 2n, 3n, 4n, 5n]);
  assert.equal(w.tail.lastSeq, 5n);
  assert.ok(w.tail.lastHash.equals(first[4].hash));
  assert.equal(w.tail.generation, 1);
  const s = sealerFor(v, w);
  const more = [makeRecord(s, 6), makeRecord(s, 7)];
  for (const r of more) w.append(r);
  // A record out of order is refused before anything is written.
  const stray = new RecordSealer(v.keys.record, vaultIdBytes(v.identity), { lastSeq: 2n, lastHash: first[1].hash, generation: 1 });
  assert.throws(() => w.append(makeRecord(stray, 3)), /record 3 does not follow record 7/);
  w.close();
  const { records, reader } = readAll(v);
  assert.equal(reader.tornTail, null);
  assert.deepEqual(
    records.map((r) => r.seq),
    [1n, 2n, 3n, 4n, 5n, 6n, 7n],
  );
  assert.deepEqual(
    records.map((r) => r.body.dataVersion),
    [1, 2, 3, 4, 5, 6, 7],
  );
  const all = [...first, ...more];
  for (let i = 0; i < all.length; i++) {
    assert.ok(records[i].hash.equals(all[i].hash));
    const stored = fs.readFileSync(records[i].segment.path).subarray(records[i].offset, records[i].offset + records[i].size);
    assert.ok(stored.equals(all[i].bytes), 'the stored bytes are exactly the sealed record');
  }
  assert.equal(listSegments(v.dir).length, 1);
});

test('writer: a torn tail (half a record, a cut header, zeros, all but one byte) is cut off at open with a notice; the chain continues', () => {
  const cases: [string, (rec: Buffer) => Buffer][] = [
    ['half a record', (rec) => rec.subarray(0, rec.length >> 1)],
    ['a cut header', (rec) => rec.subarray(0, 20)],
    ['all but the last byte', (rec) => rec.subarray(0, rec.length - 1)],
    ['only the header', (rec) => rec.subarray(0, HEADER_BYTES)],
    ['zeros', () => Buffer.alloc(300)],
    ['a few zeros', () => Buffer.alloc(5)],
  ];
  for (const [what, tear] of cases) {
    const v = rawVault('torn');
    appendRecords(v, 3, 1);
    const seg = lastSegmentPath(v.dir);
    const goodSize = fs.statSync(seg).size;
    // The record that was being written when the machine died: seq 4.
    const w0 = VaultWriter.open(v.dir, v.keys);
    const torn = tear(makeRecord(sealerFor(v, w0), 4).bytes);
    w0.close();
    fs.appendFileSync(seg, torn);

    const before = readAll(v);
    assert.deepEqual(
      before.records.map((r) => r.seq),
      [1n, 2n, 3n],
      what,
    );
    assert.deepEqual(before.reader.tornTail, { segment: path.basename(seg), offset: goodSize, bytes: torn.length }, what);

    const notices: string[] = [];
    const w = VaultWriter.open(v.dir, v.keys, { onNotice: (m) => notices.push(m) });
    assert.equal(notices.length, 1, what);
    assert.match(notices[0], new RegExp(`cut off a torn record \\(${torn.length} bytes at ${path.basename(seg)}:${goodSize}\\)`), what);
    assert.equal(fs.statSync(seg).size, goodSize, what);
    assert.equal(w.tail.lastSeq, 3n, what);
    const next = makeRecord(sealerFor(v, w), 4);
    w.append(next);
    w.close();
    const { records, reader } = readAll(v);
    assert.equal(reader.tornTail, null, what);
    assert.deepEqual(
      records.map((r) => r.seq),
      [1n, 2n, 3n, 4n],
      what,
    );
    assert.ok(records[3].hash.equals(next.hash), what);
  }
});

test('writer: a new segment holding only a torn record, or an empty one, is repaired; garbage that is not a torn record is refused', () => {
  const v = rawVault('torn-seg', 4096);
  appendRecords(v, 4, 1, 2000); // 4 records of ~2 KiB: two full segments
  const segsBefore = listSegments(v.dir);
  assert.deepEqual(
    segsBefore.map((s) => s.firstSeq),
    [1n, 3n],
  );
  // The writer rotated to a new segment for seq 5 and died while writing it.
  const w0 = VaultWriter.open(v.dir, v.keys);
  const rec5 = makeRecord(sealerFor(v, w0), 5, 2000);
  w0.close();
  const newSeg = path.join(segmentsDir(v.dir), segmentName(1, 5n));
  fs.writeFileSync(newSeg, rec5.bytes.subarray(0, 1000));
  const notices: string[] = [];
  const w = VaultWriter.open(v.dir, v.keys, { onNotice: (m) => notices.push(m) });
  assert.equal(notices.length, 1);
  assert.match(notices[0], /cut off a torn record \(1000 bytes at g0000000001-s00000000000000000005\.seg:0\)/);
  assert.equal(w.tail.lastSeq, 4n);
  w.append(makeRecord(sealerFor(v, w), 5, 2000));
  w.close();
  assert.deepEqual(
    readAll(v).records.map((r) => r.seq),
    [1n, 2n, 3n, 4n, 5n],
  );
  assert.deepEqual(
    listSegments(v.dir).map((s) => s.firstSeq),
    [1n, 3n, 5n],
  );

  // An empty segment file (created, nothing written) is removed.
  const empty = path.join(segmentsDir(v.dir), segmentName(1, 6n));
  fs.writeFileSync(empty, '');
  const notices2: string[] = [];
  VaultWriter.open(v.dir, v.keys, { onNotice: (m) => notices2.push(m) }).close();
  assert.deepEqual(notices2, [`removed the empty segment file ${path.basename(empty)}; it held no acknowledged record`]);
  assert.ok(!fs.existsSync(empty));

  // Random bytes after the last record are not a torn record: refused, nothing cut off.
  const last = lastSegmentPath(v.dir);
  const size = fs.statSync(last).size;
  fs.appendFileSync(last, Buffer.concat([Buffer.from('garbage!'), crypto.randomBytes(100)]));
  assert.throws(
    () => VaultWriter.open(v.dir, v.keys),
    (e: unknown) => e instanceof CorruptRecordError && /record 6 .*bad magic/.test(e.message),
  );
  assert.equal(fs.statSync(last).size, size + 108);
  assert.ok(!fs.existsSync(path.join(v.dir, LOCK_FILE)), 'a failed open releases the lock');
});

test('reader: a header claiming the largest record, or a segment larger than any writer makes, is handled without reading it whole', () => {
  const v = rawVault('bounds', 4096);
  appendRecords(v, 4, 1, 2000);
  const segs = listSegments(v.dir);
  assert.equal(segs.length, 2);
  // A header that claims MAX_SEALED_BYTES at the end of the last segment: a torn tail, nothing allocated.
  const fake = header(MAX_SEALED_BYTES, 5n);
  fs.appendFileSync(segs[1].path, fake);
  const before = process.memoryUsage().arrayBuffers;
  const { records, reader } = readAll(v);
  assert.ok(process.memoryUsage().arrayBuffers - before < 32 * 1024 * 1024);
  assert.equal(records.length, 4);
  assert.equal(reader.tornTail?.bytes, HEADER_BYTES);
  // In a middle segment the same header is damage, named precisely.
  fs.appendFileSync(segs[0].path, fake);
  assert.throws(
    () => readAll(v),
    (e: unknown) => e instanceof CorruptRecordError && e.location.expectedSeq === 3n && e.location.segment === segs[0].name && /truncated/.test(e.reason),
  );
  // A (sparse) segment larger than segmentBytes + the largest record is refused before reading.
  fs.truncateSync(segs[0].path, 4096 + HEADER_BYTES + MAX_SEALED_BYTES + 1);
  assert.throws(
    () => readAll(v),
    (e: unknown) => e instanceof CorruptRecordError && /larger than any writer makes/.test(e.reason),
  );
});

// Lock: real child processes.

const distSrc = (p: string): string => new URL(`../src/${p}`, import.meta.url).href;

/** A child that opens a VaultWriter on `dir` and keeps it while alive (prints "ready"), or prints its error and exits 1. */
const CHILD_WRITER = `
const { VaultWriter } = await import(process.env.WRITER_URL);
const { vaultKeysFromRoot } = await import(process.env.KEYS_URL);
const keys = vaultKeysFromRoot(Buffer.from(process.env.ROOT_HEX, 'hex'));
try {
  VaultWriter.open(process.env.VAULT_DIR, keys);
  process.stdout.write('ready\\n');
  setInterval(() => {}, 1000);
} catch (err) {
  process.stderr.write(err.name + ': ' + err.message + '\\n');
  process.exit(1);
}
`;

function childEnv(v: RawVault): NodeJS.ProcessEnv {
  return { ...process.env, WRITER_URL: distSrc('vault/writer.js'), KEYS_URL: distSrc('vault/keys.js'), ROOT_HEX: v.rootHex, VAULT_DIR: v.dir };
}

async function startChildWriter(v: RawVault): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD_WRITER], { env: childEnv(v), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) resolve();
    });
    child.on('exit', (code) => reject(new Error(`child writer exited ${code}: ${err}`)));
  });
  return child;
}

test('lock: a live writer in another process is refused with its pid; its lock is taken over once it is SIGKILLed', async () => {
  const v = rawVault('lock');
  appendRecords(v, 2, 1);
  const child = await startChildWriter(v);
  try {
    const lockFile = path.join(v.dir, LOCK_FILE);
    assert.equal((JSON.parse(fs.readFileSync(lockFile, 'utf8')) as { pid: number }).pid, child.pid);
    assert.throws(
      () => VaultWriter.open(v.dir, v.keys),
      (e: unknown) => e instanceof VaultError && e.message.includes(`in use by process ${child.pid}`) && /only one writer/.test(e.message),
    );
    // The refused open did not steal or delete the child's lock.
    assert.equal((JSON.parse(fs.readFileSync(lockFile, 'utf8')) as { pid: number }).pid, child.pid);

    child.kill('SIGKILL');
    await once(child, 'exit');
    assert.ok(fs.existsSync(lockFile), 'a SIGKILLed writer leaves its lock file');
    const w = VaultWriter.open(v.dir, v.keys);
    assert.equal((JSON.parse(fs.readFileSync(lockFile, 'utf8')) as { pid: number }).pid, process.pid);
    assert.equal(w.tail.lastSeq, 2n);
    w.close();
    assert.ok(!fs.existsSync(lockFile));
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
});

test('lock: a child process cannot open a vault this process writes; a half-written lock file is taken over', () => {
  const v = rawVault('lock2');
  appendRecords(v, 1, 1);
  const w = VaultWriter.open(v.dir, v.keys);
  try {
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', CHILD_WRITER], { env: childEnv(v), encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`VaultError: the vault at .* is in use by process ${process.pid}`));
    assert.ok(!r.stderr.includes(v.rootHex));
  } finally {
    w.close();
  }
  // The lock file of a writer that died between creating and filling it (empty, or not JSON).
  for (const content of ['', '{"pid":', 'not json']) {
    fs.writeFileSync(path.join(v.dir, LOCK_FILE), content);
    const w2 = VaultWriter.open(v.dir, v.keys);
    assert.equal(w2.tail.lastSeq, 1n);
    w2.close();
  }
});

test('lock: a second writer in the same process is refused', () => {
  const v = rawVault('lock3');
  appendRecords(v, 1, 1);
  const a = VaultWriter.open(v.dir, v.keys);
  let b: VaultWriter | null = null;
  try {
    assert.throws(() => {
      b = VaultWriter.open(v.dir, v.keys);
    }, VaultError);
  } finally {
    (b as VaultWriter | null)?.close();
    a.close();
  }
});

// Segment rotation through the whole stack.

test('segments: a 4 KiB segment size rotates into many files (named by their first record) and still restores exactly', () => {
  const node = makeNode('rotate', { segmentBytes: 4096 });
  const calls = node3Calls();
  // Write in three lifetimes (close, reopen) to rotate across reopened segments too.
  feedNode(node, calls.slice(0, 100));
  feedNode(node, calls.slice(100, 250));
  feedNode(node, calls.slice(250));
  const segs = listSegments(node.vault);
  assert.ok(segs.length >= 20, `only ${segs.length} segments`);
  const identity = JSON.parse(fs.readFileSync(path.join(node.vault, 'VAULT.json'), 'utf8')) as VaultIdentity;
  assert.equal(identity.segmentBytes, 4096);
  const records = [...new VaultReader(identity, node.keys, node.vault).records()];
  // The empty database's snapshot: SnapshotBegin, PackList, SnapshotEnd.
  assert.equal(records.length, 3 + calls.length);
  for (let i = 0; i < segs.length; i++) {
    const inSeg = records.filter((r) => r.segment.name === segs[i].name);
    assert.ok(inSeg.length > 0);
    assert.equal(inSeg[0].seq, segs[i].firstSeq, 'a segment is named by its first record');
    assert.equal(inSeg[0].offset, 0);
    const size = fs.statSync(segs[i].path).size;
    if (i < segs.length - 1) {
      // Rotation happens at the first record that starts at or beyond segmentBytes.
      assert.ok(size >= 4096, `${segs[i].name} is ${size} bytes`);
      assert.ok(inSeg[inSeg.length - 1].offset < 4096, `${segs[i].name} got a record past its size limit`);
    }
  }
  const to = path.join(node.dir, 'restored.sqlite3');
  const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to });
  assert.equal(r.version, 431);
  assert.ok(dumpFile(to) === dumpOf(plainReplay(effectiveWrites(calls))), 'restore from many segments differs from the plain replay');
  assert.equal(verifyVault(node.vault, node.keys).ok, true);
});

test('lock: a lock left by a dead but unreaped writer (a zombie) is taken over', async () => {
  // `sleep 0.05 &` becomes a child of `sleep 3`, which never reaps it: a zombie for ~3 s.
  const parent = spawn('sh', ['-c', 'sleep 0.05 & exec sleep 3']);
  try {
    await new Promise((r) => setTimeout(r, 300));
    const zombie = Number(execFileSync('pgrep', ['-P', String(parent.pid)], { encoding: 'utf8' }).trim());
    assert.ok(zombie > 0);
    assert.equal(processAlive(zombie), false);
    assert.equal(processAlive(parent.pid ?? -1), true);
    const dir = tempDir('zombie-lock');
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: zombie, host: os.hostname(), since: 'then' }));
    const lock = VaultLock.acquire(dir);
    assert.equal(JSON.parse(fs.readFileSync(path.join(dir, LOCK_FILE), 'utf8')).pid, process.pid);
    lock.release();
  } finally {
    parent.kill('SIGKILL');
  }
});
