// `lnbackup scrub` as a real child process, on a node's vault and on a server's data folder: the
// --json shape, exit codes (0 clean or repaired, 1 damage left or found without --repair, 2 usage),
// repairs byte for byte; a real `lnbackup server` with a short --scrub-interval repairing a damaged
// segment on its own and saying so in its status; the file store serving records repaired on
// read; the writers repairing the active segment from its mirror; and kill -9 in the middle of
// `scrub --repair` leaving every file either as it was or repaired, never half-written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { FileStore } from '../src/server/storage/fileStore.js';
import { genesisHash, RecordType } from '../src/vault/format.js';
import { createIdentity, IDENTITY_FILE } from '../src/vault/identity.js';
import { vaultKeysFromRoot } from '../src/vault/keys.js';
import { writeProtectedPack } from '../src/vault/packFiles.js';
import { RawVaultAppender, readRawRecords } from '../src/vault/rawRecords.js';
import { VaultWriter } from '../src/vault/writer.js';
import { RecordSealer } from '../src/vault/sealer.js';
import { listSegments } from '../src/vault/segments.js';
import type { StoreRecord } from '../src/server/storage/store.js';
import { cliEntry, tempDir } from './helpers/paths.js';
import { envCount, Prng } from './helpers/prng.js';
import { cli } from './helpers/remoteNode.js';
import { startServer } from './helpers/serverProcess.js';
import { node3Calls } from './helpers/reference.js';
import { makeNode } from './helpers/testNode.js';
import { feedNode } from './helpers/vaultFixture.js';
import { sleep, until } from './helpers/waiting.js';

const seed = envCount('SCRUB_SEED', crypto.randomInt(0, 0xffffffff));
console.log(`# scrub seed ${seed} (rerun with SCRUB_SEED=${seed})`);

/** Every file under `dir` (relative path → bytes). */
function filesOf(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  const walk = (d: string): void => {
    for (const name of fs.readdirSync(d)) {
      const full = path.join(d, name);
      if (fs.statSync(full).isDirectory()) walk(full);
      else out.set(path.relative(dir, full), fs.readFileSync(full));
    }
  };
  walk(dir);
  return out;
}

async function sealedVault(prefix: string): Promise<{ vault: string; sealed: string[]; node: ReturnType<typeof makeNode> }> {
  const node = makeNode(prefix, { segmentBytes: 32 * 1024 });
  feedNode(node, node3Calls());
  const segs = listSegments(node.vault);
  await until('every sealed segment has its parity', () =>
    segs.slice(0, -1).every((s) => fs.existsSync(s.path + '.parity') && !fs.existsSync(s.path + '.mirror')),
  );
  return { vault: node.vault, sealed: segs.slice(0, -1).map((s) => s.path), node };
}

/**
 * Zeroes 4 KiB block `block` of a file, or for a file of one stripe (under 96 KiB: its 24 shards
 * are shorter than 4 KiB, see docs/FORMAT.md) 1 KiB at `block` KiB, which stays inside the tolerance.
 */
function zeroBlock(file: string, block: number): void {
  const b = fs.readFileSync(file);
  const unit = b.length < 96 * 1024 ? 1024 : 4096;
  b.fill(0, block * unit, Math.min(b.length, (block + 1) * unit));
  fs.writeFileSync(file, b);
}

interface ScrubJson {
  ok: boolean;
  repair: boolean;
  checkedFiles: number;
  bytes: number;
  repairedFiles: number;
  damagedFiles: number;
  files: { file: string; kind: string; status: string; found: string[]; fixed: string[]; lost: { start: number; end: number }[] }[];
}

test('scrub --vault: clean, damage found (exit 1), repaired (exit 0, byte for byte), beyond repair (exit 1 with the ranges), usage (exit 2)', async () => {
  const { vault, sealed } = await sealedVault('scrub-cli');
  const pristine = filesOf(vault);
  const clean = await cli(['scrub', '--vault', vault, '--json']);
  assert.equal(clean.code, 0, clean.stderr);
  const cj = clean.json as unknown as ScrubJson;
  assert.equal(cj.ok, true);
  assert.equal(cj.repair, false);
  assert.deepEqual(cj.files, []);
  assert.equal(cj.checkedFiles, listSegments(vault).length + 1); // segments and VAULT.json
  assert.ok(cj.bytes > 100_000);

  // Damage: a zeroed block in a sealed segment, a deleted parity file, a damaged VAULT.json.
  const target = sealed[1];
  zeroBlock(target, 2);
  fs.rmSync(sealed[0] + '.parity');
  const id = fs.readFileSync(path.join(vault, IDENTITY_FILE));
  id[10] ^= 0x20;
  fs.writeFileSync(path.join(vault, IDENTITY_FILE), id);
  const found = await cli(['scrub', '--vault', vault, '--json']);
  assert.equal(found.code, 1, found.stderr);
  const fj = found.json as unknown as ScrubJson;
  assert.equal(fj.ok, false);
  const rel = (p: string): string => path.relative(vault, p);
  assert.deepEqual(
    fj.files.map((f) => [f.file, f.status]).sort(),
    [
      [IDENTITY_FILE, 'damaged'],
      [rel(sealed[0]), 'unprotected'],
      [rel(target), 'damaged'],
    ].sort(),
  );
  assert.ok(fs.readFileSync(target).subarray(2048, 3072).equals(Buffer.alloc(1024)), 'nothing was changed without --repair');

  const fixed = await cli(['scrub', '--vault', vault, '--repair', '--json']);
  assert.equal(fixed.code, 0, fixed.stdout + fixed.stderr);
  const xj = fixed.json as unknown as ScrubJson;
  assert.equal(xj.repairedFiles, 3);
  for (const [f, b] of pristine) {
    if (f.endsWith('.mirror') || f === 'writer.lock') continue;
    assert.ok(fs.readFileSync(path.join(vault, f)).equals(b), `${f} is back byte for byte`);
  }
  const again = await cli(['scrub', '--vault', vault]);
  assert.equal(again.code, 0);
  assert.match(again.stdout, /ok: no damage/);

  // Beyond repair: four blocks of one stripe. Exit 1 with the exact ranges, in text and JSON.
  const big = sealed[2];
  const size = fs.statSync(big).size;
  const S = Math.ceil(Math.ceil(size / 24) / 8) * 8;
  const b = fs.readFileSync(big);
  for (const shard of [1, 5, 9, 13]) b.fill(0x55, shard * S, Math.min(shard * S + 4096, (shard + 1) * S));
  fs.writeFileSync(big, b);
  const lost = await cli(['scrub', '--vault', vault, '--repair', '--json']);
  assert.equal(lost.code, 1);
  const lj = lost.json as unknown as ScrubJson;
  const entry = lj.files.find((f) => f.file === rel(big));
  assert.equal(entry?.status, 'damaged');
  const len = Math.min(4096, S);
  assert.deepEqual(
    entry?.lost,
    [1, 5, 9, 13].map((s) => ({ start: s * S, end: s * S + len })),
  );
  assert.ok(fs.readFileSync(big).equals(b), 'damage beyond repair is left as it is');
  const text = await cli(['scrub', '--vault', vault]);
  assert.equal(text.code, 1);
  assert.match(text.stdout, new RegExp(`LOST: +bytes ${S}\\.\\.${S + len - 1}`));

  // Usage errors: exit 2; a path that is not a vault: exit 1.
  assert.equal((await cli(['scrub'])).code, 2);
  assert.equal((await cli(['scrub', '--vault', vault, '--data', vault])).code, 2);
  assert.equal((await cli(['scrub', '--vault', vault, '--bogus'])).code, 2);
  const none = await cli(['scrub', '--vault', tempDir('scrub-empty'), '--json']);
  assert.equal(none.code, 1);
  assert.match(String(none.json?.error), /not an lnbackup vault/);
});

/** A server data folder made by the file store itself: one vault with two sealed segments (three generations) and a pack. */
async function serverData(): Promise<{ dataDir: string; vaultDir: string; sealed: string[]; records: StoreRecord[]; vaultId: string }> {
  const dataDir = tempDir('scrub-server');
  const keys = vaultKeysFromRoot(crypto.randomBytes(32));
  const idDir = tempDir('scrub-id');
  const id = createIdentity(idDir, keys, null, 16 * 1024 * 1024);
  const vaultIdBytes = Buffer.from(id.vaultId, 'hex');
  const sealer = new RecordSealer(keys.record, vaultIdBytes, { lastSeq: 0n, lastHash: genesisHash(vaultIdBytes), generation: 0 });
  const rng = new Prng(seed);
  const records: StoreRecord[] = [];
  let version = 0;
  for (let generation = 1; generation <= 3; generation++) {
    for (let i = 0; i < 12; i++) {
      const payload = Buffer.alloc(rng.int(20_000, 60_000), rng.int(0, 255));
      const s = sealer.seal({ type: RecordType.Writes, generation, dataVersion: ++version, supersedes: 0n, payload });
      records.push({ seq: s.seq, generation, bytes: s.bytes });
    }
  }
  const store = await FileStore.open(dataDir);
  await store.createVault('02' + crypto.randomBytes(32).toString('hex'), id.vaultId, fs.readFileSync(path.join(idDir, IDENTITY_FILE)));
  await store.append(id.vaultId, records);
  await store.close();
  const vaultDir = path.join(dataDir, 'vaults', id.vaultId);
  const segs = listSegments(vaultDir);
  assert.equal(segs.length, 3);
  await until("the server vault's sealed segments have parity", () =>
    segs.slice(0, 2).every((s) => fs.existsSync(s.path + '.parity') && !fs.existsSync(s.path + '.mirror')),
  );
  const pack = Buffer.alloc(300_000, 7);
  await writeProtectedPack(vaultDir, `p-${'cd'.repeat(16)}.pack`, pack);
  return { dataDir, vaultDir, sealed: segs.slice(0, 2).map((s) => s.path), records, vaultId: id.vaultId };
}

test('scrub --data on a server data folder, and the file store serving records repaired on read', async () => {
  const s = await serverData();
  assert.ok(fs.existsSync(path.join(s.vaultDir, 'VAULT.json.copy')), 'the server keeps a copy of the identity too');
  const pristine = filesOf(s.vaultDir);
  const ok = await cli(['scrub', '--data', s.dataDir, '--json']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal((ok.json as unknown as { vaults: unknown[] }).vaults.length, 1);

  // Repair on read: the store serves the original records from a damaged segment, and says so.
  zeroBlock(s.sealed[0], 3);
  const notices: string[] = [];
  const store = await FileStore.open(s.dataDir, (m) => notices.push(m));
  try {
    const got = await store.readRecords(s.vaultId, 1n, 1 << 30);
    assert.equal(got.length, s.records.length);
    for (let i = 0; i < got.length; i++) assert.ok(got[i].bytes.equals(s.records[i].bytes), `record ${i + 1} served repaired`);
    assert.ok(
      notices.some((n) => /served repaired from its parity/.test(n)),
      JSON.stringify(notices),
    );
    // ...and repairs the file in place in the background.
    await until('the store repaired the segment in place', () =>
      fs.readFileSync(s.sealed[0]).equals(pristine.get(path.relative(s.vaultDir, s.sealed[0])) as Buffer),
    );
  } finally {
    await store.close();
  }
  assert.deepEqual(
    readRawRecords(s.vaultDir, 1n, 1 << 30).map((r) => r.bytes.length),
    s.records.map((r) => r.bytes.length),
  );

  zeroBlock(s.sealed[1], 0);
  const packFile = path.join(s.vaultDir, 'pages', `p-${'cd'.repeat(16)}.pack`);
  zeroBlock(packFile, 30);
  const fixed = await cli(['scrub', '--data', s.dataDir, '--repair', '--json']);
  assert.equal(fixed.code, 0, fixed.stdout);
  assert.equal((fixed.json as unknown as { repairedFiles: number }).repairedFiles, 2);
  for (const [f, b] of pristine) if (!f.endsWith('.mirror')) assert.ok(fs.readFileSync(path.join(s.vaultDir, f)).equals(b), `${f} back byte for byte`);
});

test('lnbackup server --scrub-interval: a damaged segment is repaired on schedule and the status says so', async () => {
  const s = await serverData();
  const original = fs.readFileSync(s.sealed[1]);
  const srv = await startServer({ dataDir: s.dataDir, args: ['--scrub-interval', '1s'] });
  try {
    zeroBlock(s.sealed[1], 1);
    const damagedAt = Date.now();
    const rel = path.relative(s.vaultDir, s.sealed[1]);
    type Status = { scrub?: { intervalMs: number; last: { finishedAt: string; repairedFiles: number; repaired: { vault: string; file: string }[] } | null } };
    const status = await until(
      'a scrub after the damage that repaired it',
      async () => {
        const r = await cli(['server', 'status', '--data', s.dataDir, '--json']);
        const st = r.json as unknown as Status | null;
        const last = st?.scrub?.last;
        return last && Date.parse(last.finishedAt) > damagedAt && last.repaired.some((x) => x.file === rel && x.vault === s.vaultId) ? st : null;
      },
      120_000,
      500,
    );
    assert.equal(status.scrub?.intervalMs, 1000);
    assert.ok(fs.readFileSync(s.sealed[1]).equals(original), 'repaired byte for byte');
    const text = await cli(['server', 'status', '--data', s.dataDir]);
    assert.match(text.stdout, /scrub: +last .* files, .* checked, \d+ repaired, 0 damaged/);
    assert.match(srv.stderr(), /scrub: \d+ files .* checked/);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
  // --scrub-interval 0: never; a bad duration is a usage error.
  const bad = await cli(['server', '--data', s.dataDir, '--scrub-interval', 'soon']);
  assert.equal(bad.code, 2);
});

test('writers repair the active segment from its mirror at open (node writer and keyless appender)', async () => {
  const { vault, node } = await sealedVault('scrub-mirror');
  const active = listSegments(vault).at(-1)!.path;
  const original = fs.readFileSync(active);
  const damage = (): void => {
    const b = Buffer.from(original);
    b[100] ^= 0x40;
    b[original.length - 10] ^= 0x01;
    fs.writeFileSync(active, b);
  };
  damage();
  const notices: string[] = [];
  RawVaultAppender.open(vault, 32 * 1024, { onNotice: (m) => notices.push(m) }).close();
  assert.ok(fs.readFileSync(active).equals(original), 'the keyless appender repaired it from the mirror');
  assert.ok(
    notices.some((n) => new RegExp(`repaired bytes 100\\.\\.100 and bytes ${original.length - 10}\\.\\.${original.length - 10} of .* from its mirror`).test(n)),
    JSON.stringify(notices),
  );
  damage();
  const seen: string[] = [];
  const w = VaultWriter.open(vault, node.keys, { onNotice: (m) => seen.push(m) });
  w.close();
  assert.ok(fs.readFileSync(active).equals(original), 'the node writer repaired it from the mirror');
  assert.equal(seen.length, 1, JSON.stringify(seen));
  // Without the mirror the same damage is refused as damage (the record checks), never cut off.
  damage();
  fs.rmSync(active + '.mirror');
  assert.throws(() => VaultWriter.open(vault, node.keys), /authentication failed|bad record header/);
  assert.ok(!fs.readFileSync(active).equals(original));
});

test('kill -9 in the middle of scrub --repair: every file is either as it was or repaired, never half-written', async () => {
  const { vault, sealed } = await sealedVault('scrub-crash');
  const rng = new Prng(seed ^ 0xc0ffee);
  for (let i = 0; i < 16; i++) {
    const pack = Buffer.allocUnsafe(2 * 1024 * 1024);
    crypto.randomFillSync(pack);
    await writeProtectedPack(vault, `p-${crypto.randomBytes(16).toString('hex')}.pack`, pack);
  }
  const pristine = filesOf(vault);
  // Damage every sealed file (one zeroed block each) but three packs, whose parity files go instead.
  const packs = [...pristine.keys()].filter((f) => f.endsWith('.pack'));
  for (const f of [...sealed.map((p) => path.relative(vault, p)), ...packs.slice(3)]) zeroBlock(path.join(vault, f), rng.int(0, 3));
  for (const f of packs.slice(0, 3)) fs.rmSync(path.join(vault, f + '.parity'));
  const damaged = filesOf(vault);
  const work = tempDir('scrub-crash-work');

  // How long a whole repair takes here, to kill at points inside it.
  const calib = path.join(work, 'calib');
  fs.cpSync(vault, calib, { recursive: true });
  const t0 = Date.now();
  const full = await cli(['scrub', '--vault', calib, '--repair', '--json']);
  const wholeMs = Date.now() - t0;
  assert.equal(full.code, 0, full.stdout);

  // Kill points spread over the repair, moved later when a kill came before any repair and earlier
  // when it came after all of them (the machine's speed varies), until a few landed in the middle.
  let middle = 0;
  let kills = 0;
  let delay = wholeMs * 0.3;
  for (let k = 0; k < 16 && !(k >= 6 && middle >= 2); k++) {
    kills++;
    const dir = path.join(work, `k${k}`);
    fs.cpSync(vault, dir, { recursive: true });
    const child = spawn(process.execPath, [cliEntry, 'scrub', '--vault', dir, '--repair', '--json'], { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    await sleep(Math.round(delay));
    child.kill('SIGKILL');
    await exited;
    let repaired = 0;
    let old = 0;
    for (const [f, want] of pristine) {
      if (f.endsWith('.mirror') || f === 'writer.lock') continue;
      const p = path.join(dir, f);
      const have = fs.existsSync(p) ? fs.readFileSync(p) : null;
      const before = damaged.get(f) ?? null;
      if (have !== null && have.equals(want)) {
        if (!(before?.equals(want) ?? false)) repaired++;
      } else {
        assert.ok(have === before || (have !== null && before !== null && have.equals(before)), `kill ${k}: ${f} is neither as it was nor repaired`);
        old++;
      }
    }
    if (repaired > 0 && old > 0) middle++;
    delay = repaired === 0 ? delay * 1.5 : old === 0 ? delay * 0.6 : delay * (0.8 + 0.4 * rng.next());
    // Temp files of the killed scrub may be left; the next scrub removes them and finishes the job.
    const after = await cli(['scrub', '--vault', dir, '--repair', '--json']);
    assert.equal(after.code, 0, after.stdout);
    for (const [f, want] of pristine)
      if (!f.endsWith('.mirror') && f !== 'writer.lock') assert.ok(fs.readFileSync(path.join(dir, f)).equals(want), `kill ${k}: ${f} after the next scrub`);
    const leftovers = [...filesOf(dir).keys()].filter((f) => /\.tmp-\d+-\d+$/.test(f));
    assert.deepEqual(leftovers, [], `kill ${k}: temp files removed`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`# scrub crash: a whole repair took ${wholeMs} ms; ${middle} of ${kills} kills landed in the middle of it`);
  assert.ok(middle >= 1, `no kill landed in the middle of a repair (${wholeMs} ms)`);
});
