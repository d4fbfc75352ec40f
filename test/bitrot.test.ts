// Bitrot torture: a real vault (node3's history in 32 KiB segments: sealed segments with parity,
// the active segment with its mirror, VAULT.json and its copy, and a last generation from a paged
// snapshot whose page pack the restore reads), damaged at random, hundreds of times: byte flips, zeroed 4 KiB blocks,
// damaged regions, truncations and extensions, deleted or cut parity files and mirrors, in every
// file type. An oracle that knows the original bytes classifies each damage: inside the documented
// tolerance (docs/FORMAT.md, "Redundancy") repair on read must give back exactly the original
// bytes, a restore through it must equal the original database, and scrub --repair must bring
// every file back byte for byte; outside it, the damage must be reported with the exact file and
// byte ranges, and restore and verify must refuse instead of producing a wrong database.
//
// BITROT_SEED reproduces a run; BITROT_TRIALS (default 500) and BITROT_OUT (default 60) set the
// number of trials inside and outside the tolerance.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import { Journal } from '../src/journal/journal.js';
import { checkIdentity } from '../src/vault/redundancy/identityCopy.js';
import { checkWithMirror, ownerOf } from '../src/vault/redundancy/mirror.js';
import { contiguousTolerance } from '../src/vault/redundancy/parity.js';
import { readProtected, repairVaultInMemory, type ByteRange } from '../src/vault/redundancy/protectedRead.js';
import { scrubVault } from '../src/vault/redundancy/scrub.js';
import { listSegments } from '../src/vault/segments.js';
import { tempDir } from './helpers/paths.js';
import { envCount, Prng } from './helpers/prng.js';
import { dumpFile, dumpOf, effectiveWrites, node3Calls, plainReplay } from './helpers/reference.js';
import { makeNode } from './helpers/testNode.js';
import { feedNode } from './helpers/vaultFixture.js';
import { until } from './helpers/waiting.js';

const seed = envCount('BITROT_SEED', crypto.randomInt(0, 0xffffffff));
const IN_TRIALS = envCount('BITROT_TRIALS', 500);
const OUT_TRIALS = envCount('BITROT_OUT', 60);
console.log(`# bitrot seed ${seed} (rerun with BITROT_SEED=${seed}); ${IN_TRIALS} trials inside the tolerance, ${OUT_TRIALS} outside`);

const B = 4096;
const K = 24;
const M = 3;

/** The geometry, computed here independently of the code under test. */
function geom(D: number): { S: number; R: number; H: number } {
  const S = Math.ceil(Math.ceil(D / K) / 8) * 8;
  const R = Math.ceil(S / B);
  return { S, R, H: 72 + 4 * (K + M) * R + 32 };
}

function merge(ranges: ByteRange[]): ByteRange[] {
  const out: { start: number; end: number }[] = [];
  for (const r of [...ranges].sort((a, b) => a.start - b.start)) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) last.end = Math.max(last.end, r.end);
    else out.push({ ...r });
  }
  return out;
}

function differs(a: Buffer | null, b: Buffer, start: number, end: number): boolean {
  if (a === null || a.length < end) return true;
  return !a.subarray(start, end).equals(b.subarray(start, end));
}

/**
 * The oracle for a parity-protected file: 'in' with nothing lost, 'out' with the exact lost
 * ranges, or 'unverifiable' (no usable header copy and the data changed: nothing can tell).
 */
function classify(orig: Buffer, origParity: Buffer, data: Buffer | null, parity: Buffer | null): { kind: 'in' | 'out' | 'unverifiable'; lost: ByteRange[] } {
  const D = orig.length;
  const { S, R, H } = geom(D);
  const h1 = parity !== null && !differs(parity, origParity, 0, H);
  const h2 = parity !== null && parity.length === origParity.length && !differs(parity, origParity, H + M * S, 2 * H + M * S);
  const dataSame = data !== null && data.length === D && data.equals(orig);
  if (!h1 && !h2) return { kind: dataSame ? 'in' : 'unverifiable', lost: [] };
  const padded = data === null ? null : data.length >= D ? data.subarray(0, D) : data;
  const lost: ByteRange[] = [];
  for (let r = 0; r < R; r++) {
    const len = Math.min(B, S - r * B);
    const bad: ByteRange[] = [];
    let count = 0;
    for (let i = 0; i < K; i++) {
      const start = i * S + r * B;
      const end = Math.min(start + len, D);
      if (end <= start) continue;
      if (differs(padded, orig, start, end)) {
        count++;
        bad.push({ start, end });
      }
    }
    for (let j = 0; j < M; j++) {
      const start = H + j * S + r * B;
      if (differs(parity, origParity, start, start + len)) count++;
    }
    if (count > M) lost.push(...bad);
  }
  return lost.length > 0 ? { kind: 'out', lost: merge(lost) } : { kind: 'in', lost: [] };
}

// ---------------------------------------------------------------------------------------------
// The fixture, built once

const calls = node3Calls();
const node = makeNode('bitrot', { segmentBytes: 32 * 1024 });
feedNode(node, calls);
const referenceDump = dumpOf(plainReplay(effectiveWrites(calls)));

interface Fixture {
  readonly originals: Map<string, Buffer>;
  readonly sealed: string[];
  readonly active: string;
  readonly pack: string;
}

async function fixture(): Promise<Fixture> {
  // A last generation from a paged snapshot of the node's database, so the vault holds a real page
  // pack that restore reads the newest state from.
  fs.rmSync(node.dbPath, { force: true });
  plainReplay(effectiveWrites(calls), node.dbPath).close();
  const journal = Journal.open(node.vault, node.keys, node.dbPath);
  const taken = journal.takeSnapshot();
  await journal.protectPacks(taken.packs);
  journal.close();
  assert.equal(taken.packs.length, 1, "the snapshot of node3's database fills one pack");
  const packName = taken.packs[0].name;
  const segs = listSegments(node.vault);
  // Sealing runs in the background (the journal's writer is closed): wait for every parity.
  await until(
    'parity of every sealed segment',
    () => segs.slice(0, -1).every((s) => fs.existsSync(s.path + '.parity') && !fs.existsSync(s.path + '.mirror')),
    60_000,
  );
  const originals = new Map<string, Buffer>();
  const walk = (dir: string): void => {
    for (const name of fs.readdirSync(dir)) {
      const full = path.join(dir, name);
      if (fs.statSync(full).isDirectory()) walk(full);
      else if (name !== 'writer.lock') originals.set(path.relative(node.vault, full), fs.readFileSync(full));
    }
  };
  walk(node.vault);
  const rel = (p: string): string => path.relative(node.vault, p);
  return { originals, sealed: segs.slice(0, -1).map((s) => rel(s.path)), active: rel(segs[segs.length - 1].path), pack: path.join('pages', packName) };
}

/** A damage: `file` gets `result` (null: deleted). */
type Op = { file: string; describe: string; result: Buffer | null };

function randomDamage(rng: Prng, buf: Buffer, tolerance: number): { what: string; out: Buffer } {
  const b = Buffer.from(buf);
  switch (rng.weighted({ flips: 3, blocks: 2, region: 3, truncate: 1, extend: 1 })) {
    case 'flips': {
      const n = rng.int(1, 3);
      const at: number[] = [];
      for (let i = 0; i < n; i++) {
        const p = rng.int(0, b.length - 1);
        b[p] ^= 1 << rng.int(0, 7);
        at.push(p);
      }
      return { what: `flipped bits at ${at.join(',')}`, out: b };
    }
    case 'blocks': {
      const n = rng.int(1, 3);
      const at: number[] = [];
      for (let i = 0; i < n; i++) {
        const blk = rng.int(0, Math.ceil(b.length / B) - 1);
        b.fill(0, blk * B, Math.min(b.length, (blk + 1) * B));
        at.push(blk);
      }
      return { what: `zeroed 4 KiB blocks ${at.join(',')}`, out: b };
    }
    case 'region': {
      const len = rng.int(1, Math.max(1, Math.min(tolerance, b.length)));
      const start = rng.int(0, b.length - len);
      crypto.randomFillSync(b, start, len);
      return { what: `random region ${start}+${len}`, out: b };
    }
    case 'truncate': {
      const cut = rng.int(1, Math.max(1, Math.min(tolerance, b.length - 1)));
      return { what: `cut ${cut} bytes off the end`, out: b.subarray(0, b.length - cut) };
    }
    default: {
      const extra = crypto.randomBytes(rng.int(1, 5000));
      return { what: `${extra.length} bytes appended`, out: Buffer.concat([b, extra]) };
    }
  }
}

function parityDamage(rng: Prng, p: Buffer): { what: string; out: Buffer | null } {
  switch (rng.weighted({ flips: 3, delete: 2, cut: 1, header: 1 })) {
    case 'flips': {
      const b = Buffer.from(p);
      const n = rng.int(1, 3);
      for (let i = 0; i < n; i++) b[rng.int(0, b.length - 1)] ^= 1 << rng.int(0, 7);
      return { what: `${n} bit flips in the parity file`, out: b };
    }
    case 'delete':
      return { what: 'parity file deleted', out: null };
    case 'cut':
      return { what: 'parity file cut short', out: p.subarray(0, rng.int(0, p.length - 1)) };
    default: {
      const b = Buffer.from(p);
      b.fill(0, 0, Math.min(b.length, rng.int(1, 200)));
      return { what: 'first header copy zeroed', out: b };
    }
  }
}

test('bitrot torture: damage inside the tolerance is repaired on read and by scrub, byte for byte; outside it is reported exactly and refused', async () => {
  const started = Date.now();
  const fx = await fixture();
  const work = path.join(tempDir('bitrot-work'), 'vault');
  fs.cpSync(node.vault, work, { recursive: true });
  const abs = (rel: string): string => path.join(work, rel);
  const orig = (rel: string): Buffer => fx.originals.get(rel) as Buffer;
  const read = (rel: string): Buffer | null => (fs.existsSync(abs(rel)) ? fs.readFileSync(abs(rel)) : null);
  const write = (rel: string, b: Buffer | null): void => {
    if (b === null) fs.rmSync(abs(rel), { force: true });
    else fs.writeFileSync(abs(rel), b);
  };
  const restoreOriginals = (): void => {
    for (const [rel, b] of fx.originals) write(rel, b);
  };
  const rng = new Prng(seed);
  const protectedFiles = [...fx.sealed, fx.pack];
  let inside = 0;
  let outside = 0;
  let restores = 0;
  let refusals = 0;
  let attempts = 0;
  const seen = new Set<string>();

  while ((inside < IN_TRIALS || outside < OUT_TRIALS) && attempts < 4 * (IN_TRIALS + OUT_TRIALS)) {
    attempts++;
    const wantOut = outside < OUT_TRIALS && (inside >= IN_TRIALS || rng.next() < 0.12);
    const ops: Op[] = [];
    const touched = new Set<string>();
    if (wantOut) {
      // Four damaged blocks in one stripe of one protected file (or worse); the page pack a quarter of the time.
      const file = rng.next() < 0.25 ? fx.pack : rng.pick(fx.sealed);
      const { S, R } = geom(orig(file).length);
      const r = rng.int(0, R - 1);
      const shards = new Set<number>();
      const maxShard = Math.ceil(orig(file).length / S) - 1;
      while (shards.size < 4) shards.add(rng.int(0, maxShard));
      const x = Buffer.from(orig(file));
      for (const sh of shards) {
        const start = sh * S + r * B;
        const end = Math.min(start + Math.min(B, S - r * B), x.length);
        if (end > start) crypto.randomFillSync(x, start, end - start);
      }
      ops.push({ file, describe: `4 blocks of stripe ${r} (shards ${[...shards].join(',')}) randomized`, result: x });
      touched.add(file);
    } else {
      const n = rng.int(1, 3);
      for (let i = 0; i < n; i++) {
        const kind = rng.weighted({ sealed: 4, sealedParity: 2, pack: 2, packParity: 1, active: 2, mirror: 1, identity: 1 });
        let file: string;
        let op: Op;
        if (kind === 'sealed' || kind === 'pack') {
          file = kind === 'pack' ? fx.pack : rng.pick(fx.sealed);
          const d = randomDamage(rng, orig(file), contiguousTolerance(orig(file).length));
          op = { file, describe: d.what, result: d.out };
        } else if (kind === 'sealedParity' || kind === 'packParity') {
          file = (kind === 'packParity' ? fx.pack : rng.pick(fx.sealed)) + '.parity';
          const d = parityDamage(rng, orig(file));
          op = { file, describe: d.what, result: d.out };
        } else if (kind === 'active') {
          file = fx.active;
          const b = Buffer.from(orig(file));
          const at = rng.int(0, b.length - 1);
          b[at] ^= 1 << rng.int(0, 7);
          op = { file, describe: `bit flip at ${at} of the active segment`, result: b };
        } else if (kind === 'mirror') {
          file = fx.active + '.mirror';
          const m = orig(file);
          const choice = rng.int(0, 2);
          const b =
            choice === 0 ? null : choice === 1 ? m.subarray(0, rng.int(0, m.length - 1)) : Buffer.from(m).fill(0xee, rng.int(0, m.length - 100), m.length - 50);
          op = { file, describe: ['mirror deleted', 'mirror cut short', 'mirror scribbled'][choice], result: b };
        } else {
          file = rng.pick(['VAULT.json', 'VAULT.json.copy']);
          const b = Buffer.from(orig(file));
          const choice = rng.int(0, 1);
          if (choice === 0) b[rng.int(0, b.length - 1)] ^= 1 << rng.int(0, 7);
          op = { file, describe: choice === 0 ? `bit flip in ${file}` : `${file} deleted`, result: choice === 0 ? b : null };
        }
        // One damage per file, and never both a file and what protects it in the same place
        // (that is outside the tolerance by construction; the oracle below still judges the rest).
        if (touched.has(file) || (file.startsWith('VAULT') && [...touched].some((t) => t.startsWith('VAULT')))) continue;
        if ((file === fx.active || file === fx.active + '.mirror') && (touched.has(fx.active) || touched.has(fx.active + '.mirror'))) continue;
        touched.add(file);
        ops.push(op);
      }
    }
    for (const op of ops) write(op.file, op.result);
    const what = `trial ${attempts} (seed ${seed}): ${ops.map((o) => `${o.file}: ${o.describe}`).join('; ')}`;

    // The oracle, per protected file.
    let verdict: 'in' | 'out' | 'unverifiable' = 'in';
    const expectedLost = new Map<string, ByteRange[]>();
    for (const f of protectedFiles) {
      if (!touched.has(f) && !touched.has(f + '.parity')) continue;
      const c = classify(orig(f), orig(f + '.parity'), read(f), read(f + '.parity'));
      if (c.kind === 'unverifiable') verdict = 'unverifiable';
      else if (c.kind === 'out' && verdict !== 'unverifiable') {
        verdict = 'out';
        expectedLost.set(f, c.lost);
      }
    }
    if (verdict === 'unverifiable' || (verdict === 'out' && !wantOut) || (verdict === 'in' && wantOut)) {
      // Not the kind of trial wanted (or beyond what any check can see): back to the pristine vault.
      restoreOriginals();
      continue;
    }
    seen.add(ops.map((o) => o.describe.split(' ')[0]).join('+'));

    if (verdict === 'in') {
      inside++;
      // Repair on read: every protected file (and the active segment) gives back its original bytes.
      for (const f of [...protectedFiles, fx.active]) {
        if (!touched.has(f) && !touched.has(f + '.parity') && !touched.has(f + '.mirror')) continue;
        const r = await readProtected(abs(f), { maxDataBytes: 64 * 1024 * 1024 });
        assert.ok(r.data?.equals(orig(f)), `${what}: repair on read of ${f} (${r.report.status}: ${r.report.notes.join('; ')})`);
        assert.notEqual(r.report.status, 'damaged', what);
      }
      const identity = checkIdentity(work);
      assert.ok(identity.good?.equals(orig('VAULT.json')), `${what}: the good identity is known`);
      // A restore through repair on read equals the original database (every 8th trial, and
      // whenever the page pack or VAULT.json was damaged: the identity is then read from its copy).
      const packOrIdentity = [fx.pack, fx.pack + '.parity', 'VAULT.json'].some((f) => touched.has(f));
      if (inside % 8 === 0 || packOrIdentity) {
        const repair = await repairVaultInMemory(work);
        const to = path.join(path.dirname(work), `restored-${attempts}.sqlite3`);
        const r = restoreDatabase({ vaultDir: work, keys: node.keys, to, force: true, repair });
        assert.equal(dumpFile(to), referenceDump, `${what}: restore`);
        assert.equal(r.repairs?.unrecoverable.length, 0, what);
        fs.rmSync(to, { force: true });
        restores++;
      }
      // scrub --repair brings every file back, byte for byte (the mirror is made again in its own
      // framing: it must then be exactly the segment again).
      const s = await scrubVault(work, { repair: true });
      assert.equal(s.ok, true, `${what}: scrub says ${JSON.stringify(s.files)}`);
      for (const [rel, b] of fx.originals) {
        if (rel.endsWith('.mirror')) continue;
        assert.ok(read(rel)?.equals(b), `${what}: ${rel} after scrub --repair`);
      }
      const mirror = checkWithMirror(read(fx.active) as Buffer, read(fx.active + '.mirror') as Buffer, ownerOf(fx.active), 1 << 24);
      assert.equal(mirror.mirrorDamaged, false, `${what}: the active segment's mirror after scrub: ${mirror.problems.join('; ')}`);
      const again = await scrubVault(work, { repair: false });
      assert.deepEqual([again.ok, again.files], [true, []], `${what}: a second scrub finds nothing`);
      write(fx.active + '.mirror', orig(fx.active + '.mirror'));
    } else {
      outside++;
      // Reported exactly: the file and the byte ranges the oracle says are lost.
      for (const [f, lost] of expectedLost) {
        const r = await readProtected(abs(f), { maxDataBytes: 64 * 1024 * 1024 });
        assert.equal(r.report.status, 'damaged', what);
        assert.deepEqual(r.report.lost, lost, `${what}: lost ranges of ${f}`);
      }
      const s = await scrubVault(work, { repair: true });
      assert.equal(s.ok, false, what);
      for (const [f, lost] of expectedLost) {
        const entry = s.files.find((x) => x.file === f);
        assert.equal(entry?.status, 'damaged', what);
        assert.deepEqual(entry?.lost, lost, `${what}: scrub's lost ranges`);
        // Left as it was: a scrub never writes over damage it cannot repair.
        assert.ok(read(f)?.equals(ops.find((o) => o.file === f)?.result as Buffer), `${what}: ${f} untouched`);
      }
      // Verify refuses (the damaged records or pages fail authentication); restore refuses when
      // it needs the lost bytes, naming them, and otherwise restores exactly.
      const lostFiles = [...expectedLost];
      if (lostFiles.length > 0) {
        const repair = await repairVaultInMemory(work);
        assert.deepEqual(
          [...repair.lost].map(([f, l]) => [path.relative(work, f), l]),
          lostFiles,
          what,
        );
        const to = path.join(path.dirname(work), `never-${attempts}.sqlite3`);
        const [f, lost] = lostFiles[0];
        if (f === fx.pack) {
          // The newest generation's pages are lost: restore refuses, naming them.
          assert.throws(
            () => restoreDatabase({ vaultDir: work, keys: node.keys, to, force: true, repair }),
            (e: unknown) => e instanceof Error && e.message.includes(`bytes ${lost[0].start}..${lost[0].end - 1}`) && e.message.includes(path.basename(f)),
            `${what}: restore refuses naming the lost bytes`,
          );
          assert.ok(!fs.existsSync(to), what);
          refusals++;
        } else {
          // A sealed segment belongs to an older generation: the newest state is still restored exactly.
          restoreDatabase({ vaultDir: work, keys: node.keys, to, force: true, repair });
          assert.equal(dumpFile(to), referenceDump, `${what}: restore of the newest generation`);
          fs.rmSync(to, { force: true });
        }
        const v = verifyVault(work, node.keys, undefined, repair);
        assert.equal(v.ok, false, what);
        assert.equal(v.repairs?.unrecoverable[0]?.file, abs(f), what);
      }
      restoreOriginals();
      // Whatever the scrub wrote meanwhile (parity of other files) is the original again.
      const clean = await scrubVault(work, { repair: true });
      assert.equal(clean.damagedFiles, 0, what);
      write(fx.active + '.mirror', orig(fx.active + '.mirror'));
    }
  }
  assert.ok(inside >= IN_TRIALS, `only ${inside} trials inside the tolerance in ${attempts} attempts`);
  assert.ok(outside >= OUT_TRIALS, `only ${outside} trials outside the tolerance in ${attempts} attempts`);
  assert.ok(restores >= Math.floor(IN_TRIALS / 16), `only ${restores} restores`);
  assert.ok(OUT_TRIALS < 20 || refusals > 0, 'no trial outside the tolerance damaged the page pack');
  console.log(
    `# bitrot: ${inside} trials inside, ${outside} outside (restore refused ${refusals} times: the newest generation's pack was damaged; otherwise it restored exactly), ${restores} restores, ` +
      `${attempts} attempts, ${seen.size} damage combinations, ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
});
