// The package as a user installs it: `npm pack` of this repository, then `npm install -g` of that
// tarball into a scratch prefix (dependencies from npm's cache, the native ones built by their
// allowed install scripts). The installed `lnbackup` runs a demo end to end, the installed
// `lnbackup-cln` answers lightningd's getmanifest, the demo's default trace is inside the package,
// and the systemd unit in contrib/ runs only options `lnbackup server` has.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PluginProcess } from '../src/simulator/pluginProcess.js';
import { repoRoot, tempDir, tracePath } from './helpers/paths.js';

/** The native dependencies whose install scripts (node-gyp builds) a global install must allow. */
const NATIVE = ['better-sqlite3', '@ronomon/reed-solomon'];

function run(command: string, args: string[], cwd: string, timeoutMs: number): string {
  const r = spawnSync(command, args, { cwd, encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, npm_config_update_notifier: 'false' } });
  assert.equal(r.error, undefined, `${command} ${args.join(' ')}: ${String(r.error)}`);
  assert.equal(r.status, 0, `${command} ${args.join(' ')} exited ${r.status}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

test('npm pack + npm install -g: lnbackup and lnbackup-cln work from the installed package alone', { timeout: 600_000 }, async () => {
  const dir = tempDir('package');
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { allowScripts: Record<string, boolean> };
  for (const name of NATIVE) assert.equal(pkg.allowScripts[name], true, `package.json's allowScripts does not allow ${name}'s build`);

  // dist/ is already built by `npm test`: pack it as it is (the prepare script would rebuild it
  // under the feet of the tests running beside this one).
  const packed = JSON.parse(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], repoRoot, 120_000)) as {
    filename: string;
    files: { path: string }[];
  }[];
  const files = packed[0].files.map((f) => f.path);
  for (const f of [
    'dist/src/cli/main.js',
    'dist/src/cln/main.js',
    'testdata/traces/cln-v26.06-node1.jsonl.gz',
    'testdata/simulator/listconfigs.json',
    'contrib/lnbackup-server.service',
    'README.md',
  ]) {
    assert.ok(files.includes(f), `the package lacks ${f}`);
  }
  assert.deepEqual(
    files.filter((f) => /^(dist\/)?(test|bench)\//.test(f)),
    [],
    'tests or benchmarks in the package',
  );

  const prefix = path.join(dir, 'prefix');
  run(
    'npm',
    [
      'install',
      '-g',
      '--prefix',
      prefix,
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      `--allow-scripts=${NATIVE.join(',')}`,
      path.join(dir, packed[0].filename),
    ],
    dir,
    480_000,
  );
  const bin = (name: string): string => path.join(prefix, 'bin', name);

  assert.match(run(bin('lnbackup'), ['--help'], dir, 60_000), /demo/);
  const installed = path.join(prefix, 'lib', 'node_modules', 'lnbackup');
  assert.ok(fs.existsSync(path.join(installed, 'testdata/traces/cln-v26.06-node1.jsonl.gz')), "the demo's default trace is not in the installed package");

  // The whole job from the installed package (its native modules included), on a short trace.
  const demo = JSON.parse(
    run(bin('lnbackup'), ['demo', '--trace', tracePath('cln-v26.06-node6.jsonl.gz'), '--dir', path.join(dir, 'demo'), '--json'], dir, 240_000),
  ) as { ok: boolean };
  assert.equal(demo.ok, true);

  const plugin = new PluginProcess({ command: { command: bin('lnbackup-cln'), args: [] }, cwd: dir, stderr: 'collect' });
  try {
    const manifest = (await plugin.request('getmanifest', { 'allow-deprecated-apis': false })).result as { hooks: { name: string }[] };
    assert.ok(
      manifest.hooks.some((h) => h.name === 'db_write'),
      JSON.stringify(manifest),
    );
  } finally {
    const exit = await plugin.close(10_000);
    assert.equal(exit.code, 0, `lnbackup-cln exited ${JSON.stringify(exit)} when lightningd closed its stdin`);
  }

  // The systemd unit runs only options that exist.
  const unit = fs.readFileSync(path.join(repoRoot, 'contrib/lnbackup-server.service'), 'utf8');
  const execStart = /^ExecStart=(.*)$/m.exec(unit)?.[1] ?? '';
  const serverHelp = run(bin('lnbackup'), ['server', '--help'], dir, 60_000);
  for (const option of execStart.match(/--[a-z-]+/g) ?? [])
    assert.ok(serverHelp.includes(option), `the unit passes ${option}, which lnbackup server does not take`);
  assert.match(execStart, /lnbackup server --data \/var\/lib\/lnbackup/);
});
