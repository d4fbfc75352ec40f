// Damage to a vault made from node3's history (4 KiB segments, so there are many): flipped bytes in
// bodies and headers, truncated and deleted segments, swapped, replayed and foreign records, another
// node's key, an edited VAULT.json. verify names the exact damaged record, restore refuses with an
// error naming it, the CLI exits 3 (verify) or non-zero (restore), the writer does not "repair"
// acknowledged records away, nothing fails with an unexpected TypeError/RangeError, and no key ever
// appears in any output. A torn tail, by contrast, is not damage.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Journal } from '../src/journal/journal.js';
import { JournalError } from '../src/journal/replay.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { vaultStatus } from '../src/restore/status.js';
import { verifyVault, type VerifyReport } from '../src/restore/verify.js';
import { VaultError, WrongKeyError } from '../src/vault/errors.js';
import { HEADER_BYTES } from '../src/vault/format.js';
import { openIdentity, type VaultIdentity } from '../src/vault/identity.js';
import { VaultReader } from '../src/vault/reader.js';
import { listSegments, SEGMENTS_DIR } from '../src/vault/segments.js';
import { tempDir } from './helpers/paths.js';
import { dumpFile, dumpOf, effectiveWrites, node3Calls, plainReplay } from './helpers/reference.js';
import { makeNode, type VaultNode } from './helpers/testNode.js';
import { assertNoSecrets, feedNode, runCli } from './helpers/vaultFixture.js';

// ---------------------------------------------------------------------------------------------
// The pristine vault and its record map

const calls = node3Calls();
const node = makeNode('corrupt', { segmentBytes: 4096 });
feedNode(node, calls);
const work = tempDir('corrupt-work');

interface RecordPlace {
  readonly seq: bigint;
  readonly segment: string;
  readonly offset: number;
  readonly size: number;
}

const records: RecordPlace[] = [...new VaultReader(openIdentity(node.vault, node.keys), node.keys, node.vault).records()].map((r) => ({
  seq: r.seq,
  segment: r.segment.name,
  offset: r.offset,
  size: r.size,
}));
const segments = listSegments(node.vault).map((s) => s.name);
const lastSeq = records[records.length - 1].seq;
const lastSegment = segments[segments.length - 1];
const inSegment = (name: string): RecordPlace[] => records.filter((r) => r.segment === name);
/** A segment in the middle of the vault holding at least three records of different sizes. */
const middle = segments.slice(Math.floor(segments.length / 3)).find((s) => {
  const rs = inSegment(s);
  return rs.length >= 3 && new Set(rs.map((r) => r.size)).size >= 2 && s !== lastSegment;
});
assert.ok(middle, 'no suitable middle segment');
const middleRecords = inSegment(middle);
assert.ok(inSegment(lastSegment).length >= 3, 'the last segment should hold several records');

let copies = 0;
/** A copy of the pristine vault, changed by `damage` (given the copy's directory). */
function damaged(damage: (vault: string) => void): string {
  const vault = path.join(work, `v${copies++}`);
  fs.cpSync(node.vault, vault, { recursive: true });
  // Without its redundancy (parity files, the tail's mirror), which would repair most of this damage
  // (test/bitrot.test.ts covers that): here the record checks alone must find it.
  for (const name of fs.readdirSync(path.join(vault, SEGMENTS_DIR))) {
    if (name.endsWith('.parity') || name.endsWith('.mirror')) fs.rmSync(path.join(vault, SEGMENTS_DIR, name));
  }
  damage(vault);
  return vault;
}

const segPath = (vault: string, name: string): string => path.join(vault, SEGMENTS_DIR, name);

function flip(vault: string, r: RecordPlace, at: number, mask = 0x01): void {
  const file = segPath(vault, r.segment);
  const b = fs.readFileSync(file);
  b[r.offset + at] ^= mask;
  fs.writeFileSync(file, b);
}

function snapshotFiles(vault: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const name of fs.readdirSync(path.join(vault, SEGMENTS_DIR))) {
    m.set(
      name,
      crypto
        .createHash('sha256')
        .update(fs.readFileSync(segPath(vault, name)))
        .digest('hex'),
    );
  }
  return m;
}

function isExpectedError(e: unknown): boolean {
  return e instanceof VaultError || e instanceof JournalError;
}

interface Expected {
  readonly seq: bigint;
  readonly segment: string;
  readonly offset?: number;
  readonly reason: RegExp;
}

/**
 * The checks every damaged vault must pass: verify names the record, restore refuses naming it
 * and writes nothing, status refuses cleanly, the writer refuses to open and changes no byte, and
 * (with `cli`) the command exits 3 / non-zero with the record named and no key in its output.
 */
function assertDamage(vault: string, e: Expected, cli = true): VerifyReport {
  const what = `record ${e.seq} (${e.reason.source})`;
  const report = verifyVault(vault, node.keys);
  assert.equal(report.ok, false, what);
  assert.equal(report.tornTail, null, what);
  assert.ok(report.firstBadRecord, what);
  assert.equal(report.firstBadRecord.seq, e.seq.toString(), `${what}: ${JSON.stringify(report.firstBadRecord)}`);
  assert.equal(report.firstBadRecord.segment, e.segment, what);
  if (e.offset !== undefined) assert.equal(report.firstBadRecord.offset, e.offset, what);
  assert.match(report.firstBadRecord.reason, e.reason, what);
  assert.equal(report.records, Number(e.seq) - 1, `${what}: every record before the damaged one was good`);

  const outDir = fs.mkdtempSync(path.join(work, 'restore-'));
  const to = path.join(outDir, 'lightningd.sqlite3');
  assert.throws(
    () => restoreDatabase({ vaultDir: vault, keys: node.keys, to }),
    (err: unknown) => isExpectedError(err) && new RegExp(`record ${e.seq}\\b`).test((err as Error).message),
    what,
  );
  assert.deepEqual(fs.readdirSync(outDir), [], `${what}: a failed restore leaves no file behind`);
  assert.throws(() => vaultStatus(vault, node.keys), isExpectedError, what);
  assert.equal(vaultStatus(vault, null).vaultId, node.vaultId, 'status without a key still works');

  const before = snapshotFiles(vault);
  assert.throws(() => Journal.open(vault, node.keys, node.dbPath), isExpectedError, what);
  assert.deepEqual(snapshotFiles(vault), before, `${what}: opening the writer must not cut off acknowledged records`);
  assert.ok(!fs.existsSync(path.join(vault, 'writer.lock')), 'the refused writer released its lock');

  if (cli) {
    const v = runCli(['verify', '--vault', vault, '--hsm-secret', node.hsmSecretPath, '--json']);
    assert.equal(v.code, 3, `${what}: verify exit code; ${v.stderr}`);
    const json = JSON.parse(v.stdout) as VerifyReport;
    assert.equal(json.ok, false);
    assert.equal(json.firstBadRecord?.seq, e.seq.toString());
    assert.equal(json.firstBadRecord?.segment, e.segment);
    const r = runCli(['restore', '--vault', vault, '--hsm-secret', node.hsmSecretPath, '--to', to]);
    assert.equal(r.code, 1, `${what}: restore exit code`);
    assert.match(r.stderr, new RegExp(`^lnbackup: record ${e.seq}\\b`), what);
    assert.doesNotMatch(r.stderr, /TypeError|RangeError|at .*\.js:\d+/, 'no stack trace');
    assert.ok(!fs.existsSync(to));
    assertNoSecrets(node, v.stdout + v.stderr + r.stdout + r.stderr, `${what}: CLI output`);
  }
  assertNoSecrets(node, JSON.stringify(report), `${what}: verify report`);
  return report;
}

test('pristine vault: verify ok, restore equals the plain replay, CLI verify exits 0', () => {
  assert.ok(segments.length >= 20, `${segments.length} segments`);
  const report = verifyVault(node.vault, node.keys);
  assert.equal(report.ok, true);
  assert.equal(report.records, records.length);
  const to = path.join(work, 'pristine.sqlite3');
  const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to });
  assert.equal(r.version, 431);
  assert.ok(dumpFile(to) === dumpOf(plainReplay(effectiveWrites(calls))));
  const v = runCli(['verify', '--vault', node.vault, '--hsm-secret', node.hsmSecretPath, '--json']);
  assert.equal(v.code, 0, v.stderr);
  assert.equal((JSON.parse(v.stdout) as VerifyReport).ok, true);
  assertNoSecrets(node, v.stdout + v.stderr, 'verify output');
});

test('a flipped byte in a sealed body: authentication fails at that record', () => {
  const r = middleRecords[1];
  const vault = damaged((v) => flip(v, r, HEADER_BYTES + Math.floor((r.size - HEADER_BYTES) / 2), 0x40));
  assertDamage(vault, { seq: r.seq, segment: r.segment, offset: r.offset, reason: /authentication failed/ });
});

test('a flipped byte in a header: the length field (smaller, larger, beyond the segment) and the seq field', () => {
  const r = middleRecords[1];
  // Lowest length byte: the record is cut at another place, so it no longer authenticates.
  assertDamage(
    damaged((v) => flip(v, r, 11, 0x01)),
    { seq: r.seq, segment: r.segment, offset: r.offset, reason: /authentication failed/ },
  );
  // +64 KiB: the record would run past the end of its (not last) segment.
  assertDamage(
    damaged((v) => flip(v, r, 9, 0x01)),
    { seq: r.seq, segment: r.segment, offset: r.offset, reason: /segment ends inside a record \(truncated\)/ },
    false,
  );
  // Beyond MAX_SEALED_BYTES: out of bounds.
  assertDamage(
    damaged((v) => flip(v, r, 8, 0x80)),
    { seq: r.seq, segment: r.segment, offset: r.offset, reason: /bad record header: sealed length \d+ is out of bounds/ },
    false,
  );
  // Sequence number.
  assertDamage(
    damaged((v) => flip(v, r, 19, 0x02)),
    {
      seq: r.seq,
      segment: r.segment,
      offset: r.offset,
      reason: new RegExp(`found record ${r.seq ^ 2n} where ${r.seq} belongs`),
    },
  );
  // Magic, version, reserved, nonce.
  for (const [at, reason] of [
    [0, /bad magic/],
    [4, /unsupported record format version/],
    [6, /reserved header bytes/],
    [30, /authentication failed/],
  ] as [number, RegExp][]) {
    assertDamage(
      damaged((v) => flip(v, r, at, 0x10)),
      { seq: r.seq, segment: r.segment, offset: r.offset, reason },
      false,
    );
  }
});

test('a truncated middle segment: inside a record, and at a record boundary', () => {
  const cut = middleRecords[middleRecords.length - 1];
  const vault = damaged((v) => fs.truncateSync(segPath(v, middle), cut.offset + 100));
  assertDamage(vault, { seq: cut.seq, segment: middle, offset: cut.offset, reason: /truncated/ });
  // Cut exactly before its last record: the next segment shows the gap.
  const next = segments[segments.indexOf(middle) + 1];
  const vault2 = damaged((v) => fs.truncateSync(segPath(v, middle), cut.offset));
  assertDamage(vault2, { seq: cut.seq, segment: next, offset: 0, reason: new RegExp(`records ${cut.seq}\\.\\.${cut.seq} are missing`) }, false);
});

test('a deleted middle segment: its first record is named missing', () => {
  const i = segments.indexOf(middle);
  const gone = inSegment(middle);
  const vault = damaged((v) => fs.rmSync(segPath(v, middle)));
  assertDamage(vault, {
    seq: gone[0].seq,
    segment: segments[i + 1],
    offset: 0,
    reason: new RegExp(`records ${gone[0].seq}\\.\\.${gone[gone.length - 1].seq} are missing`),
  });
});

test('two records swapped inside a segment (different sizes: the file is rewritten)', () => {
  const [a, , c] = middleRecords;
  const [x, y] = a.size !== c.size ? [a, c] : [middleRecords[0], middleRecords.find((r) => r.size !== middleRecords[0].size) as RecordPlace];
  assert.notEqual(x.size, y.size);
  const vault = damaged((v) => {
    const file = segPath(v, middle);
    const b = fs.readFileSync(file);
    const part = (r: RecordPlace): Buffer => b.subarray(r.offset, r.offset + r.size);
    const out = Buffer.concat([b.subarray(0, x.offset), part(y), b.subarray(x.offset + x.size, y.offset), part(x), b.subarray(y.offset + y.size)]);
    assert.equal(out.length, b.length);
    fs.writeFileSync(file, out);
  });
  assertDamage(vault, { seq: x.seq, segment: middle, offset: x.offset, reason: new RegExp(`found record ${y.seq} where ${x.seq} belongs`) });
  // Same-size swap of two adjacent records: same verdict.
  const pair = records.find(
    (r, k) => k + 1 < records.length && records[k + 1].segment === r.segment && records[k + 1].size === r.size && r.segment !== lastSegment,
  );
  assert.ok(pair, 'no two adjacent records of the same size');
  {
    const other = records[records.indexOf(pair) + 1];
    const vault2 = damaged((v) => {
      const file = segPath(v, pair.segment);
      const b = fs.readFileSync(file);
      const first = Buffer.from(b.subarray(pair.offset, pair.offset + pair.size));
      b.copy(b, pair.offset, other.offset, other.offset + other.size);
      first.copy(b, other.offset);
      fs.writeFileSync(file, b);
    });
    assertDamage(
      vault2,
      { seq: pair.seq, segment: pair.segment, offset: pair.offset, reason: new RegExp(`found record ${other.seq} where ${pair.seq} belongs`) },
      false,
    );
  }
});

test('replay: an old record (or the last one) appended again at the end of the last segment', () => {
  const old = middleRecords[0];
  const end = fs.statSync(segPath(node.vault, lastSegment)).size;
  const append = (r: RecordPlace) => (v: string) => {
    const b = fs.readFileSync(segPath(v, r.segment)).subarray(r.offset, r.offset + r.size);
    fs.appendFileSync(segPath(v, lastSegment), b);
  };
  assertDamage(damaged(append(old)), {
    seq: lastSeq + 1n,
    segment: lastSegment,
    offset: end,
    reason: new RegExp(`found record ${old.seq} where ${lastSeq + 1n} belongs \\(an old record replayed`),
  });
  const last = records[records.length - 1];
  assertDamage(damaged(append(last)), { seq: lastSeq + 1n, segment: lastSegment, offset: end, reason: new RegExp(`found record ${lastSeq} where`) }, false);
});

test('a record (and a whole segment) from another vault of the same key is refused', () => {
  const other = makeNode('corrupt-other', { segmentBytes: 4096, hsmSecret: fs.readFileSync(node.hsmSecretPath) });
  feedNode(other, calls);
  assert.notEqual(other.vaultId, node.vaultId);
  assert.ok(other.keys.record.equals(node.keys.record), 'same key');
  const r = middleRecords[1];
  const theirs = [...new VaultReader(openIdentity(other.vault, other.keys), other.keys, other.vault).records()].find((x) => x.seq === r.seq);
  assert.ok(theirs);
  const foreign = fs.readFileSync(theirs.segment.path).subarray(theirs.offset, theirs.offset + theirs.size);
  const vault = damaged((v) => {
    const file = segPath(v, r.segment);
    const b = fs.readFileSync(file);
    fs.writeFileSync(file, Buffer.concat([b.subarray(0, r.offset), foreign, b.subarray(r.offset + r.size)]));
  });
  assertDamage(vault, { seq: r.seq, segment: r.segment, offset: r.offset, reason: /authentication failed/ });
  // Their whole segment of the same name over ours.
  const theirSeg = path.join(other.vault, SEGMENTS_DIR, middle);
  assert.ok(fs.existsSync(theirSeg), 'the same history makes the same segment names');
  {
    const vault2 = damaged((v) => fs.copyFileSync(theirSeg, segPath(v, middle)));
    assertDamage(vault2, { seq: middleRecords[0].seq, segment: middle, offset: 0, reason: /authentication failed/ }, false);
  }
});

test('a record from a fork of the same vault (same key, vault id and seq) breaks the hash chain', () => {
  // An old copy of this very vault that went on with other records (a second writer, a restored
  // copy): its records authenticate here and carry the right numbers; only the chain tells.
  const last2 = records.slice(-2);
  assert.ok(last2.every((r) => r.segment === lastSegment));
  const fork = damaged((v) => fs.truncateSync(segPath(v, lastSegment), last2[0].offset));
  const extra = "INSERT INTO vars (name, val) VALUES ('lnbackup-test-fork', 'x')";
  const j = Journal.open(fork, node.keys, node.dbPath);
  try {
    for (const v of [430, 431]) {
      const c = calls.find((x) => x.bumps && x.dataVersion === v) as (typeof calls)[number];
      const out = j.record(v, [extra.replace("'x'", `'${v}'`), ...c.writes]);
      assert.equal(out.kind, 'stored');
    }
  } finally {
    j.close();
  }
  const forkRecords = [...new VaultReader(openIdentity(fork, node.keys), node.keys, fork).records()];
  const theirs = forkRecords[forkRecords.length - 1];
  assert.equal(theirs.seq, lastSeq);
  const mine = last2[1];
  const vault = damaged((v) => {
    const file = segPath(v, lastSegment);
    const b = fs.readFileSync(file);
    const foreign = fs.readFileSync(theirs.segment.path).subarray(theirs.offset, theirs.offset + theirs.size);
    fs.writeFileSync(file, Buffer.concat([b.subarray(0, mine.offset), foreign, b.subarray(mine.offset + mine.size)]));
  });
  assertDamage(vault, { seq: lastSeq, segment: lastSegment, offset: mine.offset, reason: /hash chain broken/ });
});

function assertWrongKey(vault: string, keys: VaultNode['keys'], hsmSecretPath: string, pattern: RegExp, nodes: VaultNode[]): void {
  assert.throws(
    () => verifyVault(vault, keys),
    (e: unknown) => e instanceof WrongKeyError && pattern.test(e.message),
  );
  const to = path.join(fs.mkdtempSync(path.join(work, 'wk-')), 'db.sqlite3');
  assert.throws(
    () => restoreDatabase({ vaultDir: vault, keys, to }),
    (e: unknown) => e instanceof WrongKeyError && pattern.test(e.message),
  );
  assert.ok(!fs.existsSync(to));
  assert.throws(() => Journal.open(vault, keys, node.dbPath), WrongKeyError);
  assert.throws(() => vaultStatus(vault, keys), WrongKeyError);
  const v = runCli(['verify', '--vault', vault, '--hsm-secret', hsmSecretPath, '--json']);
  assert.equal(v.code, 1, v.stderr);
  assert.equal((JSON.parse(v.stdout) as { ok: boolean }).ok, false);
  assert.match(v.stderr, pattern);
  const r = runCli(['restore', '--vault', vault, '--hsm-secret', hsmSecretPath, '--to', to]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, pattern);
  const s = runCli(['status', '--vault', vault, '--hsm-secret', hsmSecretPath, '--json']);
  assert.equal(s.code, 1);
  for (const n of nodes) assertNoSecrets(n, v.stdout + v.stderr + r.stdout + r.stderr + s.stdout + s.stderr, 'wrong-key output');
}

test("another node's hsm_secret: WrongKeyError before any record is read; no key in any output", () => {
  const stranger = makeNode('corrupt-stranger');
  assert.notEqual(stranger.nodeId, node.nodeId);
  assertWrongKey(node.vault, stranger.keys, stranger.hsmSecretPath, new RegExp(`does not open the vault .* belongs to node ${node.nodeId}`), [node, stranger]);
});

test('an edited VAULT.json (node id, vault id, segment size) no longer matches its key check: WrongKeyError (its copy gone too)', () => {
  // The edit is made to both VAULT.json and its copy (or the copy is gone): no good identity is left.
  const edit = (change: (id: Record<string, unknown>) => void, keepCopy = false) =>
    damaged((v) => {
      const file = path.join(v, 'VAULT.json');
      const id = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
      change(id);
      fs.writeFileSync(file, JSON.stringify(id));
      if (!keepCopy) fs.rmSync(path.join(v, 'VAULT.json.copy'));
    });
  const otherNode = `02${'ab'.repeat(32)}`;
  assertWrongKey(
    edit((id) => (id.nodeId = otherNode)),
    node.keys,
    node.hsmSecretPath,
    /does not open the vault .*if VAULT\.json was edited/,
    [node],
  );
  // With its copy intact, the edit is damage the copy undoes: verify and restore read the identity
  // from the copy and say so (the library calls without repair still refuse).
  const healed = edit((id) => (id.nodeId = otherNode), true);
  assert.throws(() => verifyVault(healed, node.keys), WrongKeyError);
  const v = runCli(['verify', '--vault', healed, '--hsm-secret', node.hsmSecretPath, '--json']);
  assert.equal(v.code, 0, v.stderr);
  const report = JSON.parse(v.stdout) as { ok: boolean; notices: string[] };
  assert.equal(report.ok, true);
  assert.ok(
    report.notices.some((n) => /VAULT\.json is damaged .*read from VAULT\.json\.copy/.test(n)),
    JSON.stringify(report.notices),
  );
  for (const change of [
    (id: Record<string, unknown>) => (id.vaultId = crypto.randomBytes(16).toString('hex')),
    (id: Record<string, unknown>) => (id.segmentBytes = 8192),
    (id: Record<string, unknown>) => (id.createdAt = new Date(0).toISOString()),
    (id: Record<string, unknown>) => (id.keyCheck = (id.keyCheck as string).replace(/^./, (c) => (c === '0' ? '1' : '0'))),
  ]) {
    const vault = edit(change);
    assert.throws(() => verifyVault(vault, node.keys), WrongKeyError);
    assert.throws(() => restoreDatabase({ vaultDir: vault, keys: node.keys, to: path.join(work, 'never.sqlite3') }), WrongKeyError);
  }
  // Not JSON, or not an identity at all: a plain VaultError saying the identity is damaged.
  for (const content of [
    '{',
    '[]',
    '{"format":"lnbackup-vault"}',
    JSON.stringify({ ...(JSON.parse(fs.readFileSync(path.join(node.vault, 'VAULT.json'), 'utf8')) as VaultIdentity), segmentBytes: 1 }),
  ]) {
    const vault = damaged((v) => fs.writeFileSync(path.join(v, 'VAULT.json'), content));
    assert.throws(
      () => verifyVault(vault, node.keys),
      (e: unknown) => e instanceof VaultError && !(e instanceof WrongKeyError) && /identity is damaged/.test(e.message),
    );
  }
});

test('random single-byte flips anywhere in the vault name the record that holds the byte', () => {
  const seed = Date.now() >>> 0;
  let state = seed;
  const rand = (): number => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 4294967296;
  };
  const total = records.reduce((n, r) => n + r.size, 0);
  for (let k = 0; k < 25; k++) {
    let pos = Math.floor(rand() * total);
    const r = records.find((x) => {
      if (pos < x.size) return true;
      pos -= x.size;
      return false;
    }) as RecordPlace;
    // The length field of a record in the last segment is covered by its own test below.
    if (r.segment === lastSegment && pos >= 8 && pos < 12) continue;
    const mask = 1 << Math.floor(rand() * 8);
    const vault = damaged((v) => flip(v, r, pos, mask));
    const report = verifyVault(vault, node.keys);
    assert.equal(
      report.firstBadRecord?.seq,
      r.seq.toString(),
      `byte ${pos} of record ${r.seq} ^ ${mask} (seed ${seed}): ${JSON.stringify(report.firstBadRecord)}`,
    );
    assert.equal(report.firstBadRecord?.segment, r.segment);
    assert.throws(
      () => restoreDatabase({ vaultDir: vault, keys: node.keys, to: path.join(work, `never-${k}.sqlite3`) }),
      (e: unknown) => isExpectedError(e) && (e as Error).message.includes(`record ${r.seq}`),
      `seed ${seed}`,
    );
    fs.rmSync(vault, { recursive: true });
  }
});

test('a flipped length byte of a record in the LAST segment is damage, not a torn tail, and the writer keeps the records after it', () => {
  const r = inSegment(lastSegment)[0];
  const vault = damaged((v) => flip(v, r, 9, 0x01));
  assertDamage(vault, { seq: r.seq, segment: lastSegment, offset: r.offset, reason: /./ }, false);
});

test('deleting the first segment is named as records 1.. missing, and restore says so', () => {
  const vault = damaged((v) => fs.rmSync(segPath(v, segments[0])));
  assertDamage(vault, { seq: 1n, segment: segments[1], offset: 0, reason: /missing/ }, false);
});

test('a torn tail (a partial last record) is not corruption: verify ok with tornTail, restore works, the CLI exits 0', () => {
  const last = records[records.length - 1];
  const end = fs.statSync(segPath(node.vault, lastSegment)).size;
  const vault = damaged((v) => {
    const b = fs.readFileSync(segPath(v, lastSegment)).subarray(last.offset, last.offset + last.size);
    // The next record (seq lastSeq+1) being written when the machine died: a prefix of a record.
    const next = Buffer.from(b);
    next.writeBigUInt64BE(lastSeq + 1n, 12);
    fs.appendFileSync(segPath(v, lastSegment), next.subarray(0, Math.floor(next.length / 2)));
  });
  const torn = Math.floor(last.size / 2);
  const report = verifyVault(vault, node.keys);
  assert.equal(report.ok, true);
  assert.equal(report.firstBadRecord, null);
  assert.deepEqual(report.tornTail, { segment: lastSegment, offset: end, bytes: torn });
  assert.equal(report.records, records.length);
  const to = path.join(work, 'torn.sqlite3');
  const r = restoreDatabase({ vaultDir: vault, keys: node.keys, to });
  assert.deepEqual(r.tornTail, { segment: lastSegment, offset: end, bytes: torn });
  assert.equal(r.version, 431);
  assert.ok(dumpFile(to) === dumpOf(plainReplay(effectiveWrites(calls))));
  const v = runCli(['verify', '--vault', vault, '--hsm-secret', node.hsmSecretPath]);
  assert.equal(v.code, 0, v.stderr);
  assert.match(v.stdout, new RegExp(`a torn, never-acknowledged record at ${lastSegment}:${end} \\(${torn} bytes\\) is ignored`));
  const rc = runCli(['restore', '--vault', vault, '--hsm-secret', node.hsmSecretPath, '--to', path.join(work, 'torn-cli.sqlite3'), '--json']);
  assert.equal(rc.code, 0, rc.stderr);
  assert.equal((JSON.parse(rc.stdout) as { tornTail: { offset: number } }).tornTail.offset, end);
  assertNoSecrets(node, v.stdout + v.stderr + rc.stdout + rc.stderr, 'torn-tail output');
  // The writer cuts it off, and the vault is whole again.
  const notices: string[] = [];
  Journal.open(vault, node.keys, node.dbPath, (m) => notices.push(m)).close();
  assert.equal(notices.length, 1);
  assert.equal(fs.statSync(segPath(vault, lastSegment)).size, end);
  const after = verifyVault(vault, node.keys);
  assert.deepEqual([after.ok, after.tornTail, after.records], [true, null, records.length]);
});
