// When the consumer sends its beacon (src/peerstorage/consumer/sendGate.ts): never to a
// reconnected peer before its retrieval arrived (or the timeout passed), never over a copy as new
// or newer, at once on channel changes, at most once per refresh interval otherwise.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BeaconSendGate } from '../src/peerstorage/consumer/sendGate.js';
import { FakeClock } from './helpers/fakeClock.js';

const A = '039e7449de1cede60cd56069d4f66e43c3aceadc9be9733d3d88b317c334d4dce6';
const B = '027d3a012dafc7c2c238f71a42b74ff2ffe3502f0a56f0e5d55db0ecf904867642';

function setup() {
  const clock = new FakeClock();
  const sent: { peer: string; version: bigint; at: number }[] = [];
  const gate = new BeaconSendGate((peer, version) => sent.push({ peer, version, at: clock.now() }), { clock, retrievalTimeoutMs: 10_000, refreshMs: 600_000 });
  return { clock, sent, gate };
}

test('no send to a reconnected peer before its retrieval arrived, even when the beacon changes meanwhile', () => {
  const { clock, sent, gate } = setup();
  gate.beaconChanged(5n, true);
  gate.connected(A);
  gate.beaconChanged(6n, true);
  clock.advance(9_999);
  assert.equal(sent.length, 0, 'nothing while the retrieval is awaited');
  gate.retrieved(A, 4n);
  assert.deepEqual(
    sent.map((s) => [s.peer, s.version]),
    [[A, 6n]],
    'the current beacon, right after the retrieval',
  );
  clock.advance(100_000);
  assert.equal(sent.length, 1, 'the timeout of an answered wait sends nothing more');
});

test('a peer that hands nothing back gets the beacon when the timeout passes', () => {
  const { clock, sent, gate } = setup();
  gate.beaconChanged(1n, true);
  gate.connected(A);
  clock.advance(9_999);
  assert.equal(sent.length, 0);
  clock.advance(1);
  assert.deepEqual(
    sent.map((s) => [s.peer, s.version, s.at]),
    [[A, 1n, clock.now()]],
  );
});

test('never over a copy that is as new or newer; a late retrieval changes nothing', () => {
  const { clock, sent, gate } = setup();
  gate.beaconChanged(7n, true);
  gate.connected(A);
  gate.retrieved(A, 7n);
  assert.equal(sent.length, 0, 'it already holds version 7');
  gate.connected(B);
  gate.retrieved(B, 9n);
  assert.equal(sent.length, 0, 'B holds a newer beacon (we were restored from an old copy): never overwrite it');
  gate.beaconChanged(8n, true);
  assert.deepEqual(
    sent.map((s) => [s.peer, s.version]),
    [[A, 8n]],
  );
  gate.beaconChanged(10n, true);
  assert.deepEqual(
    sent.map((s) => [s.peer, s.version]),
    [
      [A, 8n],
      [A, 10n],
      [B, 10n],
    ],
  );
  gate.retrieved(A, 1n);
  clock.advance(1_000_000);
  assert.equal(sent.length, 3);
});

test('channel changes are sent at once; other changes at most once per refresh interval, the newest', () => {
  const { clock, sent, gate } = setup();
  gate.connected(A);
  gate.retrieved(A, null);
  gate.beaconChanged(1n, false);
  assert.equal(sent.length, 1, 'the first send is not delayed');
  for (let v = 2n; v < 100n; v++) {
    gate.beaconChanged(v, false);
    clock.advance(10_000);
  }
  assert.deepEqual(
    sent.map((s) => s.version),
    [1n, 61n],
    'one refresh after 600 s, with the version current then',
  );
  gate.beaconChanged(100n, true);
  assert.deepEqual(
    sent.map((s) => s.version),
    [1n, 61n, 100n],
    'a channel change is not held back',
  );
  clock.advance(600_000);
  assert.equal(sent.length, 3, 'nothing new to refresh');
});

test('a disconnected peer gets nothing; reconnecting waits again', () => {
  const { clock, sent, gate } = setup();
  gate.beaconChanged(1n, true);
  gate.connected(A);
  gate.disconnected(A);
  clock.advance(20_000);
  gate.beaconChanged(2n, true);
  assert.equal(sent.length, 0);
  gate.connected(A);
  gate.beaconChanged(3n, true);
  assert.equal(sent.length, 0);
  gate.retrieved(A, null);
  assert.deepEqual(
    sent.map((s) => s.version),
    [3n],
  );
  gate.stop();
  assert.equal(clock.pendingTimers, 0);
});
