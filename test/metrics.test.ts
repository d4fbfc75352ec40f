// The Prometheus endpoint and the two registries, over real HTTP on 127.0.0.1: /metrics in the text
// format with the metrics operators alert on, 404/405 for anything else, addresses checked; the
// server's metrics read its status at the scrape and count what the observer is told; the plugin's
// carry one series per destination, and the real plugin serves them while a replay runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseMetricsAddress, startMetricsEndpoint } from '../src/metrics/endpoint.js';
import { PluginMetrics, type PluginMetricsSnapshot } from '../src/metrics/pluginMetrics.js';
import { ServerMetrics } from '../src/metrics/serverMetrics.js';
import type { ServerStatus } from '../src/server/statusFile.js';
import fs from 'node:fs';
import path from 'node:path';
import { PLUGIN_PATH } from '../src/cli/initNode.js';
import { runSimulatorUntilDone, spawnSimulator } from '../src/simulator/runner.js';
import { tracePath } from './helpers/paths.js';
import { loadKeys } from '../src/cli/keyOptions.js';
import { generatePrivateKey, publicKeyOf } from '../src/transport/keys.js';
import { cli, freePort, makeRemoteNode, nodeArgs, transportKeyOf } from './helpers/remoteNode.js';
import { startServer } from './helpers/serverProcess.js';
import { makeTestNode } from './helpers/testNode.js';

/** The value of one sample line (`name{labels} value`) in a scrape. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const status = (over: Partial<ServerStatus> = {}): ServerStatus => ({
  pid: 1,
  startedAt: '2026-12-07T00:00:00.000Z',
  updatedAt: '2026-12-07T00:00:01.000Z',
  url: 'lnbackup://02@127.0.0.1:1',
  publicKey: '02',
  listen: '127.0.0.1:1',
  storage: { kind: 'files', location: '/x' },
  access: { open: false, allowListSize: 1, quotaBytes: 1, maxVaults: 1 },
  connections: 3,
  memory: { heldBytes: 4096, mostHeldBytes: 8192, limitBytes: 536870912, reserveBytes: 67108864, refusals: 5 },
  handshaking: 1,
  handshakeFailures: 4,
  refusedConnections: 0,
  clients: [
    {
      publicKey: 'a',
      connected: true,
      connections: 2,
      lastActivityAt: null,
      records: 5,
      bytes: 50,
      pendingAppends: 2,
      vaults: [{ vaultId: 'v', storedAs: 'v', firstSeq: '1', lastSeq: '9', lastGeneration: 1, bytes: 900, lastWriteAt: null }],
      totalBytes: 1000,
    },
    { publicKey: 'b', connected: false, connections: 0, lastActivityAt: null, records: 0, bytes: 0, pendingAppends: 0, vaults: [], totalBytes: 24 },
  ],
  storeCounters: { rounds: 7, records: 20, maxRoundMs: 3 },
  appendCounters: { appends: 11, records: 20, bytes: 2000, maxAppendMs: 4 },
  stopping: false,
  stoppedAt: null,
  scrub: {
    intervalMs: 1000,
    running: false,
    nextAt: null,
    last: {
      startedAt: 'x',
      finishedAt: '2026-12-07T00:00:10.000Z',
      files: 3,
      bytes: 9,
      repairedFiles: 1,
      damagedFiles: 2,
      unprotectedFiles: 0,
      repaired: [],
      unrecoverable: [],
      error: null,
    },
  },
  ...over,
});

test('metrics endpoint: GET /metrics in the Prometheus text format, 404 and 405 otherwise; addresses checked', async () => {
  assert.deepEqual(parseMetricsAddress('127.0.0.1:9737'), { host: '127.0.0.1', port: 9737 });
  assert.deepEqual(parseMetricsAddress('[::1]:0'), { host: '::1', port: 0 });
  for (const bad of ['9737', 'localhost', '127.0.0.1:99999', ':9737', '127.0.0.1:x']) assert.throws(() => parseMetricsAddress(bad), /host:port/, bad);

  let current = status();
  const metrics = new ServerMetrics(() => Promise.resolve(current));
  const endpoint = await startMetricsEndpoint('127.0.0.1', 0, metrics);
  try {
    const res = await fetch(endpoint.url);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assert.match(text, /# HELP lnbackup_server_connections /);
    assert.match(text, /# TYPE lnbackup_server_ack_latency_seconds histogram/);
    assert.equal((await fetch(endpoint.url.replace('/metrics', '/'))).status, 404);
    assert.equal((await fetch(endpoint.url, { method: 'POST', body: 'x' })).status, 405);

    // The status is read at each scrape.
    current = status({ connections: 9 });
    assert.equal(sample(await (await fetch(endpoint.url)).text(), 'lnbackup_server_connections'), 9);
  } finally {
    await endpoint.close();
  }
});

test('server metrics: gauges and totals from the status, latencies and refusals from the observer', async () => {
  const metrics = new ServerMetrics(() => Promise.resolve(status()));
  metrics.acknowledged(0.0003);
  metrics.acknowledged(0.002);
  metrics.roundCommitted(12, 0.0015, true);
  metrics.roundCommitted(3, 0.5, false);
  metrics.refused('full');
  metrics.refused('full');
  metrics.refused('not-allowed');
  const text = await metrics.render();
  const expect: [string, number][] = [
    ['lnbackup_server_connections', 3],
    ['lnbackup_server_handshaking', 1],
    ['lnbackup_server_clients', 2],
    ['lnbackup_server_clients_connected', 1],
    ['lnbackup_server_vaults', 1],
    ['lnbackup_server_stored_bytes', 1024],
    ['lnbackup_server_pending_appends', 2],
    ['lnbackup_server_appends_total', 11],
    ['lnbackup_server_records_total', 20],
    ['lnbackup_server_appended_bytes_total', 2000],
    ['lnbackup_server_commit_rounds_total', 7],
    ['lnbackup_server_handshake_failures_total', 4],
    ['lnbackup_server_memory_held_bytes', 4096],
    ['lnbackup_server_memory_limit_bytes', 536870912],
    ['lnbackup_server_memory_refusals_total', 5],
    ['lnbackup_server_scrub_damaged_files', 2],
    ['lnbackup_server_scrub_repaired_files', 1],
    ['lnbackup_server_scrub_last_finished_timestamp_seconds', Date.parse('2026-12-07T00:00:10.000Z') / 1000],
    ['lnbackup_server_ack_latency_seconds_count', 2],
    ['lnbackup_server_ack_latency_seconds_bucket{le="0.0005"}', 1],
    ['lnbackup_server_ack_latency_seconds_bucket{le="0.0025"}', 2],
    ['lnbackup_server_commit_seconds_count{result="ok"}', 1],
    ['lnbackup_server_commit_seconds_count{result="failed"}', 1],
    ['lnbackup_server_commit_round_records_sum', 12],
    ['lnbackup_server_refusals_total{reason="full"}', 2],
    ['lnbackup_server_refusals_total{reason="not-allowed"}', 1],
  ];
  for (const [series, value] of expect) assert.equal(sample(text, series), value, series);
  assert.ok(sample(text, 'lnbackup_server_process_resident_memory_bytes')! > 0, 'process metrics');
  // A second scrape reads the totals again (no double counting).
  assert.equal(sample(await metrics.render(), 'lnbackup_server_appends_total'), 11);
});

test('plugin metrics: hook histogram, the node and vault, one series per destination', async () => {
  let snap: PluginMetricsSnapshot = {
    dataVersion: 4242,
    lastSeq: 77n,
    generation: 3,
    vaultBytes: 123456,
    stalledSeconds: 0,
    compactions: 5,
    destinations: [
      { name: '/vault', kind: 'vault', state: 'ok', durableSeq: 77n, lagRecords: 0 },
      { name: 'lnbackup://02ab@h:1', kind: 'server', state: 'stalled', durableSeq: 70n, lagRecords: 7 },
    ],
    postgresZeroLoss: null,
  };
  const metrics = new PluginMetrics(() => snap);
  metrics.hookAnswered(0.0004);
  let text = await metrics.render();
  for (const [series, value] of [
    ['lnbackup_data_version', 4242],
    ['lnbackup_last_record_seq', 77],
    ['lnbackup_generation', 3],
    ['lnbackup_vault_bytes', 123456],
    ['lnbackup_stalled_seconds', 0],
    ['lnbackup_compactions_total', 5],
    ['lnbackup_hook_seconds_count', 1],
    ['lnbackup_hook_seconds_bucket{le="0.0005"}', 1],
    ['lnbackup_destination_lag_records{destination="lnbackup://02ab@h:1",kind="server"}', 7],
    ['lnbackup_destination_up{destination="lnbackup://02ab@h:1",kind="server"}', 0],
    ['lnbackup_destination_up{destination="/vault",kind="vault"}', 1],
    ['lnbackup_destination_durable_seq{destination="/vault",kind="vault"}', 77],
  ] as [string, number][]) {
    assert.equal(sample(text, series), value, series);
  }
  assert.ok(!/^lnbackup_postgres_zero_loss/m.test(text), 'a sqlite node reports no PostgreSQL protection');
  assert.equal(sample(await new PluginMetrics(() => ({ ...snap, postgresZeroLoss: 0 })).render(), 'lnbackup_postgres_zero_loss{wallet="postgres"}'), 0);
  // A destination removed is no longer reported.
  snap = { ...snap, destinations: snap.destinations.slice(0, 1) };
  text = await metrics.render();
  assert.equal(sample(text, 'lnbackup_destination_up{destination="lnbackup://02ab@h:1",kind="server"}'), undefined);
});

test('plugin metrics during a replay: `metrics` in lnbackup.json serves /metrics on loopback after init; scrapes while calls flow see the version, the hook histogram and the vault grow', async () => {
  const node = makeTestNode('metrics-plugin');
  const init = await cli(['init', ...nodeArgs(node), '--vault', node.vault, '--json']);
  assert.equal(init.code, 0, init.stderr);
  const port = await freePort();
  const configFile = path.join(node.networkDir, 'lnbackup.json');
  fs.writeFileSync(configFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(configFile, 'utf8')), metrics: `127.0.0.1:${port}` }));
  const url = `http://127.0.0.1:${port}/metrics`;
  const sim = spawnSimulator({
    lightningDir: node.lightningDir,
    traces: [tracePath('cln-v26.06-node1.jsonl.gz')],
    plugin: PLUGIN_PATH,
    untilVersion: 3000,
    progressEvery: 100,
  });
  const scrapes: string[] = [];
  let done = false;
  void sim.exit.finally(() => (done = true));
  while (!done) {
    try {
      const res = await fetch(url);
      if (res.status === 200) scrapes.push(await res.text());
    } catch {
      // not serving yet (before init), or gone (after the end)
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const exit = await sim.exit;
  assert.equal(exit.code, 0, exit.stderr);
  assert.ok(scrapes.length >= 3, `only ${scrapes.length} scrapes during the replay`);
  const versions = scrapes.map((t) => sample(t, 'lnbackup_data_version')).filter((v): v is number => v !== undefined);
  assert.ok(versions.length >= 2 && versions[versions.length - 1] > versions[0], `data_version did not grow across scrapes: ${versions.join(', ')}`);
  const hooks = scrapes.map((t) => sample(t, 'lnbackup_hook_seconds_count') ?? 0);
  assert.ok(hooks[hooks.length - 1] > hooks[0], `the hook histogram did not grow: ${hooks.join(', ')}`);
  const last = scrapes[scrapes.length - 1];
  assert.equal(sample(last, `lnbackup_destination_up{destination="${node.vault}",kind="vault"}`), 1);
  assert.ok((sample(last, 'lnbackup_vault_bytes') ?? 0) > 0);
  assert.ok((sample(last, 'lnbackup_plugin_process_resident_memory_bytes') ?? 0) > 0);
  // Only loopback: another address is refused at start, and the plugin says so (it goes on without metrics).
  fs.writeFileSync(configFile, JSON.stringify({ ...JSON.parse(fs.readFileSync(configFile, 'utf8')), metrics: `0.0.0.0:${port}` }));
  const refused = await runSimulatorUntilDone({
    lightningDir: node.lightningDir,
    traces: [tracePath('cln-v26.06-node1.jsonl.gz')],
    plugin: PLUGIN_PATH,
    untilVersion: 3010,
  });
  assert.ok(refused.lifetimes[0].events.some((e) => e.event === 'plugin-log' && /metrics not served: .*not a loopback address/.test(e.message)));
});

test('server metrics: `lnbackup server --metrics` serves the ack and commit histograms, the clients and vaults while a node replays into it, and counts refusals by reason', async () => {
  const port = await freePort();
  const server = await startServer({ args: ['--metrics', `127.0.0.1:${port}`] });
  const stranger = makeTestNode('metrics-stranger');
  const strangerKey = transportKeyOf(loadKeys({ hsmSecret: stranger.hsmSecretPath }).keys);
  const closed = await startServer({
    open: false,
    args: ['--allow', publicKeyOf(generatePrivateKey()).toString('hex'), '--metrics', `127.0.0.1:${await freePort()}`],
  });
  try {
    const node = await makeRemoteNode('metrics-server', { remotes: [server.url] });
    await runSimulatorUntilDone({ lightningDir: node.lightningDir, traces: [tracePath('cln-v26.06-node6.jsonl.gz')], plugin: PLUGIN_PATH });
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.ok((sample(text, 'lnbackup_server_ack_latency_seconds_count') ?? 0) > 10, 'acks observed');
    assert.ok((sample(text, 'lnbackup_server_commit_seconds_count{result="ok"}') ?? 0) > 0, 'rounds observed');
    assert.ok((sample(text, 'lnbackup_server_commit_round_records_sum') ?? 0) > 10);
    assert.equal(sample(text, 'lnbackup_server_vaults'), 1);
    assert.equal(sample(text, 'lnbackup_server_clients'), 1);
    assert.ok((sample(text, 'lnbackup_server_records_total') ?? 0) > 10);
    assert.ok((sample(text, 'lnbackup_server_stored_bytes') ?? 0) > 0);
    // A key the other server does not allow: refused at act three, counted by reason.
    const r = await cli(['init', ...nodeArgs(stranger), '--vault', stranger.vault, '--remote', closed.url, '--json']);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(strangerKey));
    const closedMetrics = /metrics at (http:\/\/\S+)/.exec(closed.stderr())?.[1];
    assert.ok(closedMetrics, closed.stderr());
    const after = await (await fetch(closedMetrics)).text();
    assert.ok(
      (sample(after, 'lnbackup_server_refusals_total{reason="not-allowed"}') ?? 0) >= 1,
      after
        .split('\n')
        .filter((l) => l.includes('refusals'))
        .join('\n'),
    );
  } finally {
    assert.equal(await server.stop(), 0);
    assert.equal(await closed.stop(), 0);
  }
});
