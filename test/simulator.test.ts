// Tests of the lightningd simulator: trace loading and supersede detection, full replays as a real
// child process (no plugin, the baseline plugin), restarts at the real node's crashes, injected
// SIGKILLs of the simulator and of the plugin, and lightningd's reaction to misbehaving plugins.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { pathToFileURL } from 'node:url';
import { SimulatedLightningd, type SimulatorOptions } from '../src/simulator/lightningd.js';
import { DB_FILE, readDataVersion } from '../src/simulator/nodeDb.js';
import { pluginCommandFor } from '../src/simulator/pluginProcess.js';
import { runSimulatorUntilDone, spawnSimulator, type SimulatorExit } from '../src/simulator/runner.js';
import { loadTraceChain, parseSegmentSpec, parseTraceText, TraceFormatError, type CallEntry } from '../src/simulator/trace.js';
import type { SimulatorEvent } from '../src/simulator/events.js';
import { repoRoot, tempDir, tracePath } from './helpers/paths.js';
import { callsOf, dataVersionOf, dumpFile, dumpOf, effectiveWrites, loadChain, NODE3_CHAIN, openDbFile, plainReplay } from './helpers/reference.js';
import { ofKind } from './helpers/simEvents.js';

const baselinePlugin = path.join(repoRoot, 'dist/bench/baselinePlugin.js');

/** The node's database file in `networkDir`. */
const nodeDbFile = (networkDir: string): string => path.join(networkDir, DB_FILE);
/** The node's committed version, read the way the next lifetime would (rolling back a hot journal). */
const versionOf = (networkDir: string): number => dataVersionOf(nodeDbFile(networkDir));

test('traces: shapes are validated with line numbers; segment specs; supersede flags; continuity', () => {
  assert.throws(() => parseTraceText('{"data_version":1,"writes":[]}\n\n{"data_version":-1,"writes":[]}', 'x'), /x:3: data_version must be a u32/);
  assert.throws(() => parseTraceText('{"MARK":"a","b":1}', 'x'), TraceFormatError);
  assert.throws(() => parseTraceText('{"data_version":5,"writes":[1]}', 'x'), /x:1: writes must be/);
  assert.throws(
    () => parseTraceText(`{"data_version":5,"writes":["UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = 3"]}`, 'x'),
    /x:1: data_version 5 but the bump is from 3/,
  );
  assert.deepEqual(parseSegmentSpec('a@b.jsonl@240-'), { path: 'a@b.jsonl', from: 240 });
  assert.deepEqual(parseSegmentSpec('t.gz@1-42'), { path: 't.gz', from: 1, to: 42 });
  assert.deepEqual(parseSegmentSpec('t.gz'), { path: 't.gz' });

  const node3 = loadChain(NODE3_CHAIN);
  const superseded = callsOf(node3).filter((e) => e.superseded);
  assert.deepEqual(
    superseded.map((e) => e.dataVersion),
    [60, 70, 85, 100, 115],
  );
  assert.ok(superseded.every((e) => e.bumps && e.source.endsWith('node3-fail.jsonl.gz')));
  assert.equal(node3.filter((e) => e.kind === 'mark').length, 6);
  const node4 = loadTraceChain([{ path: tracePath('cln-v26.06-node4-preinit.jsonl.gz') }]);
  assert.deepEqual(
    callsOf(node4)
      .filter((e) => e.superseded)
      .map((e) => [e.line, e.dataVersion]),
    [[1, 1]],
  );
  // node3.jsonl.gz alone jumps from 42 to 240: the fail trace is missing in between.
  assert.throws(() => loadTraceChain([{ path: tracePath('cln-v26.06-node3.jsonl.gz') }]), /history is at data_version 42 but this call bumps from 239/);
});

test('node1 replayed with no plugin equals an independent plain replay', async () => {
  const dir = tempDir('sim-node1');
  const sim = spawnSimulator({ lightningDir: dir, traces: [tracePath('cln-v26.06-node1.jsonl.gz')], plugin: null, progressEvery: 1000 });
  const exit = await sim.exit;
  assert.equal(exit.code, 0, exit.stderr);
  const done = ofKind(exit.events, 'done')[0];
  assert.equal(done.dataVersion, 8176);
  assert.equal(done.stats.committed, 8176);
  assert.equal(ofKind(exit.events, 'committed').at(-1)?.dataVersion, 8176);

  const db = openDbFile(nodeDbFile(path.join(dir, 'regtest')));
  assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
  assert.equal(readDataVersion(db), 8176);
  const text = zlib.gunzipSync(fs.readFileSync(tracePath('cln-v26.06-node1.jsonl.gz'))).toString('utf8');
  const writeSets = text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as { writes: string[] }).writes);
  const expected = dumpOf(plainReplay(writeSets));
  const actual = dumpOf(db);
  assert.ok(actual.length > 100_000);
  assert.ok(actual === expected, 'the simulated node and the plain replay differ');
});

test('node3 chain with the baseline plugin: restarts at each superseded call, acked but never committed', async () => {
  const dir = tempDir('sim-node3');
  const networkDir = path.join(dir, 'regtest');
  const result = await runSimulatorUntilDone({ lightningDir: dir, traces: NODE3_CHAIN, plugin: baselinePlugin, progressEvery: 50 });
  assert.equal(result.dataVersion, 431);
  assert.equal(result.lifetimes.length, 6);
  const crashes = result.lifetimes.slice(0, 5).map((l) => {
    assert.equal(l.signal, 'SIGKILL');
    return ofKind(l.events, 'crash')[0];
  });
  assert.deepEqual(
    crashes.map((c) => [c.cause, c.point, c.dataVersion]),
    [60, 70, 85, 100, 115].map((v) => ['superseded', 'after-ack', v]),
  );
  // Every lifetime after a crash resumes right after the last committed call, past the superseded one.
  for (let i = 1; i < result.lifetimes.length; i++) {
    const resumed = ofKind(result.lifetimes[i].events, 'resumed')[0];
    assert.equal(resumed.dataVersion, crashes[i - 1].dataVersion - 1);
    assert.equal(resumed.preInit, 4);
    assert.ok(resumed.entry > crashes[i - 1].entry);
  }

  const entries = loadChain(NODE3_CHAIN);
  const logged = fs.readFileSync(path.join(networkDir, 'baseline.log'), 'utf8').trim().split('\n');
  const acked = logged.map((l) => JSON.parse(l) as { data_version: number; writes: string[] });
  for (const crash of crashes) {
    const e = entries[crash.entry] as CallEntry;
    assert.ok(e.superseded);
    assert.ok(acked.some((a) => a.data_version === e.dataVersion && JSON.stringify(a.writes) === JSON.stringify(e.writes)));
  }
  assert.ok(!fs.existsSync(path.join(networkDir, `${DB_FILE}-journal`)));
  const db = openDbFile(nodeDbFile(networkDir));
  assert.equal(db.pragma('integrity_check', { simple: true }), 'ok');
  assert.ok(dumpOf(db) === dumpOf(plainReplay(effectiveWrites(entries))), 'the node differs from the effective chain');
});

test('node4-preinit: the fresh node dies at its first migration, which is then re-run', async () => {
  const dir = tempDir('sim-node4');
  const trace = tracePath('cln-v26.06-node4-preinit.jsonl.gz');
  const result = await runSimulatorUntilDone({ lightningDir: dir, traces: [trace], plugin: baselinePlugin });
  assert.equal(result.dataVersion, 42);
  assert.equal(result.lifetimes.length, 2);
  assert.deepEqual(ofKind(result.lifetimes[0].events, 'crash')[0], {
    event: 'crash',
    cause: 'superseded',
    entry: 0,
    point: 'after-ack',
    dataVersion: 1,
  });
  assert.deepEqual(ofKind(result.lifetimes[1].events, 'resumed')[0], { event: 'resumed', dataVersion: 0, entry: 1, preInit: 9 });
  const entries = loadChain([trace]);
  assert.ok(dumpFile(nodeDbFile(path.join(dir, 'regtest'))) === dumpOf(plainReplay(effectiveWrites(entries))));
});

test('SIGKILL of the simulator (before the hook, after the ack, after COMMIT) and of the plugin mid-hook', async () => {
  const dir = tempDir('sim-kill');
  const networkDir = path.join(dir, 'regtest');
  const traces = NODE3_CHAIN.slice(0, 2);
  const entries = loadChain(traces);
  const version = (i: number): number => (entries[i] as CallEntry).dataVersion;
  const base = { lightningDir: dir, traces, plugin: baselinePlugin, progressEvery: 100 };
  const lifetime = async (extra: object, resumedAt: [number, number]): Promise<SimulatorExit> => {
    const exit = await spawnSimulator({ ...base, ...extra }).exit;
    assert.deepEqual(
      ofKind(exit.events, 'resumed').map((r) => [r.dataVersion, r.entry]),
      [resumedAt],
    );
    return exit;
  };
  const killedAt = (exit: SimulatorExit, entry: number): void => {
    assert.equal(exit.signal, 'SIGKILL');
    assert.equal(ofKind(exit.events, 'crash')[0].entry, entry);
  };

  // The fresh node's 211-statement schema transaction, acked then killed: a hot journal, rolled back.
  let exit = await lifetime({ killSelfAt: { entry: 0, point: 'after-ack' } }, [0, 0]);
  killedAt(exit, 0);
  assert.ok(fs.existsSync(path.join(networkDir, `${DB_FILE}-journal`)));
  assert.equal(versionOf(networkDir), 0);

  exit = await lifetime({ killSelfAt: { entry: 5, point: 'before-hook' } }, [0, 0]);
  killedAt(exit, 5);
  assert.equal(versionOf(networkDir), version(5) - 1);

  exit = await lifetime({ killSelfAt: { entry: 20, point: 'after-commit' } }, [version(5) - 1, 5]);
  killedAt(exit, 20);
  assert.equal(versionOf(networkDir), version(20));

  exit = await lifetime({ killSelfAt: { entry: 25, point: 'after-ack' } }, [version(20), 21]);
  killedAt(exit, 25);
  assert.equal(versionOf(networkDir), version(25) - 1);

  exit = await lifetime({ killPluginAt: 30 }, [version(25) - 1, 25]);
  assert.equal(exit.code, 2);
  const aborted = ofKind(exit.events, 'aborted')[0];
  assert.match(aborted.reason, /plugin exited \(signal SIGKILL\) during db_write/);
  assert.deepEqual([aborted.entry, aborted.dataVersion, aborted.lastCommitted], [30, version(30), version(30) - 1]);
  assert.equal(versionOf(networkDir), version(30) - 1);

  const result = await runSimulatorUntilDone(base);
  assert.equal(ofKind(result.lifetimes[0].events, 'resumed')[0].entry, 30);
  assert.equal(result.dataVersion, 239);
  assert.ok(dumpFile(nodeDbFile(networkDir)) === dumpOf(plainReplay(effectiveWrites(entries))));
});

test('--wait spin: the simulator busy-polls for each answer as lightningd does (its CPU runs while it waits); the node ends the same, and a plugin killed mid-hook is seen', async () => {
  const dir = tempDir('sim-spin');
  const networkDir = path.join(dir, 'regtest');
  const traces = NODE3_CHAIN.slice(0, 2);
  const entries = loadChain(traces);
  const killed = await spawnSimulator({ lightningDir: dir, traces, plugin: baselinePlugin, killPluginAt: 30, wait: 'spin' }).exit;
  assert.equal(killed.code, 2);
  assert.match(ofKind(killed.events, 'aborted')[0].reason, /plugin exited .*during db_write/);
  assert.equal(versionOf(networkDir), (entries[30] as CallEntry).dataVersion - 1);
  const result = await runSimulatorUntilDone({ lightningDir: dir, traces, plugin: baselinePlugin, wait: 'spin' });
  assert.equal(result.dataVersion, 239);
  assert.ok(dumpFile(nodeDbFile(networkDir)) === dumpOf(plainReplay(effectiveWrites(entries))));

  // In this process, to read its CPU time, with a plugin that answers after 10 ms: the spinning wait
  // burns about the hooks' wall time in CPU, the idle wait almost none.
  const slow = path.join(dir, 'slow.mjs');
  fs.writeFileSync(
    slow,
    `import { JsonObjectSplitter } from ${JSON.stringify(pathToFileURL(path.join(repoRoot, 'dist/src/util/jsonFraming.js')).href)};
const send = (o) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...o }) + '\\n\\n');
const splitter = new JsonObjectSplitter();
process.stdin.on('data', (c) => { for (const t of splitter.push(c)) { const m = JSON.parse(t);
  if (m.method === 'getmanifest') send({ id: m.id, result: { options: [], rpcmethods: [], hooks: [{ name: 'db_write' }], dynamic: false } });
  else if (m.method === 'init') send({ id: m.id, result: {} });
  else setTimeout(() => send({ id: m.id, result: { result: 'continue' } }), 10); } });
process.stdin.on('end', () => process.exit(0));
`,
  );
  const node6 = loadChain([tracePath('cln-v26.06-node6.jsonl.gz')]);
  const lifetime = async (wait: 'spin' | 'idle') => {
    const d = path.join(dir, wait);
    fs.mkdirSync(d);
    const cpu0 = process.cpuUsage();
    const sim = new SimulatedLightningd({
      networkDir: d,
      network: 'regtest',
      entries: node6,
      plugin: pluginCommandFor(slow),
      crashMode: 'simulate',
      pluginStderr: 'collect',
      wait,
    });
    const outcome = await sim.run();
    const cpu = process.cpuUsage(cpu0);
    assert.equal(outcome.kind, 'done');
    assert.equal(versionOf(d), 63);
    return { hookMs: outcome.stats.totalHookMs, cpuMs: (cpu.user + cpu.system) / 1000 };
  };
  const spun = await lifetime('spin');
  const idle = await lifetime('idle');
  assert.ok(spun.hookMs > 600 && idle.hookMs > 600, `hooks took ${spun.hookMs} and ${idle.hookMs} ms`);
  console.log(
    `# wait spin: ${spun.cpuMs.toFixed(0)} ms of CPU over ${spun.hookMs.toFixed(0)} ms of hooks; idle: ${idle.cpuMs.toFixed(0)} ms over ${idle.hookMs.toFixed(0)} ms`,
  );
  // (Bounds with room for a loaded machine, where the spinning thread is preempted.)
  assert.ok(spun.cpuMs >= 0.5 * spun.hookMs, `spin: ${spun.cpuMs.toFixed(0)} ms of CPU over ${spun.hookMs.toFixed(0)} ms of waiting`);
  assert.ok(idle.cpuMs <= 0.25 * idle.hookMs, `idle: ${idle.cpuMs.toFixed(0)} ms of CPU over ${idle.hookMs.toFixed(0)} ms of waiting`);
});

test("the RPC socket: listconfigs and getinfo as a real lightningd answers them (the wallet put in), lightningd's error for an unknown command, nothing served while a db_write hook is pending", async () => {
  const dir = tempDir('sim-rpc');
  const plugin = path.join(dir, 'rpc-plugin.mjs');
  // At init: three calls. In the hook of the 5th call: a call whose answer must wait for the hook's.
  fs.writeFileSync(
    plugin,
    `import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { JsonObjectSplitter } from ${JSON.stringify(pathToFileURL(path.join(repoRoot, 'dist/src/util/jsonFraming.js')).href)};
const send = (o) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...o }) + '\\n\\n');
const rec = (o) => fs.appendFileSync('rpc.jsonl', JSON.stringify(o) + '\\n');
let sock = null; const waiting = new Map(); let next = 1;
const call = (method) => new Promise((resolve) => { const id = next++; waiting.set(id, resolve); sock.write(JSON.stringify({ jsonrpc: '2.0', id, method, params: {} })); });
const rpcSplitter = new JsonObjectSplitter();
const splitter = new JsonObjectSplitter();
let calls = 0;
process.stdin.on('data', async (c) => { for (const t of splitter.push(c)) { const m = JSON.parse(t);
  if (m.method === 'getmanifest') send({ id: m.id, result: { options: [], rpcmethods: [], hooks: [{ name: 'db_write' }], dynamic: false } });
  else if (m.method === 'init') {
    sock = net.connect(path.join(m.params.configuration['lightning-dir'], m.params.configuration['rpc-file']));
    sock.on('data', (d) => { for (const r of rpcSplitter.push(d)) { const a = JSON.parse(r); waiting.get(a.id)?.(a); } });
    send({ id: m.id, result: {} });
    rec({ listconfigs: await call('listconfigs'), getinfo: await call('getinfo'), unknown: await call('no-such-command') });
  } else {
    calls++;
    if (calls === 12) {
      let answered = false;
      call('getinfo').then(() => { answered = true; rec({ inHookAnsweredAfterReply: replied }); });
      let replied = false;
      setTimeout(() => { rec({ answeredWhileHookPending: answered }); replied = true; send({ id: m.id, result: { result: 'continue' } }); }, 300);
    } else send({ id: m.id, result: { result: 'continue' } });
  } } });
process.stdin.on('end', () => setTimeout(() => process.exit(0), 200));
`,
  );
  const dsn = 'postgres://lightningd@127.0.0.1:5432/lightningd';
  const result = await runSimulatorUntilDone({ lightningDir: dir, traces: [tracePath('cln-v26.06-node6.jsonl.gz')], plugin, walletDsn: dsn, lingerMs: 300 });
  assert.equal(result.dataVersion, 63);
  const lines = fs
    .readFileSync(path.join(dir, 'regtest', 'rpc.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, { result?: Record<string, unknown>; error?: { code: number; message: string } } | boolean>);
  const atInit = lines.find((l) => 'listconfigs' in l) as Record<string, { result?: Record<string, unknown>; error?: { code: number; message: string } }>;
  const configs = atInit.listconfigs.result?.configs as Record<string, { value_str?: string }>;
  assert.equal(configs.wallet.value_str, dsn);
  assert.equal(configs.network.value_str, 'regtest');
  assert.equal(configs['rpc-file'].value_str, 'lightning-rpc');
  assert.equal(atInit.getinfo.result?.version, 'v26.06.6');
  assert.deepEqual(atInit.unknown.error, { code: -32601, message: "Unknown command 'no-such-command'" });
  assert.deepEqual(
    lines.find((l) => 'answeredWhileHookPending' in l),
    { answeredWhileHookPending: false },
  );
  assert.deepEqual(
    lines.find((l) => 'inHookAnsweredAfterReply' in l),
    { inHookAnsweredAfterReply: true },
  );
  assert.ok(!fs.existsSync(path.join(dir, 'regtest', 'lightning-rpc')), 'the socket is removed at the end');
});

/** A test plugin that records what it receives and misbehaves as <networkDir>/mode.json says. */
function writeRecorderPlugin(dir: string): string {
  const framing = pathToFileURL(path.join(repoRoot, 'dist/src/util/jsonFraming.js')).href;
  const file = path.join(dir, 'recorder.mjs');
  fs.writeFileSync(
    file,
    `import fs from 'node:fs';
import { JsonObjectSplitter } from ${JSON.stringify(framing)};
const { mode, at } = JSON.parse(fs.readFileSync('mode.json', 'utf8'));
const rec = (o) => fs.appendFileSync('record.jsonl', JSON.stringify(o) + '\\n');
rec({ start: { cwd: process.cwd(), argv: process.argv.slice(2), plugin: process.env.LIGHTNINGD_PLUGIN, version: process.env.LIGHTNINGD_VERSION } });
const send = (o) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...o }) + '\\n\\n');
const handle = (m) => {
  rec({ method: m.method, id: m.id, params: m.method === 'db_write' ? { data_version: m.params.data_version } : m.params });
  if (m.method === 'getmanifest') return send({ id: m.id, result: { options: [], rpcmethods: [], hooks: [{ name: 'db_write' }], dynamic: false } });
  if (m.method === 'init') return send({ id: m.id, result: {} });
  if (m.params.data_version === at) {
    if (mode === 'error') return send({ id: m.id, error: { code: -1, message: 'nope' } });
    if (mode === 'abort') return send({ id: m.id, result: { result: 'abort' } });
    if (mode === 'badshape') return send({ id: m.id, result: {} });
    if (mode === 'exit') process.exit(3);
    if (mode === 'hang') return;
    if (mode === 'badid') return send({ id: 'cln:db_write#0', result: { result: 'continue' } });
    if (mode === 'log') send({ method: 'log', params: { level: 'info', message: 'hello at ' + at } });
  }
  send({ id: m.id, result: { result: 'continue' } });
};
const splitter = new JsonObjectSplitter();
process.stdin.on('data', (chunk) => { for (const t of splitter.push(chunk)) handle(JSON.parse(t)); });
process.stdin.on('end', () => process.exit(0));
`,
  );
  return file;
}

test('in-process lifetimes: protocol shape, pre-init counts, and aborts on every kind of bad answer', async () => {
  const dir = tempDir('sim-inproc');
  const networkDir = path.join(dir, 'regtest');
  fs.mkdirSync(networkDir);
  const plugin = pluginCommandFor(writeRecorderPlugin(dir));
  const entries = loadChain(NODE3_CHAIN.slice(0, 2));
  const record = (): Record<string, unknown>[] =>
    fs
      .readFileSync(path.join(networkDir, 'record.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  const lifetime = async (mode: string, at: number, extra: Partial<SimulatorOptions> = {}) => {
    fs.writeFileSync(path.join(networkDir, 'mode.json'), JSON.stringify({ mode, at }));
    fs.rmSync(path.join(networkDir, 'record.jsonl'), { force: true });
    const events: SimulatorEvent[] = [];
    const sim = new SimulatedLightningd({
      networkDir,
      network: 'regtest',
      entries,
      plugin,
      crashMode: 'simulate',
      pluginStderr: 'collect',
      onEvent: (e) => events.push(e),
      ...extra,
    });
    return { outcome: await sim.run(), events };
  };

  const first = await lifetime('log', 5, { untilVersion: 10 });
  assert.equal(first.outcome.kind, 'done');
  assert.equal(versionOf(networkDir), 10);
  assert.deepEqual(ofKind(first.events, 'plugin-log'), [{ event: 'plugin-log', level: 'info', message: 'hello at 5' }]);
  const rec = record();
  assert.deepEqual(rec[0].start, { cwd: networkDir, argv: [], plugin: '1', version: 'v26.06.6' });
  const methods = rec.slice(1).map((r) => r.method);
  assert.deepEqual(methods.slice(0, 12), ['getmanifest', ...Array(9).fill('db_write'), 'init', 'db_write']);
  assert.deepEqual(rec[1].params, { 'allow-deprecated-apis': false });
  assert.ok(rec.slice(1).every((r) => typeof r.id === 'string' && /^cln:(getmanifest|db_write|init)#\d+$/.test(r.id)));
  const init = rec.find((r) => r.method === 'init')?.params as { options: unknown; configuration: Record<string, unknown> };
  assert.deepEqual(init.options, {});
  assert.equal(init.configuration['lightning-dir'], networkDir);
  assert.equal(init.configuration['rpc-file'], 'lightning-rpc');
  assert.equal(init.configuration.network, 'regtest');
  assert.equal(init.configuration.startup, true);
  assert.equal(typeof (init.configuration.feature_set as { init: unknown }).init, 'string');

  const failures: [string, number, RegExp][] = [
    ['abort', 15, /plugin returned failed db_write/],
    ['error', 20, /invalid response to the db_write hook/],
    ['badshape', 25, /invalid result to the db_write hook/],
    ['exit', 30, /plugin exited \(code 3\) during db_write/],
    ['hang', 35, /no reply to cln:db_write#\d+ within 300 ms/],
    ['badid', 40, /reply for no pending request: "cln:db_write#0"/],
  ];
  for (const [mode, at, reason] of failures) {
    const { outcome } = await lifetime(mode, at, { hookTimeoutMs: 300 });
    assert.equal(outcome.kind, 'aborted', mode);
    assert.ok(outcome.kind === 'aborted');
    assert.match(outcome.reason, reason);
    assert.equal(outcome.dataVersion, at);
    assert.equal(versionOf(networkDir), at - 1, mode);
    // A restart: 4 db_write calls before init.
    const seq = record()
      .slice(1)
      .map((r) => r.method);
    assert.deepEqual(seq.slice(0, 6), ['getmanifest', 'db_write', 'db_write', 'db_write', 'db_write', 'init'], mode);
  }

  // In-process crashes: the superseded call at 60 is acked, rolled back, then skipped by the next lifetime.
  const crashed = await lifetime('none', 0);
  assert.deepEqual(crashed.outcome.kind === 'crashed' && [crashed.outcome.cause, crashed.outcome.dataVersion], ['superseded', 60]);
  assert.equal(versionOf(networkDir), 59);
  const killed = await lifetime('none', 0, { killSelfAt: { entry: 66, point: 'after-ack' }, untilVersion: 62 });
  assert.equal(killed.outcome.kind, 'crashed');
  assert.equal(versionOf(networkDir), (entries[66] as CallEntry).dataVersion - 1);
  const done = await lifetime('none', 0, { untilVersion: 62 });
  assert.deepEqual(done.outcome.kind === 'done' && done.outcome.dataVersion, 62);
  assert.ok(dumpFile(nodeDbFile(networkDir)) === dumpOf(plainReplay(effectiveWrites(entries, 62))));
});
