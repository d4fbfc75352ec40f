// Point-in-time restore across many generations: node1's trace through the real plugin with
// compaction often and retention keeping every generation, then restores at random versions over
// the whole history (each compared with an independent plain replay of the trace up to that
// version) and at moments taken from the vault's own call times; `lnbackup generations` lists them.
//
// Reproduce a run with PIT_SEED=<seed> (printed first); PIT_VERSIONS and PIT_TIMES change the counts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import type { RetentionSettings } from '../src/journal/retention.js';
import { decodeCall, isCallRecord } from '../src/journal/payloads.js';
import type { GenerationsReport } from '../src/restore/generationList.js';
import { listGenerations, withBaseVersions, type GenerationInfo } from '../src/restore/generations.js';
import { restoreDatabase } from '../src/restore/rebuild.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { openIdentity } from '../src/vault/identity.js';
import { vaultDiskUsage } from '../src/vault/diskUsage.js';
import { VaultReader } from '../src/vault/reader.js';
import { tracePath } from './helpers/paths.js';
import { envCount, Prng } from './helpers/prng.js';
import { dumpFile, IncrementalReplay, isTransaction, loadChain } from './helpers/reference.js';
import { setRetention } from './helpers/retention.js';
import { makeNode, type VaultNode } from './helpers/testNode.js';
import { runCli } from './helpers/vaultFixture.js';

const NODE1 = tracePath('cln-v26.06-node1.jsonl.gz');
const NODE1_LAST = 8176;
const RETENTION: Partial<RetentionSettings> = { keepGenerations: 1000, compactMinBytes: 65536, compactRatio: 0.05 };
const SEED = envCount('PIT_SEED', crypto.randomInt(2 ** 31));
const VERSIONS = envCount('PIT_VERSIONS', 20);
const TIMES = envCount('PIT_TIMES', 5);

interface History {
  readonly node: VaultNode;
  /** Every generation, with its snapshot's version and time. */
  readonly gens: GenerationInfo[];
  /** When each transaction was first recorded (ms since the epoch), by its version. */
  readonly callAt: Map<number, number>;
}

let history: Promise<History> | null = null;

/** node1 through the plugin with every generation kept (run once, shared by the tests below). */
function node1History(): Promise<History> {
  history ??= (async () => {
    const node = makeNode('pit');
    setRetention(node, RETENTION);
    const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: [NODE1], plugin: PLUGIN_PATH, progressEvery: 100_000 });
    assert.equal(run.dataVersion, NODE1_LAST);
    const identity = openIdentity(node.vault, node.keys);
    const gens = withBaseVersions(node.vault, identity, node.keys, listGenerations(node.vault));
    // The vault's own record of when each call came (a call re-recorded by a compaction keeps its time).
    const callAt = new Map<number, number>();
    for (const r of new VaultReader(identity, node.keys, node.vault).records()) {
      if (!isCallRecord(r.body.type)) continue;
      const call = decodeCall(r.body);
      if (call.at === null || !isTransaction(call.writes)) continue;
      const seen = callAt.get(r.body.dataVersion);
      if (seen !== undefined && seen !== call.at) assert.fail(`the call for version ${r.body.dataVersion} is recorded with two times (${seen}, ${call.at})`);
      callAt.set(r.body.dataVersion, call.at);
    }
    return { node, gens, callAt };
  })();
  return history;
}

test('restore at 20 random versions over 8176 versions and hundreds of generations equals the plain replay', { timeout: 10 * 60_000 }, async (t) => {
  const { node, gens, callAt } = await node1History();
  const numbers = gens.map((g) => g.generation);
  const last = numbers[numbers.length - 1];
  const line = `seed ${SEED} (rerun with PIT_SEED=${SEED}); ${gens.length} generations kept (1..${last}), ${callAt.size} timed transactions`;
  console.log(`[pit] ${line}`);
  t.diagnostic(line);
  assert.ok(gens.length > 100, `only ${gens.length} generations`);
  assert.deepEqual(
    numbers,
    Array.from({ length: last }, (_, i) => i + 1),
    'keepGenerations 1000: no generation was removed',
  );
  assert.ok(gens.every((g) => g.baseVersion !== null && g.snapshotTakenAt !== null));

  const rng = new Prng(SEED);
  const picked = new Set<number>();
  while (picked.size < Math.min(VERSIONS, NODE1_LAST)) picked.add(rng.int(1, NODE1_LAST));
  const versions = [...picked].sort((a, b) => a - b);
  const ref = new IncrementalReplay(loadChain([NODE1]));
  try {
    for (const v of versions) {
      const to = path.join(node.dir, `at-${v}.sqlite3`);
      const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, version: v });
      ref.advanceTo(v);
      const want = Math.max(...gens.filter((g) => g.baseVersion! <= v).map((g) => g.generation));
      const gave = `restore at version ${v} gave ${r.version}${r.inFlight ? ' (in flight)' : ''} from generation ${r.generation} (base ${r.baseVersion})`;
      t.diagnostic(gave);
      assert.equal(r.version, v, gave);
      assert.equal(r.inFlight, v === NODE1_LAST, `${gave}: only the last transaction is in flight`);
      assert.equal(r.generation, want, `${gave}: the newest generation starting at or before ${v} is ${want}`);
      assert.equal(r.integrityCheck, 'ok', gave);
      assert.equal(dumpFile(to), ref.dumpAt(v), `${gave}: differs from the plain replay at ${v}`);
    }
    ref.advanceTo(NODE1_LAST);
    assert.equal(ref.dumpAt(NODE1_LAST), dumpFile(node.dbPath), "the plain replay of the whole trace equals the node's database");
  } finally {
    ref.close();
  }
  assert.throws(
    () => restoreDatabase({ vaultDir: node.vault, keys: node.keys, to: path.join(node.dir, 'beyond.sqlite3'), version: NODE1_LAST + 1 }),
    /version 8177 is not in the vault/,
  );
});

test(
  'restore at a moment: the time a transaction was recorded gives that version; before the oldest generation is a clear error',
  { timeout: 10 * 60_000 },
  async (t) => {
    const { node, gens, callAt } = await node1History();
    const rng = new Prng(SEED ^ 0x5eed);
    // Moments that name one version: the transaction's time, with the next one recorded strictly later.
    const usable: number[] = [];
    for (let v = 2; v < NODE1_LAST; v++) {
      const at = callAt.get(v);
      const next = callAt.get(v + 1);
      if (at !== undefined && next !== undefined && next > at) usable.push(v);
    }
    assert.ok(usable.length > NODE1_LAST / 2, `only ${usable.length} versions have a moment of their own`);
    const picked = new Set<number>();
    while (picked.size < Math.min(TIMES, usable.length)) picked.add(rng.pick(usable));
    const versions = [...picked].sort((a, b) => a - b);
    const ref = new IncrementalReplay(loadChain([NODE1]));
    try {
      for (const v of versions) {
        const time = callAt.get(v)!;
        const to = path.join(node.dir, `time-${v}.sqlite3`);
        const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to, time });
        ref.advanceTo(v);
        const gave = `restore at ${new Date(time).toISOString()} (when version ${v} was recorded) gave ${r.version}${r.inFlight ? ' (in flight)' : ''} from generation ${r.generation}, lastCallAt ${r.lastCallAt}`;
        t.diagnostic(gave);
        assert.equal(r.version, v, gave);
        assert.equal(r.inFlight, false, `${gave}: a later call confirms it`);
        assert.ok(r.snapshotTakenAt <= time, `${gave}: its generation's snapshot was taken after the moment`);
        assert.equal(dumpFile(to), ref.dumpAt(v), `${gave}: differs from the plain replay at ${v}`);
      }
    } finally {
      ref.close();
    }
    const newest = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to: path.join(node.dir, 'now.sqlite3'), time: Date.now() });
    assert.equal(newest.version, NODE1_LAST);
    assert.equal(newest.inFlight, true);
    assert.equal(dumpFile(newest.to), dumpFile(node.dbPath));

    const oldest = Math.min(...gens.map((g) => g.snapshotTakenAt!));
    assert.throws(
      () => restoreDatabase({ vaultDir: node.vault, keys: node.keys, to: path.join(node.dir, 'too-old.sqlite3'), time: oldest - 60_000 }),
      /holds nothing as old as .*oldest generation starts at/,
    );
  },
);

test('restore at a version reports when that version was recorded (lastCallAt)', { timeout: 10 * 60_000 }, async (t) => {
  const { node, gens, callAt } = await node1History();
  const rng = new Prng(SEED ^ 0x1a57);
  // Versions inside a generation (not its snapshot's own version), so the restore applies the call itself.
  const bases = new Set(gens.map((g) => g.baseVersion));
  const inside = Array.from({ length: NODE1_LAST - 1 }, (_, i) => i + 2).filter((v) => !bases.has(v) && callAt.get(v) !== callAt.get(v + 1));
  const wrong: string[] = [];
  for (let i = 0; i < 3; i++) {
    const v = rng.pick(inside);
    const r = restoreDatabase({ vaultDir: node.vault, keys: node.keys, to: path.join(node.dir, `last-${v}.sqlite3`), force: true, version: v });
    assert.equal(r.version, v);
    const line = `restore at version ${v}: lastCallAt ${r.lastCallAt}; version ${v} was recorded at ${callAt.get(v)}, version ${v + 1} at ${callAt.get(v + 1)}`;
    t.diagnostic(line);
    if (r.lastCallAt !== callAt.get(v)) wrong.push(line);
  }
  assert.deepEqual(wrong, [], 'lastCallAt is the time of a call the restore did not apply');
});

test('lnbackup generations lists every kept generation: its span of versions and times, its calls, pages and bytes', { timeout: 10 * 60_000 }, async () => {
  const { node, gens, callAt } = await node1History();
  const r = runCli(['generations', '--vault', node.vault, '--hsm-secret', node.hsmSecretPath, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as GenerationsReport & { ok: boolean };
  assert.equal(report.ok, true);
  assert.equal(report.damage, null);
  assert.deepEqual(
    report.generations.map((g) => [g.generation, g.baseVersion]),
    gens.map((g) => [g.generation, g.baseVersion]),
  );
  report.generations.forEach((g, i) => {
    const next = report.generations[i + 1];
    const what = `generation ${g.generation}`;
    assert.equal(g.complete, true, what);
    // The first generation is init's snapshot of a node with no database yet: no pages.
    assert.ok(g.generation === 1 ? g.pages === 0 : g.pages > 0, `${what}: ${g.pages} pages`);
    // Each generation's calls reach at least where the next one's snapshot starts (calls made while
    // a compaction was built are in both: the old generation and, again, the new one).
    assert.ok(next === undefined ? g.lastVersion === NODE1_LAST : g.lastVersion >= next.baseVersion, `${what} ends at ${g.lastVersion}`);
    const lastTransactionAt = callAt.get(g.lastVersion);
    if (g.lastVersion > g.baseVersion && lastTransactionAt !== undefined) {
      assert.ok(
        g.lastCallAt !== null && Date.parse(g.lastCallAt) >= lastTransactionAt,
        `${what}: its last call at ${g.lastCallAt}, its last transaction at ${lastTransactionAt}`,
      );
    }
  });
  const usage = vaultDiskUsage(node.vault);
  assert.deepEqual([report.recordBytes, report.packBytes, report.redundancyBytes], [usage.segmentBytes, usage.packBytes, usage.sidecarBytes]);
  assert.equal(
    report.generations.reduce((n, g) => n + g.recordBytes, 0),
    report.recordBytes,
  );
  const text = runCli(['generations', '--vault', node.vault, '--hsm-secret', node.hsmSecretPath]);
  assert.match(text.stdout, new RegExp(`generation ${gens.length}: versions \\d+\\.\\.${NODE1_LAST}, `));
  assert.match(text.stdout, /^total: +[\d.]+ \w+ of records \+ [\d.]+ \w+ of page packs, \+ [\d.]+ \w+ of parity and mirrors$/m);
});
