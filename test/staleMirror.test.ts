// Redundant copies older than the data they protect (issue: "Repair must never overwrite a good
// record"). The power-cut sequence found on a real node is built byte for byte on disk: a mirror
// frame of a record whose segment bytes never reached the disk, then acknowledged records written
// at the same offset, then the mirror's rewrite lost. Restore, verify, the plugin's open, the
// server's keyless store and scrub must keep the acknowledged records. Also: a mirror rewrite is a
// replacement by rename (durable before the next append), a new mirror over a left-over file of
// the same name starts empty, and a segment that went on after its parity was made keeps its
// records (never cut to what the parity covers), and is never appended to by a writer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Journal } from '../src/journal/journal.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { verifyVault } from '../src/restore/verify.js';
import { RawVaultAppender } from '../src/vault/rawRecords.js';
import { RedundancyKeeper } from '../src/vault/redundancy/keeper.js';
import { checkWithMirror, MIRROR_BEHIND, mirrorHeader, mirrorOf, ownerOf, TailMirror } from '../src/vault/redundancy/mirror.js';
import { PARITY_SUFFIX, protectFile } from '../src/vault/redundancy/parity.js';
import { maxSegmentBytes, readProtected, repairVaultInMemory } from '../src/vault/redundancy/protectedRead.js';
import { scrubVault } from '../src/vault/redundancy/scrub.js';
import { listSegments } from '../src/vault/segments.js';
import { VaultWriter } from '../src/vault/writer.js';
import type { CallEntry } from '../src/simulator/trace.js';
import { tempDir } from './helpers/paths.js';
import { dumpFile, dumpOf, effectiveWrites, node3Calls, plainReplay } from './helpers/reference.js';
import { makeNode, type VaultNode } from './helpers/testNode.js';
import { feedNode } from './helpers/vaultFixture.js';

const MIRROR_HEADER_BYTES = 24;
/** The calls the node had committed before the cut ("v52"), and the acknowledged ones after it ("v53..v67"). */
const COMMITTED = 30;
const ACKED_AFTER = 15;

function calls(): CallEntry[] {
  const all = node3Calls().slice(0, COMMITTED + ACKED_AFTER + 1);
  assert.ok(
    all.every((c) => !c.superseded),
    'the calls used here all committed',
  );
  assert.ok(all[COMMITTED].bumps, 'the call cut in flight is a transaction');
  return all;
}

function newestSegment(vault: string): string {
  const segs = listSegments(vault);
  return segs[segs.length - 1].path;
}

interface StaleState {
  readonly segment: string;
  /** The segment as it was after the acknowledged records were made durable. */
  readonly acked: Buffer;
  /** Version of the last acknowledged (and committed) call. */
  readonly version: number;
}

/**
 * Builds the sequence. `headerless`: the stale mirror as lnbackup wrote it before mirrors
 * had a header (what a vault of the shipped version holds); otherwise as this version writes it.
 */
function buildStaleMirror(node: VaultNode, headerless: boolean): StaleState {
  const all = calls();
  feedNode(node, all.slice(0, COMMITTED));
  const segment = newestSegment(node.vault);
  const end = fs.statSync(segment).size;
  // 1. A record is appended for the next version (a transaction that will never commit): its mirror
  //    frame reaches the disk, then power is lost before the segment's fdatasync.
  const inFlight = all[COMMITTED];
  const neverCommitted = [`UPDATE vars SET val = 'never committed ${'x'.repeat(2000)}' WHERE name = 'lnbackup-test'`, ...inFlight.writes];
  feedNode(node, [{ dataVersion: inFlight.dataVersion, writes: neverCommitted }]);
  const staleMirror = fs.readFileSync(segment + '.mirror');
  fs.truncateSync(segment, end);
  // 2. Restart: the plugin deals with the mirror, then v53..v67 are acknowledged and committed; v53
  //    lands at the same offset as the record that never reached the disk.
  feedNode(node, all.slice(COMMITTED, COMMITTED + ACKED_AFTER));
  assert.equal(newestSegment(node.vault), segment, 'the records went on in the same segment');
  const acked = fs.readFileSync(segment);
  // 3. Power is lost before the mirror's rewrite reached the disk: the old mirror is back.
  const hasHeader = staleMirror.subarray(0, 4).toString('latin1') === 'LNBH';
  fs.writeFileSync(segment + '.mirror', headerless && hasHeader ? staleMirror.subarray(MIRROR_HEADER_BYTES) : staleMirror);
  return { segment, acked, version: all[COMMITTED + ACKED_AFTER - 1].dataVersion };
}

function referenceDump(count: number): string {
  return dumpOf(plainReplay(effectiveWrites(calls().slice(0, count))));
}

for (const headerless of [true, false]) {
  const kind = headerless ? 'a mirror of the shipped format (no header)' : 'a mirror of this format';
  test(`stale mirror frame over acknowledged records (${kind}): restore, verify and the plugin's open keep them`, async () => {
    const node = makeNode(`stale-mirror-${headerless ? 'v1' : 'v2'}`);
    const state = buildStaleMirror(node, headerless);
    const copy = path.join(tempDir('stale-mirror-copy'), 'vault');
    fs.cpSync(node.vault, copy, { recursive: true });

    // restore gives the newest acknowledged version, exactly.
    const to = path.join(node.dir, 'restored.sqlite3');
    const notices: string[] = [];
    const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, repair: await repairVaultInMemory(node.vault), onNotice: (m) => notices.push(m) });
    assert.equal(r.version, state.version, `restore reached ${r.version}, the node had committed ${state.version}`);
    assert.equal(dumpFile(to), referenceDump(COMMITTED + ACKED_AFTER), 'the restored database is the committed one');
    assert.ok(
      notices.some((n) => /stale mirror/.test(n)),
      `restore says the mirror is stale: ${notices.join(' | ')}`,
    );

    // verify passes and reports the stale mirror.
    const v = verifyVault(node.vault, node.keys, undefined, await repairVaultInMemory(node.vault));
    assert.equal(v.ok, true, `verify: ${JSON.stringify(v.firstBadRecord)}`);
    assert.ok(
      v.notices.some((n) => /stale mirror/.test(n)),
      `verify reports the stale mirror: ${v.notices.join(' | ')}`,
    );
    assert.ok(fs.readFileSync(state.segment).equals(state.acked), 'restore and verify change nothing on disk');

    // The plugin's open keeps the acknowledged records (and writes the mirror again), and the node goes on.
    const openNotices: string[] = [];
    const journal = Journal.open(node.vault, node.keys, node.dbPath, (m) => openNotices.push(m));
    journal.close();
    assert.ok(fs.readFileSync(state.segment).equals(state.acked), `the open kept the acknowledged records (${openNotices.join(' | ')})`);
    const mirror = checkWithMirror(state.acked, fs.readFileSync(state.segment + '.mirror'), ownerOf(state.segment), maxSegmentBytes());
    assert.deepEqual([mirror.repaired, mirror.conflicts, mirror.mirrorDamaged], [[], [], false], mirror.problems.join('; '));
    feedNode(node, calls().slice(COMMITTED + ACKED_AFTER));
    const after = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, force: true });
    assert.equal(after.version, calls()[COMMITTED + ACKED_AFTER].dataVersion);
    assert.equal(dumpFile(to), referenceDump(COMMITTED + ACKED_AFTER + 1));

    if (headerless) {
      // Without the key (the server's store, downloads, scrub): a mirror that has no header does not
      // vouch for its frames, so well-formed records of the segment are never replaced by them.
      const copied = path.join(copy, path.relative(node.vault, state.segment));
      const s = await scrubVault(copy, { repair: true });
      assert.equal(s.ok, false, 'scrub reports what it cannot decide without the key');
      assert.ok(fs.readFileSync(copied).equals(state.acked), 'scrub --repair kept the acknowledged records');
      const appender = RawVaultAppender.open(copy, 16 * 1024 * 1024);
      appender.close();
      assert.ok(fs.readFileSync(copied).equals(state.acked), "the keyless writer's open kept the acknowledged records");
    }
  });
}

test('a mirror with frames past its segment is replaced by rename (durable before the next append), and then is exactly the segment', () => {
  const node = makeNode('mirror-rename');
  const all = calls();
  feedNode(node, all.slice(0, COMMITTED + 1));
  const segment = newestSegment(node.vault);
  const lastRecordStart = fs.statSync(segment).size - 100;
  fs.truncateSync(segment, lastRecordStart); // the last record's segment bytes never reached the disk
  const before = fs.statSync(segment + '.mirror').ino;
  const notices: string[] = [];
  const writer = VaultWriter.open(node.vault, node.keys, { onNotice: (m) => notices.push(m) });
  writer.close();
  const after = fs.statSync(segment + '.mirror');
  assert.notEqual(after.ino, before, 'the mirror was written to a temp file, fsynced and renamed over the old one');
  const check = checkWithMirror(fs.readFileSync(segment), fs.readFileSync(segment + '.mirror'), ownerOf(segment), maxSegmentBytes());
  assert.equal(check.mirrorDamaged, false, check.problems.join('; '));
  assert.ok(
    notices.some((n) => /torn record/.test(n)),
    notices.join(' | '),
  );
});

test('a new mirror over a left-over file of the same name (its segment lost in a crash) holds only its header', () => {
  const dir = tempDir('mirror-create');
  const segment = path.join(dir, 'g0000000002-s00000000000000000100.seg');
  fs.writeFileSync(segment + '.mirror', Buffer.concat([mirrorHeader(ownerOf(segment)), Buffer.alloc(5000, 7)]));
  const m = TailMirror.create(segment);
  m.close();
  assert.ok(fs.readFileSync(segment + '.mirror').equals(mirrorHeader(ownerOf(segment))));
});

test('records appended to a segment after its parity was made are kept (never cut to what the parity covers), and a writer starts a new segment', async () => {
  const node = makeNode('stale-parity');
  const all = calls();
  feedNode(node, all.slice(0, COMMITTED));
  const segment = newestSegment(node.vault);
  const covered = fs.statSync(segment).size;
  await protectFile(segment, maxSegmentBytes());
  fs.rmSync(segment + '.mirror');
  // A shipped writer could go on in a sealed segment (its next segment's folder entry lost in a crash):
  // records after what the parity covers.
  fs.rmSync(segment + PARITY_SUFFIX + '.keep', { force: true });
  fs.renameSync(segment + PARITY_SUFFIX, segment + PARITY_SUFFIX + '.keep');
  feedNode(node, all.slice(COMMITTED, COMMITTED + 5));
  fs.rmSync(segment + '.mirror', { force: true });
  fs.renameSync(segment + PARITY_SUFFIX + '.keep', segment + PARITY_SUFFIX);
  const whole = fs.readFileSync(segment);
  assert.ok(whole.length > covered);

  const read = await readProtected(segment, { maxDataBytes: maxSegmentBytes() });
  assert.ok(read.data?.equals(whole), `repair on read keeps the later records (${read.report.notes.join('; ')})`);
  assert.equal(read.report.protectionDamaged, true, 'its parity must be made again');
  const to = path.join(node.dir, 'restored.sqlite3');
  const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, repair: await repairVaultInMemory(node.vault) });
  assert.equal(r.version, all[COMMITTED + 4].dataVersion);

  // A writer never appends to a segment that has its parity: the next record starts a new file.
  feedNode(node, all.slice(COMMITTED + 5, COMMITTED + 6));
  assert.ok(fs.readFileSync(segment).equals(whole), 'the sealed segment was not appended to');
  assert.notEqual(newestSegment(node.vault), segment);

  // scrub --repair makes the parity again from the whole file, cutting nothing.
  const s = await scrubVault(node.vault, { repair: true });
  assert.equal(s.ok, true, JSON.stringify(s.files));
  assert.ok(fs.readFileSync(segment).equals(whole));
  const again = await readProtected(segment, { maxDataBytes: maxSegmentBytes() });
  assert.deepEqual([again.report.status, again.report.protectionDamaged], ['ok', false], again.report.notes.join('; '));
  const final = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, force: true });
  assert.equal(final.version, all[COMMITTED + 5].dataVersion);
  assert.equal(dumpFile(to), referenceDump(COMMITTED + 6));
});

test('a mirror a crash left behind its segment (killed between the two writes) is made level silently; a damaged one is told', () => {
  const dir = tempDir('mirror-behind');
  const segment = path.join(dir, 'g0000000003-s00000000000000000200.seg');
  const bytes = crypto.randomBytes(9000);
  fs.writeFileSync(segment, bytes);
  // The mirror got the first 6000 bytes; the last write reached only the segment.
  fs.writeFileSync(segment + '.mirror', mirrorOf(bytes.subarray(0, 6000), ownerOf(segment)));
  const behind = TailMirror.open(segment, bytes, maxSegmentBytes());
  behind.mirror.close();
  assert.equal(behind.rebuilt, MIRROR_BEHIND);
  assert.ok(fs.readFileSync(segment + '.mirror').equals(mirrorOf(bytes, ownerOf(segment))), 'the mirror covers the whole segment again');
  // A keeper (the writers' open) says nothing about it.
  const notices: string[] = [];
  const keeper = new RedundancyKeeper(dir, { maxSegmentBytes: maxSegmentBytes(), onNotice: (m) => notices.push(m) });
  fs.writeFileSync(segment + '.mirror', mirrorOf(bytes.subarray(0, 6000), ownerOf(segment)));
  keeper.attach(segment);
  keeper.close();
  assert.deepEqual(notices, []);
  // A frame damaged inside what it covers is damage, and told.
  const damaged = mirrorOf(bytes, ownerOf(segment));
  damaged[damaged.length - 10] ^= 1;
  fs.writeFileSync(segment + '.mirror', damaged);
  keeper.attach(segment);
  keeper.close();
  assert.equal(notices.length, 1, notices.join(' | '));
  assert.match(notices[0], /rebuilt the mirror/);
});
