// The destination side of the `lnbackup` command as an operator runs it (real child processes
// against real `lnbackup server` children): init --remote uploads the vault before it writes the
// configuration, `destination list|add|remove|set|key` keep lnbackup.json consistent with the
// policy, the node's transport key is what a server's --allow admits, and every command given
// --json prints exactly one JSON object, failures included.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import { vaultTail } from '../src/destinations/transfer.js';
import { openIdentity, vaultIdBytes } from '../src/vault/identity.js';
import { generatePrivateKey, publicKeyOf } from '../src/transport/keys.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { tempDir } from './helpers/paths.js';
import { NODE3_CHAIN } from './helpers/reference.js';
import { startServer, type ServerHandle } from './helpers/serverProcess.js';
import { makeTestNode, type TestNode } from './helpers/testNode.js';
import { cli, nodeArgs, serverVaultOf, transportKeyOf, until, type CliResult } from './helpers/remoteNode.js';
import { loadKeys } from '../src/cli/keyOptions.js';

process.setMaxListeners(100);

const configFile = (node: TestNode): string => path.join(node.networkDir, 'lnbackup.json');

function readConfig(node: TestNode): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(configFile(node), 'utf8')) as Record<string, unknown>;
}

/** The command succeeded and printed one JSON object with ok: true. */
function ok(r: CliResult, what: string): Record<string, unknown> {
  assert.equal(r.code, 0, `${what} failed (${r.code}): ${r.stderr}`);
  assert.ok(r.json, `${what} --json did not print one JSON object: ${r.stdout}`);
  assert.equal(r.json.ok, true, `${what}: ${r.stdout}`);
  return r.json;
}

/** The command failed with `code`, printed one JSON object {ok: false, error} matching `message`, and said it on stderr. */
function refused(r: CliResult, code: number | readonly number[], message: RegExp, what: string): void {
  const codes: readonly number[] = typeof code === 'number' ? [code] : code;
  assert.ok(r.code !== null && codes.includes(r.code), `${what}: exit code ${r.code}, expected ${codes.join(' or ')}; stderr: ${r.stderr}`);
  assert.ok(r.json, `${what} --json did not print one JSON object: ${JSON.stringify(r.stdout)}`);
  assert.equal(r.json.ok, false);
  assert.match(String(r.json.error), message, what);
  assert.match(r.stderr, message, `${what}: stderr`);
}

function localLastSeq(node: TestNode): bigint {
  const { keys } = loadKeys({ hsmSecret: node.hsmSecretPath });
  return vaultTail(node.vault, vaultIdBytes(openIdentity(node.vault, keys))).lastSeq;
}

async function serverHoldsVault(server: ServerHandle, node: TestNode, lastSeq: bigint): Promise<void> {
  const { keys } = loadKeys({ hsmSecret: node.hsmSecretPath });
  const key = transportKeyOf(keys);
  await until(`${server.url} to hold the vault up to ${lastSeq}`, async () => (await serverVaultOf(server, key))?.lastSeq === lastSeq.toString(), 30_000);
}

test('init --remote uploads the vault first; destination list, add (server, replica), remove and set keep lnbackup.json consistent', async () => {
  const a = await startServer();
  const b = await startServer();
  try {
    const node = makeTestNode('dest-cli');
    const init = ok(await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--remote', a.url, '--json']), 'init --remote');
    const lastSeq = localLastSeq(node);
    assert.ok(lastSeq >= 2n, 'the vault holds the first snapshot');
    const pushed = init.pushed as { url: string; records: number; lastSeq: string }[];
    assert.deepEqual(
      pushed.map((p) => [p.url, p.records, String(p.lastSeq)]),
      [[a.url, Number(lastSeq), lastSeq.toString()]],
    );
    await serverHoldsVault(a, node, lastSeq);
    let config = readConfig(node);
    assert.deepEqual(config.remotes, [a.url]);
    assert.deepEqual([config.policy, config.stallLimitSeconds, config.localVault], ['all', null, 'durable']);

    const list = ok(await cli(['destination', 'list', ...nodeArgs(node), '--json']), 'destination list');
    assert.deepEqual(
      {
        remotes: list.remotes,
        replicas: list.replicas,
        policy: list.policy,
        stallLimitSeconds: list.stallLimitSeconds,
        localVault: list.localVault,
        live: list.live,
      },
      { remotes: [a.url], replicas: [], policy: 'all', stallLimitSeconds: null, localVault: 'durable', live: null },
    );
    const human = await cli(['destination', 'list', ...nodeArgs(node)]);
    assert.equal(human.code, 0, human.stderr);
    assert.ok(human.stdout.includes(a.url));

    // A second server: it gets the whole vault before it is written into the configuration.
    const addB = ok(await cli(['destination', 'add', ...nodeArgs(node), '--remote', b.url, '--json']), 'destination add --remote');
    assert.equal((addB.pushed as { records: number }).records, Number(lastSeq));
    await serverHoldsVault(b, node, lastSeq);
    assert.deepEqual(readConfig(node).remotes, [a.url, b.url]);
    refused(await cli(['destination', 'add', ...nodeArgs(node), '--remote', b.url, '--json']), 2, /already a destination/, 'adding a server twice');

    const replicaDir = tempDir('dest-cli-replica');
    const replica = path.join(replicaDir, 'standby.sqlite3');
    const addR = ok(await cli(['destination', 'add', ...nodeArgs(node), '--replica', replica, '--json']), 'destination add --replica');
    assert.deepEqual(addR.replicas, [replica]);
    assert.deepEqual(readConfig(node).replicas, [replica]);
    refused(await cli(['destination', 'add', ...nodeArgs(node), '--json']), 2, /--remote <url> or --replica <file>/, 'add without a destination');

    const set = ok(await cli(['destination', 'set', ...nodeArgs(node), '--policy', 'quorum=2', '--stall-limit', '30', '--json']), 'destination set');
    assert.deepEqual([set.policy, set.stallLimitSeconds], ['quorum=2', 30]);
    config = readConfig(node);
    assert.deepEqual([config.policy, config.stallLimitSeconds], ['quorum=2', 30]);

    // Policies the destinations cannot meet are refused, and the configuration is left as it was.
    const before = fs.readFileSync(configFile(node), 'utf8');
    refused(
      await cli(['destination', 'set', ...nodeArgs(node), '--policy', 'quorum=9', '--json']),
      2,
      /quorum=9 needs 9 destinations, but 4 are configured/,
      'quorum=9',
    );
    refused(await cli(['destination', 'set', ...nodeArgs(node), '--stall-limit', 'soon', '--json']), 2, /--stall-limit takes seconds/, 'a bad stall limit');
    assert.equal(fs.readFileSync(configFile(node), 'utf8'), before, 'a refused change altered lnbackup.json');

    const rmR = ok(await cli(['destination', 'remove', ...nodeArgs(node), '--replica', replica, '--json']), 'destination remove --replica');
    assert.deepEqual(rmR.replicas, []);
    const rmB = ok(await cli(['destination', 'remove', ...nodeArgs(node), '--remote', b.url, '--json']), 'destination remove --remote');
    assert.deepEqual(rmB.remotes, [a.url]);
    refused(
      await cli(['destination', 'remove', ...nodeArgs(node), '--remote', b.url, '--json']),
      2,
      /is not a destination of this node/,
      'removing a server twice',
    );
    // quorum=2 with the vault and server A: removing A would leave one destination.
    const beforeRemove = fs.readFileSync(configFile(node), 'utf8');
    refused(
      await cli(['destination', 'remove', ...nodeArgs(node), '--remote', a.url, '--json']),
      2,
      /quorum=2 needs 2 destinations, but 1 are configured/,
      'removing below the quorum',
    );
    assert.equal(fs.readFileSync(configFile(node), 'utf8'), beforeRemove);
    assert.deepEqual(readConfig(node).remotes, [a.url]);

    // The plugin runs with what the commands wrote, and destination list then shows its live state.
    const run = await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 40 });
    assert.equal(run.dataVersion, 40);
    await serverHoldsVault(a, node, localLastSeq(node));
    const live = ok(await cli(['destination', 'list', ...nodeArgs(node), '--json']), 'destination list after a run');
    const liveState = live.live as { policy: string; destinations: { name: string; kind: string; state: string }[] } | null;
    assert.ok(liveState, 'destination list shows no live state after the plugin ran');
    assert.equal(liveState.policy, 'quorum=2');
    assert.deepEqual(
      liveState.destinations.map((d) => [d.kind, d.name]),
      [
        ['vault', node.vault],
        ['server', a.url],
      ],
    );
    // Server B, removed, got nothing more.
    assert.equal((await serverVaultOf(b, transportKeyOf(loadKeys({ hsmSecret: node.hsmSecretPath }).keys)))?.lastSeq, lastSeq.toString());
  } finally {
    assert.equal(await a.stop(), 0);
    assert.equal(await b.stop(), 0);
  }
});

test("destination key prints the node's transport key (from the seed alone before init, from lnbackup.json after); a server started with --allow <that key> admits the node, one without it refuses clearly", async () => {
  const node = makeTestNode('dest-key');
  const expected = transportKeyOf(loadKeys({ hsmSecret: node.hsmSecretPath }).keys);
  // Before init: from the hsm_secret alone, and from the lightning dir that has no lnbackup.json yet.
  assert.equal(ok(await cli(['destination', 'key', '--hsm-secret', node.hsmSecretPath, '--json']), 'key from --hsm-secret').publicKey, expected);
  assert.equal(ok(await cli(['destination', 'key', ...nodeArgs(node), '--json']), 'key before init').publicKey, expected);
  refused(await cli(['destination', 'key', '--json']), 2, /--hsm-secret.*--lightning-dir/, 'destination key with nothing to read');
  refused(await cli(['destination', 'key', '--hsm-secret', node.hsmSecretPath, ...nodeArgs(node), '--json']), 2, /not both/, 'two key sources');
  ok(await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--json']), 'init');
  const key = ok(await cli(['destination', 'key', ...nodeArgs(node), '--json']), 'destination key');
  assert.equal(key.publicKey, expected);
  const plain = await cli(['destination', 'key', ...nodeArgs(node)]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(plain.stdout.trim(), expected);

  const other = publicKeyOf(generatePrivateKey()).toString('hex');
  const admitting = await startServer({ open: false, args: ['--allow', expected] });
  const refusing = await startServer({ open: false, args: ['--allow', other] });
  try {
    const before = fs.readFileSync(configFile(node), 'utf8');
    const no = await cli(['destination', 'add', ...nodeArgs(node), '--remote', refusing.url, '--json']);
    refused(no, 1, new RegExp(`${expected}[^]*--allow`), 'a server that does not list the key');
    assert.equal(fs.readFileSync(configFile(node), 'utf8'), before, 'a refused server was written into lnbackup.json');

    ok(await cli(['destination', 'add', ...nodeArgs(node), '--remote', admitting.url, '--json']), 'destination add to a server that lists the key');
    await serverHoldsVault(admitting, node, localLastSeq(node));
    assert.deepEqual(readConfig(node).remotes, [admitting.url]);

    // init --remote to a refusing server writes no configuration at all.
    const fresh = makeTestNode('dest-key-init');
    const r = await cli(['init', ...nodeArgs(fresh), '--vault', fresh.vault, '--remote', refusing.url, '--json']);
    refused(r, 1, /--allow[^]*lnbackup destination key --hsm-secret/, 'init --remote to a server that does not list the key');
    assert.equal(fs.existsSync(configFile(fresh)), false, 'init wrote a configuration although the server refused the vault');
    // The path the refusal points to: the key from the seed alone, allowed first, then init --remote succeeds at once.
    const freshKey = ok(await cli(['destination', 'key', '--hsm-secret', fresh.hsmSecretPath, '--json']), 'fresh node key').publicKey as string;
    const allowing = await startServer({ open: false, args: ['--allow', freshKey] });
    try {
      ok(await cli(['init', ...nodeArgs(fresh), '--vault', fresh.vault, '--remote', allowing.url, '--json']), 'init --remote once the key is allowed');
    } finally {
      assert.equal(await allowing.stop(), 0);
    }
  } finally {
    assert.equal(await admitting.stop(), 0);
    assert.equal(await refusing.stop(), 0);
  }
});

test('init refuses destinations that cannot hold the backup: --local-vault cache without --remote, a quorum larger than the destinations', async () => {
  const node = makeTestNode('dest-init-refusals');
  refused(
    await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--local-vault', 'cache', '--json']),
    2,
    /--local-vault cache needs at least one --remote/,
    'init --local-vault cache without --remote',
  );
  assert.equal(fs.existsSync(configFile(node)), false);
  assert.equal(fs.existsSync(node.vault), false, 'a refused init created the vault');
  refused(
    await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--replica', path.join(node.dir, 'r.sqlite3'), '--policy', 'quorum=3', '--json']),
    2,
    /quorum=3 needs 3 destinations, but 2 are configured/,
    'init quorum=3',
  );
  refused(
    await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--local-vault', 'somewhere', '--json']),
    2,
    /--local-vault takes 'durable' or 'cache'/,
    'init --local-vault with a bad mode',
  );
  // (Their exit code, 2 by the README, is checked in the usage-error test below.)
  refused(
    await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--remote', 'lnbackup://nokey@127.0.0.1:1', '--json']),
    [1, 2],
    /lnbackup:\/\/<server public key>@<host>:<port> expected/,
    'init with a malformed URL',
  );
  refused(
    await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--policy', 'most', '--json']),
    [1, 2],
    /unknown durability policy 'most'/,
    'init with an unknown policy',
  );
  assert.equal(fs.existsSync(node.vault), false, 'a refused init created the vault');
  assert.equal(fs.existsSync(configFile(node)), false);
});

test('--help lists server and destination; every command given --json prints one JSON object, also when it fails', async () => {
  const help = await cli(['--help']);
  assert.equal(help.code, 0);
  for (const cmd of ['init', 'restore', 'verify', 'status', 'server', 'destination']) assert.match(help.stdout, new RegExp(`^\\s+${cmd}\\b`, 'm'), cmd);
  const destHelp = await cli(['destination', '--help']);
  for (const cmd of ['list', 'add', 'remove', 'set', 'key']) assert.match(destHelp.stdout, new RegExp(`^\\s+${cmd}\\b`, 'm'), cmd);
  for (const args of [
    ['destination', 'list'],
    ['destination', 'add'],
    ['destination', 'remove'],
    ['destination', 'set'],
    ['destination', 'key'],
    ['server'],
    ['server', 'status'],
  ]) {
    const r = await cli([...args, '--help']);
    assert.equal(r.code, 0, args.join(' '));
    assert.match(r.stdout, /--json/, `${args.join(' ')} --help`);
  }

  const server = await startServer();
  try {
    const node = makeTestNode('dest-json');
    const none = makeTestNode('dest-json-none');
    const to = path.join(node.dir, 'restored.sqlite3');
    const from = ['--from', server.url, '--hsm-secret', node.hsmSecretPath];
    const commands: { args: string[]; code: number }[] = [
      { args: ['init', ...nodeArgs(node), '--vault', node.vault, '--remote', server.url], code: 0 },
      { args: ['destination', 'list', ...nodeArgs(node)], code: 0 },
      { args: ['destination', 'key', ...nodeArgs(node)], code: 0 },
      { args: ['destination', 'set', ...nodeArgs(node), '--stall-limit', '60'], code: 0 },
      { args: ['status', ...from], code: 0 },
      { args: ['verify', ...from], code: 0 },
      { args: ['restore', ...from, '--to', to], code: 0 },
      { args: ['server', 'status', '--data', server.dataDir], code: 0 },
      // Failures: one JSON object too.
      { args: ['restore', ...from, '--to', to], code: 1 },
      { args: ['destination', 'list', ...nodeArgs(none)], code: 1 },
      { args: ['destination', 'key', '--lightning-dir', path.join(none.dir, 'no-node'), '--network', 'regtest'], code: 1 },
      { args: ['destination', 'set', ...nodeArgs(node), '--policy', 'quorum=5'], code: 2 },
      { args: ['status', '--from', server.url, '--hsm-secret', none.hsmSecretPath], code: 1 },
      { args: ['verify', '--from', 'lnbackup://zz@127.0.0.1:1', '--hsm-secret', node.hsmSecretPath], code: 1 },
      { args: ['server', 'status', '--data', path.join(none.dir, 'no-server')], code: 1 },
    ];
    for (const { args, code } of commands) {
      const r = await cli([...args, '--json']);
      const what = `lnbackup ${args.slice(0, 2).join(' ')} --json (expected exit ${code})`;
      assert.equal(r.code, code, `${what}: exit ${r.code}; ${r.stderr}`);
      assert.ok(r.json, `${what} did not print exactly one JSON object: ${JSON.stringify(r.stdout.slice(0, 500))}`);
      if (code === 0) assert.notEqual(r.json.ok, false, `${what}: ${r.stdout.slice(0, 500)}`);
      else {
        assert.equal(r.json.ok, false, what);
        assert.equal(typeof r.json.error, 'string', what);
      }
    }
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

test('usage errors (a missing required option, a malformed option value) exit 2 and, with --json, print one JSON object', async () => {
  const node = makeTestNode('dest-usage');
  ok(await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--json']), 'init');
  const cases: string[][] = [
    // Found by the option parser.
    ['destination', 'set', '--network', 'regtest', '--policy', 'all'],
    ['destination', 'list', '--lightning-dir', node.lightningDir],
    ['restore', '--vault', node.vault, '--hsm-secret', node.hsmSecretPath],
    // Option values lnbackup checks itself.
    ['destination', 'set', ...nodeArgs(node), '--policy', 'most'],
    ['destination', 'add', ...nodeArgs(node), '--remote', 'lnbackup://nokey@127.0.0.1:1'],
  ];
  const wrong: string[] = [];
  for (const args of cases) {
    const r = await cli([...args, '--json']);
    const what = `lnbackup ${args.filter((a) => !a.startsWith('/')).join(' ')} --json`;
    if (r.code !== 2) wrong.push(`${what}: exit ${r.code}, not 2 (README: 2 usage)`);
    if (r.json?.ok !== false) wrong.push(`${what}: stdout is not one JSON object {ok: false, ...}: ${JSON.stringify(r.stdout.slice(0, 200))}`);
  }
  assert.deepEqual(wrong, []);
});
