// `node dist/bench/beaconBench.js [--runs N] [--json]`: what building and opening a peer-storage
// beacon (src/peerstorage/beacon) costs: the median, over N runs, of the CPU time (user + system,
// process.cpuUsage) and the wall time of one operation, for a beacon with one channel, one with
// 150 (the largest that fits one blob) and a striped one (400 channels, n=5, k=3, opened from 3
// shards with 2 of the data shards lost, so it is rebuilt by Reed-Solomon).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { beaconKeyFromRoot } from '../src/peerstorage/beacon/beaconKey.js';
import { buildBeacon, recoverBeacon } from '../src/peerstorage/beacon/beacon.js';
import type { BeaconContent } from '../src/peerstorage/beacon/beaconContent.js';
import { median } from './stats.js';
import { testdataDir } from '../test/helpers/paths.js';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '200' }, json: { type: 'boolean', default: false } } });
const runs = Number(values.runs);
const record = Buffer.from(JSON.parse(fs.readFileSync(path.join(testdataDir, 'peer-storage', 'nodeA.staticbackup.json'), 'utf8')).scb[0], 'hex');
const key = beaconKeyFromRoot(crypto.randomBytes(32));

function content(channels: number): BeaconContent {
  return {
    nodeId: Buffer.alloc(33, 2),
    createdMs: Date.now(),
    servers: [{ url: 'lnbackup://02aa@backup.example:9736', pinnedKey: Buffer.alloc(33, 3), vaultId: Buffer.alloc(16, 9) }],
    highWater: { generation: 1, sequence: 1000n, recordHash: Buffer.alloc(32, 1), dataVersion: 8178, timeMs: Date.now() },
    channelBackup: Array(channels).fill(record),
  };
}

/** Median CPU and wall milliseconds of `op` over `runs` runs (after 10 warm-up runs). */
async function measure(op: () => Promise<unknown>): Promise<{ cpuMs: number; wallMs: number }> {
  for (let i = 0; i < 10; i++) await op();
  const cpu: number[] = [];
  const wall: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await op();
    const t1 = process.hrtime.bigint();
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
    wall.push(Number(t1 - t0) / 1e6);
  }
  return { cpuMs: median(cpu), wallMs: median(wall) };
}

const rows: { beacon: string; op: string; cpuMs: number; wallMs: number }[] = [];
for (const [name, channels] of [
  ['1 channel, 1 blob', 1],
  ['150 channels, 1 blob', 150],
  ['400 channels, 5 shards (k=3)', 400],
] as const) {
  const c = content(channels);
  const blobs = await buildBeacon(key, 1n, c);
  const toOpen = blobs.length === 1 ? blobs : blobs.slice(2);
  rows.push({ beacon: name, op: 'build', ...(await measure(() => buildBeacon(key, 1n, c))) });
  rows.push({ beacon: name, op: blobs.length === 1 ? 'open' : 'open (2 data shards lost)', ...(await measure(() => recoverBeacon(key, toOpen))) });
}
if (values.json) {
  console.log(JSON.stringify({ runs, node: process.version, rows }));
} else {
  console.log(`runs per line: ${runs}, Node ${process.version}`);
  for (const r of rows) console.log(`${r.beacon.padEnd(30)} ${r.op.padEnd(26)} cpu ${r.cpuMs.toFixed(3)} ms  wall ${r.wallMs.toFixed(3)} ms`);
}
