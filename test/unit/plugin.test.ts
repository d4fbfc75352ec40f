// Unit tests of the plugin's router and backup part through PluginIo, in-process (no lightningd, no
// child process), on a tiny node with a real vault: the manifest, init, the typed status, db_write
// answers (continue, a rewind superseded, a stale database and malformed calls refused with
// abort), the PostgreSQL case, and a node without configuration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { LnbackupPlugin, type PluginStatus } from '../../src/cln/plugin.js';
import { STATUS_FILE } from '../../src/cln/statusFile.js';
import type { JsonRpcRequest } from '../../src/cln/pluginProtocol.js';
import { makeTestNode } from '../helpers/testNode.js';
import { makeTinyNode } from '../helpers/tinyNode.js';

interface Sent {
  readonly id?: string;
  readonly method?: string;
  readonly result?: unknown;
  readonly error?: { code: number; message: string };
  readonly params?: { level: string; message: string };
}

class Lightningd {
  readonly sent: Sent[] = [];
  readonly plugin: LnbackupPlugin;
  private n = 0;

  constructor(networkDir: string) {
    this.plugin = new LnbackupPlugin(networkDir, { send: (text) => void this.sent.push(JSON.parse(text) as Sent) });
  }

  /** Sends a request and returns the plugin's reply to it. */
  async request(method: string, params: unknown = {}): Promise<Sent> {
    const id = `cln:${method}#${++this.n}`;
    await this.plugin.handle({ jsonrpc: '2.0', id, method, params } as JsonRpcRequest);
    const reply = this.sent.find((m) => m.id === id);
    assert.ok(reply, `no reply to ${id}`);
    return reply;
  }

  dbWrite(dataVersion: number, writes: readonly string[]): Promise<Sent> {
    return this.request('db_write', { data_version: dataVersion, writes });
  }

  logs(level?: string): string[] {
    return this.sent.filter((m) => m.method === 'log' && (level === undefined || m.params?.level === level)).map((m) => m.params?.message ?? '');
  }

  async status(): Promise<PluginStatus> {
    return (await this.request('lnbackup-status')).result as PluginStatus;
  }
}

const CONTINUE = { result: 'continue' };
const ABORT = { result: 'abort' };

test('plugin: the manifest names the status method and the db_write hook, not dynamic; init is answered; unknown methods get -32601', async () => {
  const node = makeTinyNode('unit-plugin-manifest');
  const ln = new Lightningd(node.networkDir);
  try {
    const manifest = await ln.request('getmanifest', { 'allow-deprecated-apis': false });
    assert.deepEqual(manifest.result, {
      options: [],
      rpcmethods: [{ name: 'lnbackup-status', usage: '', description: 'lnbackup: last durable version, vault, generation, snapshot and hook latency' }],
      hooks: [{ name: 'db_write' }],
      dynamic: false,
    });
    assert.equal((await ln.status()).initialized, false);
    const init = await ln.request('init', {
      options: {},
      configuration: { 'lightning-dir': node.networkDir, 'rpc-file': 'lightning-rpc', network: 'regtest', startup: true },
    });
    assert.deepEqual(init.result, {});
    assert.equal((await ln.status()).initialized, true);
    const unknown = await ln.request('lnbackup-nosuch');
    assert.deepEqual(unknown.error, { code: -32601, message: "lnbackup does not know the method 'lnbackup-nosuch'" });
  } finally {
    await ln.plugin.close();
  }
});

test('plugin: db_write calls answer continue once durable; the status says where the backup stands; a rewind is superseded', async () => {
  const node = makeTinyNode('unit-plugin-writes');
  const ln = new Lightningd(node.networkDir);
  try {
    for (let i = 0; i < 3; i++) {
      const writes = node.nextWrites();
      assert.deepEqual((await ln.dbWrite(node.version() + 1, writes)).result, CONTINUE);
      node.commit(writes);
    }
    let s = await ln.status();
    assert.equal(s.networkDir, node.networkDir);
    assert.equal(s.vault, node.vault);
    assert.ok('version' in s && 'destinations' in s && 'compaction' in s, "the open backup's fields are shown");
    assert.equal(s.version, 8);
    assert.equal(s.versionCommitted, false, 'the last call is in flight until the next one');
    assert.equal(s.stalledForMs, null);
    assert.deepEqual(
      s.destinations.map((d) => [d.kind, d.state]),
      [['vault', 'ok']],
    );
    assert.equal(s.hookLatency.count, 3);
    assert.equal(s.lastError, null);

    // lightningd died after the ack of 9 and before its COMMIT: 9 comes again with other writes.
    const lost = node.nextWrites();
    assert.deepEqual((await ln.dbWrite(9, lost)).result, CONTINUE);
    const again = [`INSERT INTO notes (body) VALUES ('the real 9')`, lost[1]];
    assert.deepEqual((await ln.dbWrite(9, again)).result, CONTINUE);
    node.commit(again);
    assert.ok(
      ln.logs('info').some((m) => /version 9 came again: its earlier record \d+ was acknowledged but never committed, and is superseded/.test(m)),
      ln.logs().join('; '),
    );
    s = await ln.status();
    assert.ok('version' in s);
    assert.equal(s.version, 9);
  } finally {
    await ln.plugin.close();
  }
  const file = JSON.parse(fs.readFileSync(path.join(node.networkDir, STATUS_FILE), 'utf8')) as PluginStatus & { updatedAt: string };
  assert.ok('version' in file && file.version === 9, 'lnbackup-status.json holds the last state at close');
});

test('plugin: a stale database and malformed calls are refused with abort and the way out in the log', async () => {
  const node = makeTinyNode('unit-plugin-refuse');
  const ln = new Lightningd(node.networkDir);
  try {
    const writes = node.nextWrites();
    assert.deepEqual((await ln.dbWrite(6, writes)).result, CONTINUE);
    node.commit(writes);
    const stale = [`UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = 3`];
    assert.deepEqual((await ln.dbWrite(4, stale)).result, ABORT);
    assert.ok(
      ln.logs('broken').some((m) => /refusing version 4: .*stale copy of its database\. Do NOT start this node again on this database\. Restore/.test(m)),
      ln.logs('broken').join('; '),
    );
    assert.deepEqual((await ln.request('db_write', { data_version: -1, writes: [] })).result, ABORT);
    assert.deepEqual((await ln.request('db_write', { data_version: 7, writes: [42] })).result, ABORT);
    assert.ok(ln.logs('broken').some((m) => /without a valid data_version and writes list/.test(m)));
    const s = await ln.status();
    assert.match(s.lastError ?? '', /without a valid data_version/);
  } finally {
    await ln.plugin.close();
  }
});

test('plugin: calls without statements (PostgreSQL backend) continue with one notice; a node without configuration is stopped at its first write', async () => {
  const node = makeTinyNode('unit-plugin-pg');
  const ln = new Lightningd(node.networkDir);
  try {
    assert.deepEqual((await ln.dbWrite(6, [])).result, CONTINUE);
    assert.deepEqual((await ln.dbWrite(7, [])).result, CONTINUE);
    assert.equal(ln.logs('info').filter((m) => /PostgreSQL replication protects this node/.test(m)).length, 1);
  } finally {
    await ln.plugin.close();
  }
  const bare = makeTestNode('unit-plugin-noconfig');
  const ln2 = new Lightningd(bare.networkDir);
  try {
    assert.deepEqual((await ln2.dbWrite(1, [`UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = 0`])).result, ABORT);
    assert.ok(
      ln2.logs('broken').some((m) => /could not make version 1 durable \(attempt 1\): .*lnbackup init.*Stopping lightningd/.test(m)),
      ln2.logs().join('; '),
    );
  } finally {
    await ln2.plugin.close();
  }
});
