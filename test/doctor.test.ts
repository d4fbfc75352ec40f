// `lnbackup doctor` on a real node setup (a real `lnbackup init`, the plugin run by the simulator,
// a real server child process on 127.0.0.1): a sound setup passes (exit 0); each thing a user gets
// wrong is named, with its fix, and exits 3: no plugin line, a second db_write plugin, a server that
// is down or holds no copy, a database older than the vault, a replica that is gone, lightningd
// running without the plugin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { tempDir } from './helpers/paths.js';
import { NODE3_CHAIN } from './helpers/reference.js';
import { startServer } from './helpers/serverProcess.js';
import { cli, makeRemoteNode, nodeArgs, type CliResult } from './helpers/remoteNode.js';

interface CheckJson {
  check: string;
  status: 'ok' | 'warn' | 'fail' | 'skip';
  detail: string;
  fix?: string;
}

function checksOf(r: CliResult): CheckJson[] {
  assert.ok(r.json, `doctor --json printed no JSON object: ${r.stdout} ${r.stderr}`);
  return r.json.checks as CheckJson[];
}

/** Doctor exits 3 and names `check` with `status`, a detail matching `detail`, and a fix. */
function flags(r: CliResult, check: RegExp, status: 'warn' | 'fail', detail: RegExp, what: string): void {
  assert.equal(r.code, 3, `${what}: exit ${r.code}: ${r.stdout} ${r.stderr}`);
  const c = checksOf(r).find((x) => check.test(x.check) && x.status === status);
  assert.ok(c, `${what}: no ${status} for ${check}: ${JSON.stringify(checksOf(r), null, 1)}`);
  assert.match(c.detail, detail, what);
  assert.ok(c.fix && c.fix.length > 10, `${what}: no fix given`);
}

test('doctor: a sound setup passes; each broken piece is named with its fix (exit 3)', async () => {
  const server = await startServer();
  const other = await startServer();
  let otherStopped = false;
  try {
    const node = await makeRemoteNode('doctor', { remotes: [server.url] });
    const config = path.join(node.lightningDir, 'config');
    fs.writeFileSync(config, `# lightningd config\nnetwork=regtest\nplugin=${PLUGIN_PATH}\n`);
    await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 30 });
    const doctor = (...extra: string[]): Promise<CliResult> => cli(['doctor', ...nodeArgs(node), '--json', ...extra]);

    const good = await doctor();
    assert.equal(good.code, 0, `${good.stdout} ${good.stderr}`);
    const checks = checksOf(good);
    assert.deepEqual(
      checks.filter((c) => c.status !== 'ok' && c.status !== 'skip'),
      [],
    );
    for (const name of ['plugin line', 'other db_write plugins', 'lnbackup.json', 'key', 'vault', 'database', `server ${server.url}`, 'retention']) {
      assert.ok(
        checks.some((c) => c.check === name && c.status === 'ok'),
        `no ok for ${name}`,
      );
    }
    assert.match(checks.find((c) => c.check === `server ${server.url}`)?.detail ?? '', /level with the local vault/);
    const human = await cli(['doctor', ...nodeArgs(node)]);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /doctor: everything is fine/);

    // A second db_write plugin in the config.
    const otherPlugin = path.join(node.dir, 'backup.py');
    fs.writeFileSync(otherPlugin, '#!/usr/bin/env python3\n@plugin.hook("db_write")\ndef on_db_write(writes, **kwargs): pass\n', { mode: 0o755 });
    fs.appendFileSync(config, `plugin=${otherPlugin}\n`);
    flags(await doctor(), /^other db_write plugins$/, 'warn', /backup\.py/, 'a second db_write plugin');

    // No plugin line (lightningd's network config holds the rest).
    fs.writeFileSync(config, 'network=regtest\n');
    const noLine = await doctor();
    flags(noLine, /^plugin line$/, 'fail', /does not load lnbackup-cln/, 'no plugin line');
    assert.ok(
      checksOf(noLine)
        .find((c) => c.check === 'plugin line')
        ?.fix?.includes(`plugin=${PLUGIN_PATH}`),
      'the fix gives the line to add',
    );
    fs.writeFileSync(path.join(node.networkDir, 'config'), `plugin=${PLUGIN_PATH}\n`);

    // A server that holds no copy of the vault, and one that is down.
    const configJson = path.join(node.networkDir, 'lnbackup.json');
    const original = fs.readFileSync(configJson, 'utf8');
    const withOther = JSON.parse(original) as { remotes: string[] };
    withOther.remotes = [server.url, other.url];
    fs.writeFileSync(configJson, JSON.stringify(withOther));
    flags(await doctor(), new RegExp(`^server ${other.url}$`), 'fail', /holds no copy/, 'a server without the vault');
    assert.equal(await other.stop(), 0);
    otherStopped = true;
    flags(await doctor(), new RegExp(`^server ${other.url}$`), 'fail', /./, 'a server that is down');
    fs.writeFileSync(configJson, original);

    // A replica that is gone.
    const withReplica = JSON.parse(original) as { replicas?: string[] };
    withReplica.replicas = [path.join(tempDir('doctor-replica'), 'gone.sqlite3')];
    fs.writeFileSync(configJson, JSON.stringify(withReplica));
    flags(await doctor(), /^replica /, 'fail', /does not exist/, 'a replica that is gone');
    fs.writeFileSync(configJson, original);

    // lightningd "running" (a pid file naming a live process: this one) without the plugin's status since it started.
    const pidFile = path.join(node.lightningDir, 'lightningd-regtest.pid');
    fs.writeFileSync(pidFile, `${process.pid}\n`);
    flags(await doctor(), /^plugin status$/, 'fail', /before this lightningd started|missing/, 'lightningd without the plugin');
    fs.rmSync(pidFile);

    // A database older than the vault: an earlier copy put back.
    const db = path.join(node.networkDir, 'lightningd.sqlite3');
    const early = path.join(node.dir, 'early.sqlite3');
    fs.copyFileSync(db, early);
    await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: NODE3_CHAIN, plugin: PLUGIN_PATH, untilVersion: 45 });
    assert.equal((await doctor()).code, 0, 'after more traffic the setup is sound again');
    fs.copyFileSync(early, db);
    const stale = await doctor();
    flags(stale, /^database$/, 'fail', /older than the vault/, 'a stale database');
    assert.match(checksOf(stale).find((c) => c.check === 'database')?.fix ?? '', /lnbackup restore/);
  } finally {
    await server.stop();
    if (!otherStopped) await other.stop();
  }
});

test('doctor: a node without lnbackup.json is told to run init; usage errors exit 2', async () => {
  const dir = tempDir('doctor-none');
  fs.mkdirSync(path.join(dir, 'regtest'));
  const r = await cli(['doctor', '--lightning-dir', dir, '--network', 'regtest', '--json']);
  flags(r, /^lnbackup\.json$/, 'fail', /no lnbackup\.json/, 'no configuration');
  const usage = await cli(['doctor', '--json']);
  assert.equal(usage.code, 2);
});
