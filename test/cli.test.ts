// The `lnbackup` command as a user runs it (a real child process): help, init's refusals, status,
// verify and restore with --json, the demo's default trace, the plugin's lnbackup-status RPC and
// stdin framing.
import { test } from 'node:test';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_TRACE } from '../src/cli/demo.js';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import { PluginProcess, pluginCommandFor } from '../src/simulator/pluginProcess.js';
import { readTraceFile } from '../src/simulator/trace.js';
import { JsonObjectSplitter, MessageTooLargeError, MalformedStreamError } from '../src/util/jsonFraming.js';
import { cliEntry, repoRoot, tracePath } from './helpers/paths.js';
import { callsOf } from './helpers/reference.js';
import { makeTestNode } from './helpers/testNode.js';
import { runCli } from './helpers/vaultFixture.js';

const node6Calls = callsOf(readTraceFile(tracePath('cln-v26.06-node6.jsonl.gz')));

/** Runs `lnbackup` (a real child process); `json` is its stdout parsed, when that is JSON. */
function lnbackup(...args: string[]): { code: number; stdout: string; stderr: string; json: Record<string, unknown> | null } {
  const r = runCli(args);
  let json: Record<string, unknown> | null = null;
  try {
    json = JSON.parse(r.stdout) as Record<string, unknown>;
  } catch {
    json = null;
  }
  return { code: r.code ?? -1, stdout: r.stdout, stderr: r.stderr, json };
}

test('--help names every command and the exit codes', () => {
  const r = lnbackup('--help');
  assert.equal(r.code, 0);
  for (const cmd of ['init', 'restore', 'verify', 'status', 'demo', 'generations', 'scrub', 'retention', 'destination', 'server', 'doctor', 'recover'])
    assert.match(r.stdout, new RegExp(`\\b${cmd}\\b`));
  assert.match(r.stdout, /Exit codes/);
  for (const cmd of ['init', 'restore', 'verify', 'status', 'generations', 'scrub', 'retention', 'doctor', 'recover'])
    assert.match(lnbackup(cmd, '--help').stdout, /--json/);
});

test('a reader that closes the pipe early (`lnbackup --help | head`) ends the output quietly: exit 0, no stack trace', async () => {
  const child = spawn(process.execPath, [cliEntry, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.destroy(); // closed before lnbackup writes anything: its first write gets EPIPE
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /EPIPE|at /);
});

test("the demo's default trace is node1's, inside the repository (a clone needs nothing beside it)", () => {
  assert.equal(DEFAULT_TRACE, tracePath('cln-v26.06-node1.jsonl.gz'));
  const inRepo = path.relative(fs.realpathSync(repoRoot), fs.realpathSync(DEFAULT_TRACE));
  assert.ok(!inRepo.startsWith('..') && !path.isAbsolute(inRepo), `${DEFAULT_TRACE} is outside ${repoRoot}`);
});

test('init binds the vault to the node; refuses a second configuration, a foreign vault, and a non-vault directory', () => {
  const node = makeTestNode('cli-init');
  const first = lnbackup('init', '--lightning-dir', node.lightningDir, '--network', 'regtest', '--vault', node.vault, '--json');
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.json?.ok, true);
  assert.match(String(first.json?.nodeId), /^0[23][0-9a-f]{64}$/);
  assert.equal(first.json?.generation, 1);
  assert.equal(first.json?.dataVersion, 0);
  assert.equal(first.json?.plugin, PLUGIN_PATH);
  assert.ok(fs.existsSync(path.join(node.networkDir, 'lnbackup.json')));

  const again = lnbackup('init', '--lightning-dir', node.lightningDir, '--network', 'regtest', '--vault', node.vault);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already exists.*--force/);

  const forced = lnbackup('init', '--lightning-dir', node.lightningDir, '--network', 'regtest', '--vault', node.vault, '--force', '--json');
  assert.equal(forced.code, 0, forced.stderr);
  assert.equal(forced.json?.vaultCreated, false);
  assert.equal(forced.json?.generation, 2);

  const other = makeTestNode('cli-other');
  const foreign = lnbackup('init', '--lightning-dir', other.lightningDir, '--network', 'regtest', '--vault', node.vault);
  assert.equal(foreign.code, 1);
  assert.match(foreign.stderr, new RegExp(`belongs to node ${String(first.json?.nodeId)}`));

  const junk = path.join(other.dir, 'junk');
  fs.mkdirSync(junk);
  fs.writeFileSync(path.join(junk, 'file'), 'x');
  const notVault = lnbackup('init', '--lightning-dir', other.lightningDir, '--network', 'regtest', '--vault', junk);
  assert.equal(notVault.code, 1);
  assert.match(notVault.stderr, /not empty and is not an lnbackup vault/);
});

test('retention: init takes the settings, `retention` shows and changes them, refuses nonsense (exit 2) and keeps the file valid', () => {
  const node = makeTestNode('cli-retention');
  const dirs = ['--lightning-dir', node.lightningDir, '--network', 'regtest'];
  const init = lnbackup('init', ...dirs, '--vault', node.vault, '--keep-generations', '3', '--compact-min-bytes', '256KiB', '--json');
  assert.equal(init.code, 0, init.stderr);
  const shown = lnbackup('retention', ...dirs, '--json');
  assert.equal(shown.code, 0, shown.stderr);
  assert.deepEqual(
    [shown.json?.keepGenerations, shown.json?.compactMinBytes, shown.json?.keepSeconds, shown.json?.compactRatio, shown.json?.changed],
    [3, 256 * 1024, 0, 0.25, []],
  );
  const changed = lnbackup('retention', ...dirs, '--keep', '7d', '--compact-ratio', '0.5', '--json');
  assert.equal(changed.code, 0, changed.stderr);
  assert.deepEqual([changed.json?.keepGenerations, changed.json?.keepSeconds, changed.json?.compactRatio], [3, 7 * 86400, 0.5]);
  assert.deepEqual(changed.json?.changed, ['keepSeconds', 'compactRatio']);
  const text = lnbackup('retention', ...dirs);
  assert.match(text.stdout, /the newest 3 generation\(s\), and every moment of the last 604800 s/);
  for (const bad of [
    ['--keep-generations', '0'],
    ['--keep', '7 days'],
    ['--compact-ratio', '-1'],
    ['--compact-min-bytes', 'lots'],
  ]) {
    const r = lnbackup('retention', ...dirs, ...bad);
    assert.equal(r.code, 2, `${bad.join(' ')}: ${r.stderr}`);
  }
  const after = JSON.parse(fs.readFileSync(path.join(node.networkDir, 'lnbackup.json'), 'utf8')) as { retention: unknown };
  assert.deepEqual(after.retention, { keepGenerations: 3, compactMinBytes: 256 * 1024, keepSeconds: 7 * 86400, compactRatio: 0.5 });
});

test('status, verify and restore with --json; restore never overwrites without --force', () => {
  const node = makeTestNode('cli-json');
  assert.equal(lnbackup('init', '--lightning-dir', node.lightningDir, '--network', 'regtest', '--vault', node.vault).code, 0);
  const bare = lnbackup('status', '--vault', node.vault, '--json');
  assert.equal(bare.code, 0, bare.stderr);
  assert.equal(bare.json?.latest, null);
  assert.equal((bare.json?.generations as unknown[]).length, 1);
  const keyed = lnbackup('status', '--vault', node.vault, '--hsm-secret', node.hsmSecretPath, '--json');
  assert.equal((keyed.json?.latest as { version: number }).version, 0);

  const verify = lnbackup('verify', '--vault', node.vault, '--hsm-secret', node.hsmSecretPath, '--json');
  assert.equal(verify.code, 0);
  assert.equal(verify.json?.ok, true);

  const to = path.join(node.dir, 'out.sqlite3');
  fs.writeFileSync(to, 'precious');
  const refused = lnbackup('restore', '--vault', node.vault, '--hsm-secret', node.hsmSecretPath, '--to', to, '--json');
  assert.equal(refused.code, 1);
  assert.equal(refused.json?.ok, false);
  assert.match(String(refused.json?.error), /already exists; pass --force/);
  assert.equal(fs.readFileSync(to, 'utf8'), 'precious');

  const noKey = lnbackup('verify', '--vault', node.vault);
  assert.equal(noKey.code, 2);
  assert.match(noKey.stderr, /--hsm-secret <file> or --key-file <file>/);

  const badVersion = lnbackup('restore', '--vault', node.vault, '--hsm-secret', node.hsmSecretPath, '--to', to, '--version', 'x');
  assert.equal(badVersion.code, 2);
});

test('the key never appears in any output, even for a wrong key file', () => {
  const node = makeTestNode('cli-secret');
  lnbackup('init', '--lightning-dir', node.lightningDir, '--network', 'regtest', '--vault', node.vault);
  const keyHex = crypto.randomBytes(32).toString('hex');
  const keyFile = path.join(node.dir, 'key');
  fs.writeFileSync(keyFile, keyHex, { mode: 0o600 });
  const r = lnbackup('verify', '--vault', node.vault, '--key-file', keyFile, '--json');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /the key does not open the vault/);
  assert.ok(!(r.stdout + r.stderr).includes(keyHex.slice(0, 16)));
});

test('the plugin answers lnbackup-status after init with versions, vault, size and latency', async () => {
  const node = makeTestNode('cli-rpc');
  assert.equal(lnbackup('init', '--lightning-dir', node.lightningDir, '--network', 'regtest', '--vault', node.vault).code, 0);
  const logs: string[] = [];
  const plugin = new PluginProcess({ command: pluginCommandFor(PLUGIN_PATH), cwd: node.networkDir, stderr: 'collect', onLog: (_l, m) => logs.push(m) });
  try {
    const manifest = (await plugin.request('getmanifest', { 'allow-deprecated-apis': false })).result as { rpcmethods: { name: string }[]; dynamic: boolean };
    assert.equal(manifest.dynamic, false);
    assert.ok(manifest.rpcmethods.some((m) => m.name === 'lnbackup-status'));
    const calls = node6Calls.slice(0, 12);
    for (const c of calls) {
      const reply = await plugin.request('db_write', { data_version: c.dataVersion, writes: c.writes });
      assert.deepEqual(reply.result, { result: 'continue' });
    }
    await plugin.request('init', { options: {}, configuration: { 'lightning-dir': node.networkDir, network: 'regtest', startup: true } });
    const status = (await plugin.request('lnbackup-status', {})).result as Record<string, unknown>;
    assert.equal(status.vault, node.vault);
    assert.equal(status.version, calls[calls.length - 1].dataVersion);
    assert.equal(status.generation, 1);
    assert.ok(Number(status.vaultBytes) > 0);
    assert.equal(typeof status.lastSnapshotAt, 'string');
    assert.equal((status.hookLatency as { count: number }).count, 12);
    assert.equal(status.lastError, null);
    const unknown = await plugin.request('no-such-method', {});
    assert.ok(unknown.error);
  } finally {
    await plugin.close(5000);
  }
});

test('stdin framing: whole JSON objects whatever the chunking, bounded size, garbage refused', () => {
  const calls = node6Calls;
  const messages = calls.map((c, i) =>
    JSON.stringify({ jsonrpc: '2.0', id: `cln:db_write#${i}`, method: 'db_write', params: { data_version: c.dataVersion, writes: c.writes } }),
  );
  const stream = Buffer.from(messages.join('\n\n') + '\n\n');
  for (let trial = 0; trial < 20; trial++) {
    const splitter = new JsonObjectSplitter();
    const out: string[] = [];
    for (let off = 0; off < stream.length;) {
      const n = 1 + Math.floor(Math.random() * (trial % 2 ? 7 : 70_000));
      out.push(...splitter.push(stream.subarray(off, off + n)));
      off += n;
    }
    assert.deepEqual(out, messages);
    assert.equal(splitter.midMessage, false);
  }
  const tricky = '{"a":"} \\" {","b":{"c":"\\\\"}}';
  assert.deepEqual(new JsonObjectSplitter().push(Buffer.from(tricky)), [tricky]);
  assert.throws(() => new JsonObjectSplitter(1000).push(Buffer.from('{"a":"' + 'x'.repeat(2000))), MessageTooLargeError);
  assert.throws(() => new JsonObjectSplitter().push(Buffer.from('garbage')), MalformedStreamError);
});

test('the plugin leaves cleanly when lightningd vanishes mid-reply (EPIPE): exit 0, vault lock released', async () => {
  const { spawn } = await import('node:child_process');
  const node = makeTestNode('cli-epipe');
  assert.equal(lnbackup('init', '--lightning-dir', node.lightningDir, '--network', 'regtest', '--vault', node.vault).code, 0);
  const calls = node6Calls.slice(0, 50);
  const child = spawn(process.execPath, [PLUGIN_PATH], { cwd: node.networkDir, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  child.stdout.destroy();
  for (const [i, c] of calls.entries()) {
    child.stdin.write(
      JSON.stringify({ jsonrpc: '2.0', id: `cln:db_write#${i}`, method: 'db_write', params: { data_version: c.dataVersion, writes: c.writes } }) + '\n\n',
    );
  }
  child.stdin.end();
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /Unhandled|EPIPE/);
  assert.equal(fs.existsSync(path.join(node.vault, 'writer.lock')), false);
});
