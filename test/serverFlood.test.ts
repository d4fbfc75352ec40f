// Floods from strangers and from greedy clients, against a real `lnbackup server` child process on
// 127.0.0.1 (its memory is its own, read from /proc): (1) 150 connections of keys not on the
// allow-list, each sending 255 fragments of 65,534 bytes of a message that never ends (what took
// an earlier server from 126 MiB to 1.96 GiB); (2) on an --open server with a 128 MiB memory
// budget, 40 admitted connections doing the same after Hello, 10 holding 56 MiB of a 64 MiB pack
// upload open with pings, 5 asking for 3 MiB of records 20 times without reading a reply, and 20
// strangers sending fragments before Hello. Throughout, a good
// client appends records one at a time: every one is acknowledged and its latency stays bounded,
// and the server's resident memory stays under a stated bound.
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { MessageType } from '../src/protocol/messages.js';
import { generatePrivateKey } from '../src/transport/keys.js';
import { parseRemoteUrl } from '../src/destinations/remoteUrl.js';
import { FloodClient } from './helpers/floodClient.js';
import { tempDir } from './helpers/paths.js';
import { RawClient, testVault, type TestVault } from './helpers/rawClient.js';
import { startServer, type ServerHandle } from './helpers/serverProcess.js';
import { sleep } from './helpers/waiting.js';

const tmp = tempDir('server-flood');
const MiB = 1024 * 1024;

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

function percentile(sorted: number[], p: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** A good client appending one record at a time, timing each ack, until stopped. */
function goodClient(c: RawClient, v: TestVault): { stop: () => Promise<{ acked: number; p50: number; p99: number; max: number }> } {
  const ms: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const r = v.next(4000);
      const t0 = performance.now();
      const a = await c.append(v.vaultId, r);
      assert.equal(a.type, MessageType.Ack, a.type === MessageType.Error ? `the good client's seq ${r.seq}: ${a.message}` : '');
      ms.push(performance.now() - t0);
      await sleep(5);
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      const sorted = [...ms].sort((a, b) => a - b);
      return { acked: ms.length, p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: sorted[sorted.length - 1] ?? 0 };
    },
  };
}

/** Samples the server's RSS every 50 ms until stopped; returns the most seen. */
function rssSampler(pid: number): { stop: () => number } {
  let most = rssBytes(pid);
  const timer = setInterval(() => (most = Math.max(most, rssBytes(pid))), 50);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(most, rssBytes(pid));
    },
  };
}

async function measure(t: TestContext, srv: ServerHandle, good: TestVault, flood: () => Promise<void>): Promise<{ most: number; before: number }> {
  const c = await RawClient.ready(srv.url, good.transportKey);
  assert.equal((await c.openVault(good.vaultId, good.identity)).type, MessageType.VaultState);
  const calm = goodClient(c, good);
  await sleep(1500);
  const baseline = await calm.stop();
  const before = rssBytes(srv.pid);
  const sampler = rssSampler(srv.pid);
  const during = goodClient(c, good);
  await flood();
  await sleep(1000);
  const latency = await during.stop();
  const most = sampler.stop();
  t.diagnostic(
    `server RSS ${(before / MiB).toFixed(0)} MiB before, at most ${(most / MiB).toFixed(0)} MiB during the flood, ${(rssBytes(srv.pid) / MiB).toFixed(0)} MiB after; ` +
      `good client ack latency before: p50 ${baseline.p50.toFixed(1)} ms p99 ${baseline.p99.toFixed(1)} ms (${baseline.acked} acks); ` +
      `during: p50 ${latency.p50.toFixed(1)} ms p99 ${latency.p99.toFixed(1)} ms max ${latency.max.toFixed(1)} ms (${latency.acked} acks)`,
  );
  assert.ok(latency.acked >= 20, `the good client got ${latency.acked} acks during the flood`);
  assert.ok(latency.p99 < 2000, `the good client's ack p99 during the flood is ${latency.p99.toFixed(1)} ms`);
  c.close();
  return { most, before };
}

test(
  '150 strangers sending 16 MiB of fragments each: refused at act three, the server stays small, the good client keeps its acks',
  { timeout: 240_000 },
  async (t) => {
    const good = testVault(tmp, 'good-1');
    const srv = await startServer({ open: false, args: ['--allow', good.clientPublicKey.toString('hex'), '--max-connections-per-ip', '1024'] });
    const serverKey = parseRemoteUrl(srv.url).publicKey;
    try {
      const { most, before } = await measure(t, srv, good, async () => {
        const floods: Promise<void>[] = [];
        for (let i = 0; i < 150; i++) {
          // In waves of 10, as many machines would come; a handshake costs both sides two ECDHs.
          if (i % 10 === 0) await sleep(20);
          floods.push(
            FloodClient.connect(srv.port, generatePrivateKey(), serverKey).then(
              (f) => f.fragments(255),
              () => undefined,
            ),
          );
        }
        await Promise.all(floods);
      });
      assert.ok(most < before + 64 * MiB, `the server grew from ${(before / MiB).toFixed(0)} MiB to ${(most / MiB).toFixed(0)} MiB (bound: +64 MiB)`);
    } finally {
      assert.equal(await srv.stop(), 0);
    }
  },
);

test(
  'an --open server with a 128 MiB budget: unfinished messages, held pack uploads and pre-Hello fragments stay inside it',
  { timeout: 240_000 },
  async (t) => {
    const good = testVault(tmp, 'good-2');
    const budget = 128 * MiB;
    const srv = await startServer({ args: ['--memory-budget', '128MiB', '--max-connections-per-ip', '1024'] });
    const serverKey = parseRemoteUrl(srv.url).publicKey;
    const held: RawClient[] = [];
    const floods: FloodClient[] = [];
    try {
      // 5 vaults of about 3 MiB each, for readers that ask for them again and again and never read.
      const readVaults: TestVault[] = [];
      for (let i = 0; i < 5; i++) {
        const v = testVault(tmp, `read-${i}`);
        const c = await RawClient.ready(srv.url, v.transportKey);
        assert.equal((await c.openVault(v.vaultId, v.identity)).type, MessageType.VaultState);
        for (let k = 0; k < 50; k++) assert.equal((await c.append(v.vaultId, v.next(60_000))).type, MessageType.Ack);
        c.close();
        readVaults.push(v);
      }
      const { most, before } = await measure(t, srv, good, async () => {
        const work: Promise<unknown>[] = [];
        // 40 admitted connections, each a 16 MiB message that never ends.
        for (let i = 0; i < 40; i++) {
          if (i % 10 === 0) await sleep(20);
          work.push(
            FloodClient.connect(srv.port, generatePrivateKey(), serverKey).then(async (f) => {
              floods.push(f);
              f.send({ type: MessageType.Hello, versions: [1], agent: 'flood' });
              await sleep(50);
              await f.fragments(255);
            }),
          );
        }
        // 5 readers asking 20 times for 3 MiB of records, reading nothing.
        for (const v of readVaults) {
          work.push(
            FloodClient.connect(srv.port, v.transportKey, serverKey).then(async (f) => {
              floods.push(f);
              f.send({ type: MessageType.Hello, versions: [1], agent: 'flood' });
              f.send({ type: MessageType.OpenVault, requestId: 1, vaultId: v.vaultId, identity: Buffer.alloc(0) });
              await sleep(100);
              for (let r = 0; r < 20; r++) f.send({ type: MessageType.ReadRecords, requestId: 2 + r, vaultId: v.vaultId, fromSeq: 1n, maxBytes: 16 * MiB });
            }),
          );
        }
        // 20 strangers sending fragments before Hello.
        for (let i = 0; i < 20; i++) work.push(FloodClient.connect(srv.port, generatePrivateKey(), serverKey).then((f) => (floods.push(f), f.fragments(255))));
        // 10 clients holding 56 MiB of a 64 MiB pack open.
        for (let i = 0; i < 10; i++) {
          work.push(
            (async () => {
              const v = testVault(tmp, `packer-${i}`);
              const c = await RawClient.ready(srv.url, v.transportKey);
              held.push(c);
              assert.equal((await c.openVault(v.vaultId, v.identity)).type, MessageType.VaultState);
              const name = `p-${crypto.randomBytes(16).toString('hex')}.pack`;
              const piece = crypto.randomBytes(8 * MiB);
              for (let k = 0; k < 7; k++) {
                const r = await c.putPackPiece(v.vaultId, name, 64 * MiB, k * 8 * MiB, piece);
                if (r.type === MessageType.Error) return;
              }
              await c.ping();
            })().catch(() => undefined),
          );
        }
        await Promise.all(work);
      });
      const status = JSON.parse(fs.readFileSync(`${srv.dataDir}/server-status.json`, 'utf8')) as { memory: { mostHeldBytes: number; refusals: number } };
      t.diagnostic(`budget: at most ${(status.memory.mostHeldBytes / MiB).toFixed(1)} MiB held, ${status.memory.refusals} refusals`);
      assert.ok(status.memory.mostHeldBytes <= budget + budget / 8, 'the budget held (its limit, and the eighth beyond it kept for small messages)');
      assert.ok(status.memory.refusals > 0, 'the flood reached the budget');
      assert.ok(
        most < before + budget + 128 * MiB,
        `the server grew from ${(before / MiB).toFixed(0)} MiB to ${(most / MiB).toFixed(0)} MiB (bound: the budget + 128 MiB)`,
      );
    } finally {
      for (const c of held) c.close();
      for (const f of floods) f.destroy();
      assert.equal(await srv.stop(), 0);
    }
  },
);
