// The provider's rules (src/peerstorage/provider): replace semantics, slots only for channel
// peers, bounds, the cooldown (first update at once, then at most one commit per minute, newest
// kept and committed at the cooldown's end and on stop), collection 2016 blocks after the last
// channel closed, and chanbackup's datastore layout as recorded from Core Lightning v26.06.6.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PeerBlobStore } from '../src/peerstorage/provider/peerBlobStore.js';
import { FakeClock } from './helpers/fakeClock.js';
import { peerOfSlotKey, peerSlotKey } from '../src/peerstorage/provider/chanbackupLayout.js';
import { testdataDir } from './helpers/paths.js';

const fixtures = path.join(testdataDir, 'peer-storage');
const A = '039e7449de1cede60cd56069d4f66e43c3aceadc9be9733d3d88b317c334d4dce6';
const C = '02b2404f3b1307a9562926b9b2aec928655a5c69c8be17def1a2c79a963ac9dc58';

function recorder() {
  const commits: { peer: string; blob: Buffer | null; at: number }[] = [];
  const durable = new Map<string, Buffer>();
  return { commits, durable };
}

function setup(options: { maxPeers?: number } = {}) {
  const clock = new FakeClock();
  const { commits, durable } = recorder();
  const store = new PeerBlobStore(
    async (peer, blob) => {
      commits.push({ peer, blob, at: clock.now() });
      if (blob === null) durable.delete(peer);
      else durable.set(peer, blob);
    },
    { clock, ...options },
  );
  return { clock, store, commits, durable };
}

const settle = () => new Promise((r) => setImmediate(r));
const blob = (i: number) => Buffer.from(`blob ${i}`);

test('replace: a blob is stored only with a slot, replaces the previous one, and is handed back byte-identical on every reconnection', async () => {
  const { clock, store, durable } = setup();
  assert.equal(store.receive(A, blob(1)), 'no-slot', 'no channel, no slot: not stored (as chanbackup)');
  assert.equal(store.retrieve(A), null);
  assert.equal(store.channelOpened(A), 'created');
  assert.equal(store.retrieve(A), null, 'an empty slot sends no peer_storage_retrieval');
  assert.equal(store.receive(A, blob(2)), 'commit');
  clock.advance(61_000);
  assert.equal(store.receive(A, blob(3)), 'commit');
  await settle();
  for (let reconnect = 0; reconnect < 5; reconnect++) assert.deepEqual(store.retrieve(A), blob(3));
  assert.deepEqual(durable.get(A), blob(3));
  assert.equal(store.receive(A, Buffer.alloc(65532)), 'too-large');
  assert.equal(store.receive(A, Buffer.alloc(65531)), 'held', 'the largest blob BOLT #1 allows is taken');
});

test('cooldown: a flood of 10,000 updates gives at most 2 commits, the newest survives a clean stop', async () => {
  const { clock, store, commits, durable } = setup();
  store.channelOpened(A);
  await settle();
  commits.length = 0;
  for (let i = 0; i < 10_000; i++) {
    store.receive(A, blob(i));
    clock.advance(0.5); // 10,000 updates in 5 seconds
  }
  await settle();
  assert.equal(commits.length, 1, 'the first update at once');
  assert.deepEqual(commits[0].blob, blob(0));
  assert.deepEqual(store.retrieve(A), blob(9999), 'the newest is held in memory and handed back');
  await store.stop();
  assert.equal(commits.length, 2, 'and the newest on stop');
  assert.deepEqual(durable.get(A), blob(9999));
  assert.equal(store.receive(A, blob(1)), 'stopped');
  assert.equal(clock.pendingTimers, 0);
});

test('cooldown: the held blob is committed when the cooldown ends, then the next update waits again', async () => {
  const { clock, store, commits } = setup();
  store.channelOpened(A);
  await settle();
  commits.length = 0;
  assert.equal(store.receive(A, blob(1)), 'commit');
  await settle();
  clock.advance(10_000);
  assert.equal(store.receive(A, blob(2)), 'held');
  clock.advance(20_000);
  assert.equal(store.receive(A, blob(3)), 'held');
  clock.advance(29_999);
  await settle();
  assert.equal(commits.length, 1);
  clock.advance(1);
  await settle();
  assert.deepEqual(
    commits.map((c) => [c.blob?.toString(), c.at - commits[0].at]),
    [
      ['blob 1', 0],
      ['blob 3', 60_000],
    ],
  );
  assert.equal(store.receive(A, blob(4)), 'held', 'within a minute of the last commit');
  clock.advance(60_000);
  await settle();
  assert.equal(commits.length, 3);
  clock.advance(5 * 60_000);
  assert.equal(store.receive(A, blob(5)), 'commit', 'after a quiet minute, at once again');
  await settle();
  // A flood over ten minutes: one commit a minute at most.
  commits.length = 0;
  const start = clock.now();
  for (let i = 0; i < 6000; i++) {
    store.receive(A, blob(100 + i));
    clock.advance(100);
    await settle();
  }
  await settle();
  const minutes = (clock.now() - start) / 60_000;
  assert.ok(commits.length <= minutes + 1, `${commits.length} commits in ${minutes} minutes`);
  for (let i = 1; i < commits.length; i++) assert.ok(commits[i].at - commits[i - 1].at >= 60_000, `commits at ${commits.map((c) => c.at - start)}`);
});

test('cooldown is per peer, and a failed commit is retried after the cooldown', async () => {
  const clock = new FakeClock();
  const commits: string[] = [];
  let failNext = true;
  const errors: string[] = [];
  const store = new PeerBlobStore(
    async (peer, b) => {
      if (b !== null && b.length > 0 && failNext) {
        failNext = false;
        throw new Error('datastore unavailable');
      }
      commits.push(`${peer.slice(0, 4)}:${b?.toString()}`);
    },
    { clock, onCommitError: (peer, e) => errors.push(`${peer.slice(0, 4)} ${(e as Error).message}`) },
  );
  store.channelOpened(A);
  store.channelOpened(C);
  assert.equal(store.receive(A, blob(1)), 'commit');
  assert.equal(store.receive(C, blob(2)), 'commit', "another peer's cooldown is its own");
  await settle();
  assert.deepEqual(errors, ['039e datastore unavailable']);
  clock.advance(60_000);
  await settle();
  assert.deepEqual(commits, ['039e:', '02b2:', '02b2:blob 2', '039e:blob 1']);
});

test('bounded: at most maxPeers slots', () => {
  const { store } = setup({ maxPeers: 2 });
  assert.equal(store.channelOpened(A), 'created');
  assert.equal(store.channelOpened(C), 'created');
  assert.equal(store.channelOpened('03' + 'ab'.repeat(32)), 'full');
  assert.equal(store.channelOpened(A), 'exists');
  assert.equal(store.peers().length, 2);
});

test('collection: the slot stays until 2016 blocks after the last channel closed, and is handed back until then', async () => {
  const { store, durable } = setup();
  store.channelOpened(A);
  store.channelOpened(A);
  store.receive(A, blob(1));
  store.channelClosed(A, 1000);
  assert.deepEqual(store.collect(100_000), [], 'one channel is still open');
  store.channelClosed(A, 1200);
  assert.deepEqual(store.collect(1200 + 2015), []);
  assert.deepEqual(store.retrieve(A), blob(1), 'still handed back after the last channel closed');
  assert.deepEqual(store.collect(1200 + 2016), [A]);
  await settle();
  assert.equal(store.retrieve(A), null);
  assert.equal(durable.has(A), false, 'the slot is removed from the datastore');
  assert.equal(store.receive(A, blob(2)), 'no-slot');
  store.channelOpened(C);
  store.channelClosed(C, 5000);
  store.channelOpened(C);
  assert.deepEqual(store.collect(10_000), [], 'a new channel cancels the collection');
});

test("chanbackup's datastore layout: the recorded slot holds the peer's blob verbatim", () => {
  const entries: { key: string[]; hex?: string; generation?: number }[] = JSON.parse(
    fs.readFileSync(path.join(fixtures, 'nodeB.listdatastore.json'), 'utf8'),
  ).all_entries;
  const slots = entries.filter((e) => peerOfSlotKey(e.key) !== null);
  assert.deepEqual(
    slots.map((e) => e.key),
    [peerSlotKey(A)],
  );
  assert.deepEqual(
    Buffer.from(slots[0].hex ?? '', 'hex'),
    fs.readFileSync(path.join(fixtures, 'nodeA.emergency.recover')),
    "B holds A's last type 7 blob, its emergency.recover",
  );
  assert.ok(entries.some((e) => e.key.join('/') === 'chanbackup/latestscb'));
  assert.equal(peerOfSlotKey(['chanbackup', 'latestscb']), null);
  assert.throws(() => peerSlotKey('not a node id'), RangeError);
});

test('loading the stored slots: blobs are handed back, collection resumes', () => {
  const clock = new FakeClock();
  const store = new PeerBlobStore(async () => undefined, { clock }, [
    { peerId: A, blob: blob(7), openChannels: 1, closedAtHeight: null },
    { peerId: C, blob: blob(8), openChannels: 0, closedAtHeight: 100 },
  ]);
  assert.deepEqual(store.retrieve(A), blob(7));
  assert.deepEqual(store.collect(2116), [C]);
  assert.throws(
    () =>
      new PeerBlobStore(async () => undefined, { maxPeers: 1 }, [
        { peerId: A, blob: blob(1), openChannels: 1, closedAtHeight: null },
        { peerId: C, blob: blob(1), openChannels: 1, closedAtHeight: null },
      ]),
    RangeError,
  );
});
