// The redundancy building blocks, on real bytes: the Reed-Solomon library through its wrapper
// (hundreds of encode + reconstruct calls with random erasures, every byte checked), the parity
// file format (both header copies, bounds on every length read from it), the documented tolerance
// at its exact edge (one byte more is refused, and reported exactly), and the tail mirror's frames.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { encodeStripe, reconstructStripe } from '../src/vault/redundancy/reedSolomon.js';
import {
  BLOCK_BYTES,
  buildParityFile,
  checkWithParity,
  contiguousTolerance,
  geometry,
  headerBytes,
  parityFileBytes,
  parseParityFile,
  protectFile,
} from '../src/vault/redundancy/parity.js';
import { checkWithMirror, frameHeader, mirrorHeader, mirrorOf, parseMirror } from '../src/vault/redundancy/mirror.js';
import { readProtected } from '../src/vault/redundancy/protectedRead.js';
import { checkIdentity, IDENTITY_COPY_NAME, identityCopyBytes } from '../src/vault/redundancy/identityCopy.js';
import { IDENTITY_FILE as IDENTITY_NAME } from '../src/vault/format.js';
import { envCount, Prng } from './helpers/prng.js';
import { tempDir } from './helpers/paths.js';

const seed = envCount('REDUNDANCY_SEED', crypto.randomInt(0, 0xffffffff));
console.log(`# redundancy seed ${seed} (rerun with REDUNDANCY_SEED=${seed})`);

function randomBytes(rng: Prng, n: number): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = rng.int(0, 255);
  return b;
}

test('reed-solomon: 300 encode + reconstruct calls with random erasures (up to m) give back every byte', async () => {
  const rng = new Prng(seed);
  const calls = envCount('RS_CALLS', 300);
  for (let t = 0; t < calls; t++) {
    const k = rng.pick([1, 2, 5, 10, 24]);
    const m = rng.pick([1, 2, 3, 6]);
    const blockBytes = 8 * rng.int(1, 512);
    const data = randomBytes(rng, k * blockBytes);
    const parity = Buffer.alloc(m * blockBytes);
    await encodeStripe(k, m, data, parity, blockBytes);
    const wantData = Buffer.from(data);
    const wantParity = Buffer.from(parity);
    const lostCount = rng.int(1, m);
    const lost = new Set<number>();
    while (lost.size < lostCount) lost.add(rng.int(0, k + m - 1));
    for (const i of lost) {
      if (i < k) data.fill(rng.int(0, 255), i * blockBytes, (i + 1) * blockBytes);
      else parity.fill(rng.int(0, 255), (i - k) * blockBytes, (i - k + 1) * blockBytes);
    }
    await reconstructStripe(k, m, data, parity, blockBytes, [...lost]);
    assert.ok(data.equals(wantData), `call ${t}: k=${k} m=${m} block ${blockBytes} lost ${[...lost]} (seed ${seed})`);
    assert.ok(parity.equals(wantParity), `call ${t}: parity (seed ${seed})`);
  }
  // Its limits are refused, not misused.
  await assert.rejects(async () => reconstructStripe(24, 3, Buffer.alloc(24 * 8), Buffer.alloc(24), 8, [0, 1, 2, 3]), /cannot rebuild 4/);
  await assert.rejects(async () => encodeStripe(24, 3, Buffer.alloc(24 * 12), Buffer.alloc(36), 12), /multiple of 8/);
});

test('parity file: geometry, size, both header copies, and bounds on what it says', async () => {
  const rng = new Prng(seed ^ 0x1234);
  for (const D of [1, 7, 24 * 8, 100_000, 4096 * 24 + 1, 1_000_003]) {
    const data = randomBytes(rng, D);
    const pf = await buildParityFile(data);
    const g = geometry(D);
    assert.equal(g.shardBytes % 8, 0);
    assert.ok(g.shardBytes * 24 >= D && (g.shardBytes - 8) * 24 < D, `S for ${D}`);
    assert.equal(pf.length, parityFileBytes(g));
    const h = headerBytes(g);
    assert.ok(pf.subarray(0, h).equals(pf.subarray(pf.length - h)), 'the two header copies are identical');
    const parsed = parseParityFile(pf, 10_000_000);
    assert.ok(parsed);
    assert.deepEqual(parsed.problems, []);
    const clean = await checkWithParity(data, parsed);
    assert.ok(clean.verified && clean.badBlocks === 0 && clean.data.equals(data));
    // Either header copy alone serves; both damaged: the parity is useless (null), never trusted.
    const a = Buffer.from(pf);
    a[rng.int(0, h - 1)] ^= 0x10;
    assert.deepEqual(parseParityFile(a, 10_000_000)?.problems, ['its first header copy is damaged']);
    const b = Buffer.from(pf);
    b[pf.length - 1 - rng.int(0, h - 1)] ^= 0x10;
    assert.deepEqual(parseParityFile(b, 10_000_000)?.problems, ['its second header copy is damaged']);
    const both = Buffer.from(a);
    both[pf.length - 1 - rng.int(0, h - 1)] ^= 0x10;
    assert.equal(parseParityFile(both, 10_000_000), null);
    // A recorded length beyond what such a file may hold is refused before anything is allocated.
    assert.equal(parseParityFile(pf, D - 1), null);
  }
  // A forged header claiming 2^63 bytes with a valid checksum: refused by the bound.
  const forged = Buffer.from(await buildParityFile(Buffer.alloc(64, 1)));
  const fh = headerBytes(geometry(64));
  for (const at of [0, forged.length - fh]) {
    forged.writeBigUInt64BE(0x7fffffffffffffffn, at + 16);
    crypto
      .createHash('sha256')
      .update(forged.subarray(at, at + fh - 32))
      .digest()
      .copy(forged, at + fh - 32);
  }
  assert.equal(parseParityFile(forged, 64 * 1024 * 1024), null);
  assert.equal(parseParityFile(Buffer.alloc(0), 1000), null);
  assert.equal(parseParityFile(crypto.randomBytes(5000), 1_000_000), null);
});

test('tolerance at its exact edge: a contiguous region of 3S-4095 bytes anywhere is repaired; 4 bad blocks in one stripe are reported exactly', async () => {
  const rng = new Prng(seed ^ 0x5678);
  const D = 3 * 1024 * 1024 + 12345;
  const data = randomBytes(rng, D);
  const parsed = parseParityFile(await buildParityFile(data), D);
  assert.ok(parsed);
  const g = parsed.g;
  const tol = contiguousTolerance(D);
  assert.equal(tol, 3 * g.shardBytes - BLOCK_BYTES + 1);
  for (let t = 0; t < 12; t++) {
    const bad = Buffer.from(data);
    const at = t === 0 ? 0 : t === 1 ? D - tol : rng.int(0, D - tol);
    randomBytes(rng, tol).copy(bad, at);
    const r = await checkWithParity(bad, parsed);
    assert.deepEqual(r.lost, [], `region ${at}+${tol}`);
    assert.ok(r.verified && r.data.equals(data), `region ${at}+${tol}`);
  }
  // A truncation of up to the same length.
  const cut = await checkWithParity(data.subarray(0, D - tol), parsed);
  assert.ok(cut.verified && cut.data.equals(data) && cut.missingBytes === tol);
  // One byte more, placed worst (it starts on the last byte of a block): 4 blocks of one stripe.
  const x = BLOCK_BYTES - 1;
  const worst = Buffer.from(data);
  for (let i = x; i < x + tol + 1; i++) worst[i] ^= 0xff;
  const w = await checkWithParity(worst, parsed);
  assert.equal(w.verified, false);
  // Row 0 of shards 0..3 is damaged (4 > 3 parity blocks); the other rows lose only shards 1 and 2.
  assert.deepEqual(
    w.lost,
    [0, 1, 2, 3].map((shard) => ({ start: shard * g.shardBytes, end: shard * g.shardBytes + BLOCK_BYTES })),
  );
  // Exactly four zeroed blocks in stripe 5 (shards 2, 7, 11, 20): those four ranges, nothing else.
  const four = Buffer.from(data);
  const shards = [2, 7, 11, 20];
  for (const s of shards) four.fill(0, s * g.shardBytes + 5 * BLOCK_BYTES, s * g.shardBytes + 6 * BLOCK_BYTES);
  const f = await checkWithParity(four, parsed);
  assert.deepEqual(
    f.lost,
    shards.map((s) => ({ start: s * g.shardBytes + 5 * BLOCK_BYTES, end: s * g.shardBytes + 6 * BLOCK_BYTES })),
  );
  assert.equal(f.badStripes, 1);
});

test('mirror frames: intact frames repair the segment, damaged frames are skipped, extra and missing bytes are told', () => {
  const rng = new Prng(seed ^ 0x9abc);
  const appends = Array.from({ length: 40 }, () => randomBytes(rng, rng.int(50, 3000)));
  const segment = Buffer.concat(appends);
  const owner = { generation: 1, firstSeq: 1n };
  const frames: Buffer[] = [mirrorHeader(owner)];
  let off = 0;
  for (const a of appends) {
    frames.push(frameHeader(off, a), a);
    off += a.length;
  }
  const mirror = Buffer.concat(frames);
  assert.equal(parseMirror(mirror, segment.length).frames.length, 40);
  const ok = checkWithMirror(segment, mirror, owner, 1 << 20);
  assert.deepEqual([ok.repaired, ok.unprotected, ok.mirrorDamaged], [[], [], false]);
  // Bitrot in the segment: repaired from the mirror, exactly the changed bytes.
  const bad = Buffer.from(segment);
  bad[1000] ^= 1;
  bad[1003] ^= 0x80;
  const r = checkWithMirror(bad, mirror, owner, 1 << 20);
  assert.ok(r.data.equals(segment));
  assert.deepEqual(r.repaired, [
    { start: 1000, end: 1001 },
    { start: 1003, end: 1004 },
  ]);
  // A mirror whose header names another segment, or that has none, does not vouch for its frames:
  // without records to judge by (these bytes are not records) nothing is replaced, the difference is a conflict.
  for (const untrusted of [mirror.subarray(24), Buffer.concat([mirrorHeader({ generation: 2, firstSeq: 1n }), mirror.subarray(24)])]) {
    const u = checkWithMirror(bad, untrusted, owner, 1 << 20);
    assert.ok(u.data.equals(bad));
    assert.deepEqual(
      [u.repaired, u.conflicts, u.mirrorDamaged],
      [
        [],
        [
          { start: 1000, end: 1001 },
          { start: 1003, end: 1004 },
        ],
        true,
      ],
    );
  }
  // Bitrot in the mirror: that frame is not used, the others still are; a torn end is told.
  const m2 = Buffer.from(mirror);
  m2[24 + 30] ^= 1; // inside the first frame's bytes
  const r2 = checkWithMirror(segment, m2.subarray(0, m2.length - 10), owner, 1 << 20);
  assert.ok(r2.mirrorDamaged);
  assert.equal(r2.unprotected[0].start, 0);
  assert.equal(r2.unprotected[r2.unprotected.length - 1].end, segment.length);
  // A rebuilt mirror is exactly the segment again.
  const rebuilt = checkWithMirror(segment, mirrorOf(segment, owner), owner, 1 << 20);
  assert.equal(rebuilt.mirrorDamaged, false);
});

test('protectFile + readProtected on real files: damage, a deleted parity file, a missing file', async () => {
  const dir = tempDir('redundancy');
  const rng = new Prng(seed ^ 0xdef0);
  const file = path.join(dir, 'p-' + '0'.repeat(32) + '.pack');
  const data = randomBytes(rng, 500_000);
  fs.writeFileSync(file, data);
  await protectFile(file, 64 * 1024 * 1024);
  assert.ok(fs.existsSync(file + '.parity'));
  assert.deepEqual(fs.readdirSync(dir).sort(), [path.basename(file), path.basename(file) + '.parity']);
  const clean = await readProtected(file, { maxDataBytes: 64 * 1024 * 1024 });
  assert.equal(clean.report.status, 'ok');
  const bad = Buffer.from(data);
  bad.fill(0, 100_000, 104_096);
  fs.writeFileSync(file, bad);
  const r = await readProtected(file, { maxDataBytes: 64 * 1024 * 1024 });
  assert.equal(r.report.status, 'repaired');
  assert.ok(r.data?.equals(data));
  fs.rmSync(file + '.parity');
  const u = await readProtected(file, { maxDataBytes: 64 * 1024 * 1024 });
  assert.equal(u.report.status, 'unverified');
  fs.rmSync(file);
  const gone = await readProtected(file, { maxDataBytes: 64 * 1024 * 1024 });
  assert.equal(gone.report.status, 'damaged');
});

test('identity copy: every single bit flip anywhere in VAULT.json.copy (its hash line, its newline, its bytes) leaves the good identity known', () => {
  const dir = tempDir('identity-copy');
  const identity = Buffer.from(JSON.stringify({ format: 'lnbackup-vault', version: 1, owner: 'ab'.repeat(32) }, null, 2) + '\n');
  fs.writeFileSync(path.join(dir, IDENTITY_NAME), identity);
  const copy = identityCopyBytes(identity);
  for (let at = 0; at < copy.length; at++) {
    for (let bit = 0; bit < 8; bit++) {
      const damaged = Buffer.from(copy);
      damaged[at] ^= 1 << bit;
      fs.writeFileSync(path.join(dir, IDENTITY_COPY_NAME), damaged);
      const c = checkIdentity(dir);
      assert.ok(c.good?.equals(identity), `bit ${bit} of byte ${at}: ${c.problems.join('; ')}`);
      assert.equal(c.copyOk, false, `bit ${bit} of byte ${at}`);
    }
  }
});
