// `lnbackup server allow` on a running server (real child processes on 127.0.0.1): a node whose key
// is not allowed is refused; `server allow <its key>` admits it within seconds, without a restart;
// `server allow --remove` takes it out again (new connections refused, the open one closed); a
// restart keeps the file's keys; bad keys are usage errors and nothing is written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { generatePrivateKey, publicKeyOf } from '../src/transport/keys.js';
import { loadKeys } from '../src/cli/keyOptions.js';
import { startServer } from './helpers/serverProcess.js';
import { cli, nodeArgs, transportKeyOf, until } from './helpers/remoteNode.js';
import { makeTestNode } from './helpers/testNode.js';

test('server allow: a key admitted while the server runs, then removed; the file survives a restart; bad keys refused', async () => {
  const other = publicKeyOf(generatePrivateKey()).toString('hex');
  let server = await startServer({ open: false, args: ['--allow', other] });
  try {
    const node = makeTestNode('allow-live');
    const key = transportKeyOf(loadKeys({ hsmSecret: node.hsmSecretPath }).keys);
    const init = await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--json']);
    assert.equal(init.code, 0, init.stderr);
    const add = (): ReturnType<typeof cli> => cli(['destination', 'add', ...nodeArgs(node), '--remote', server.url, '--json']);
    const refused = await add();
    assert.equal(refused.code, 1);
    assert.match(String(refused.json?.error), /does not allow this node's transport key/);

    // Admitted without a restart.
    const allowed = await cli(['server', 'allow', key, '--data', server.dataDir, '--json']);
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.deepEqual(allowed.json?.keys, [key]);
    await until('the server to pick up the allow file', async () => (await add()).code === 0, 15_000, 300);
    assert.match(server.stderr(), /allow-list changed: 2 key\(s\) \(1 from --allow, 1 from allowed-keys\)/);
    const listed = await cli(['server', 'allow', '--data', server.dataDir]);
    assert.equal(listed.code, 0);
    assert.ok(listed.stdout.includes(key));

    // Kept across a restart.
    assert.equal(await server.stop(), 0);
    server = await server.restart();
    const status = await cli(['destination', 'list', ...nodeArgs(node), '--json']);
    assert.equal(status.code, 0);
    const again = await cli(['verify', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--json']);
    assert.equal(again.code, 0, again.stderr);

    // Taken out: refused again.
    const removed = await cli(['server', 'allow', '--remove', key, '--data', server.dataDir, '--json']);
    assert.equal(removed.code, 0, removed.stderr);
    assert.deepEqual(removed.json?.keys, []);
    await until(
      'the key to be refused again',
      async () => (await cli(['verify', '--from', server.url, '--hsm-secret', node.hsmSecretPath, '--json'])).code !== 0,
      15_000,
      300,
    );

    // Usage errors write nothing.
    const before = fs.readFileSync(path.join(server.dataDir, 'allowed-keys'), 'utf8');
    for (const args of [['02zz'], ['02'.padEnd(66, '0')], ['--remove']]) {
      const r = await cli(['server', 'allow', ...args, '--data', server.dataDir, '--json']);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    }
    assert.equal(fs.readFileSync(path.join(server.dataDir, 'allowed-keys'), 'utf8'), before);
  } finally {
    await server.stop();
  }
});
