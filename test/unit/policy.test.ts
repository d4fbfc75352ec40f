// Unit tests of the durability policy (src/destinations/policy.ts) over fake destinations whose
// answers the test gives: quorum counting, the failure rule (a quorum fails once more
// destinations failed than it can spare), failures after the quorum was met, the stall limit, and
// the policy's own checks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DurabilityPolicy, StallLimitError, parsePolicy, type PolicyEvents } from '../../src/destinations/policy.js';
import { FakeDestination, fakeCall } from '../helpers/fakeDestination.js';

interface Heard {
  stalls: string[];
  recovered: number[];
  background: string[];
}

function events(): PolicyEvents & { heard: Heard } {
  const heard: Heard = { stalls: [], recovered: [], background: [] };
  return {
    heard,
    onStall: (_ms, d) => void heard.stalls.push(d),
    onRecovered: (ms) => void heard.recovered.push(ms),
    onBackgroundFailure: (name, m) => void heard.background.push(`${name}: ${m}`),
  };
}

/** Settles to 'held', 'failed: <message>' or 'waiting' (still pending after the microtasks ran). */
async function stateOf(p: Promise<void>): Promise<string> {
  let state = 'waiting';
  p.then(
    () => (state = 'held'),
    (err: Error) => (state = `failed: ${err.constructor.name}: ${err.message}`),
  );
  for (let i = 0; i < 10; i++) await Promise.resolve();
  return state;
}

/** Keeps the event loop alive while a test waits for the policy's (unref'd) stall check. */
function awake(): () => void {
  const t = setInterval(() => undefined, 50);
  return () => clearInterval(t);
}

function policyOf(
  spec: string,
  n: number,
  stallLimitMs: number | null = null,
): { policy: DurabilityPolicy; d: FakeDestination[]; ev: ReturnType<typeof events> } {
  const d = Array.from({ length: n }, (_, i) => new FakeDestination(`server${i + 1}`));
  const ev = events();
  return { policy: new DurabilityPolicy(d, parsePolicy(spec), stallLimitMs, ev), d, ev };
}

test('policy all: held only once every destination holds the call', async () => {
  const { policy, d } = policyOf('all', 3);
  try {
    const { held } = policy.store(fakeCall(2, 2n));
    d[0].confirmNext();
    d[1].confirmNext();
    assert.equal(await stateOf(held), 'waiting', 'two of three is not all');
    assert.ok(policy.stalledForMs() !== null, 'a call waits');
    d[2].confirmNext();
    assert.equal(await stateOf(held), 'held');
    assert.equal(policy.stalledForMs(), null, 'nothing waits any more');
  } finally {
    policy.close();
  }
});

test('policy quorum=2 of 3: held at the second confirmation, whichever two; `everywhere` waits for the third', async () => {
  const { policy, d } = policyOf('quorum=2', 3);
  try {
    const { held, everywhere } = policy.store(fakeCall(2, 2n));
    d[2].confirmNext();
    assert.equal(await stateOf(held), 'waiting');
    d[0].confirmNext();
    assert.equal(await stateOf(held), 'held');
    assert.equal(await stateOf(everywhere), 'waiting', 'server2 still holds it back');
    d[1].confirmNext();
    assert.equal(await stateOf(everywhere), 'held');
  } finally {
    policy.close();
  }
});

test('failure rule: quorum=2 of 3 survives one failure and fails at the second, naming why', async () => {
  const { policy, d, ev } = policyOf('quorum=2', 3);
  try {
    const first = policy.store(fakeCall(2, 2n));
    d[0].failNext('disk full');
    d[1].confirmNext();
    assert.equal(await stateOf(first.held), 'waiting', 'one failure is within what quorum=2 of 3 can spare');
    d[2].confirmNext();
    assert.equal(await stateOf(first.held), 'held');
    assert.equal(
      await stateOf(first.everywhere),
      'failed: DestinationFailedError: server1: disk full',
      '`everywhere` tells that not every destination holds it',
    );

    const second = policy.store(fakeCall(3, 3n));
    d[0].failNext('disk full');
    d[1].failNext('key refused');
    assert.equal(await stateOf(second.held), 'failed: PolicyFailedError: policy quorum=2 can no longer be met: server2: key refused');
    assert.deepEqual(ev.heard.background, [], "failures before the quorum was met are the call's, not background ones");
  } finally {
    policy.close();
  }
});

test('failure rule: policy all fails at the first failure; a failure after the quorum was met is a background failure', async () => {
  const all = policyOf('all', 2);
  try {
    const { held } = all.policy.store(fakeCall(2, 2n));
    all.d[1].failNext('refused');
    assert.equal(await stateOf(held), 'failed: PolicyFailedError: policy all can no longer be met: server2: refused');
  } finally {
    all.policy.close();
  }
  const q = policyOf('quorum=1', 2);
  try {
    const { held } = q.policy.store(fakeCall(2, 2n));
    q.d[0].confirmNext();
    assert.equal(await stateOf(held), 'held');
    q.d[1].failNext('went away');
    await stateOf(held);
    assert.deepEqual(q.ev.heard.background, ['server2: server2: went away']);
  } finally {
    q.policy.close();
  }
});

test('stall limit: a call waiting past it is rejected with StallLimitError naming the lagging destination', async () => {
  const { policy, d } = policyOf('all', 2, 300);
  const sleep = awake();
  try {
    d[1].state = 'stalled';
    const started = performance.now();
    const { held } = policy.store(fakeCall(7, 7n), started);
    d[0].confirmNext();
    await assert.rejects(
      held,
      (err: unknown) =>
        err instanceof StallLimitError && /version 7 has waited \d+\.\d s for server2 \(stalled\), past the stall limit of 0 s/.test(err.message),
    );
    const waited = performance.now() - started;
    assert.ok(waited >= 300 && waited < 2000, `rejected after ${waited.toFixed(0)} ms`);
  } finally {
    sleep();
    policy.close();
  }
});

test('stall limit: counted from when lightningd sent the call, not from store()', async () => {
  const { policy } = policyOf('all', 1, 200);
  const sleep = awake();
  try {
    const { held } = policy.store(fakeCall(3, 3n), performance.now() - 10_000);
    const t = performance.now();
    await assert.rejects(held, StallLimitError);
    assert.ok(performance.now() - t < 1000, 'a call that already waited 10 s is past a 200 ms limit at the next check');
  } finally {
    sleep();
    policy.close();
  }
});

test('policy: too few destinations or none at all are refused at once; unknown policies are named', () => {
  assert.throws(
    () => new DurabilityPolicy([new FakeDestination('a')], parsePolicy('quorum=2'), null, events()),
    /policy quorum=2 needs 2 destinations, but only 1 are configured/,
  );
  assert.throws(() => new DurabilityPolicy([], parsePolicy('all'), null, events()), /no destination/);
  assert.throws(() => parsePolicy('quorum=0'), /unknown durability policy 'quorum=0'/);
  assert.throws(() => parsePolicy('most'), /use 'all' or 'quorum=K'/);
});

test('a lone local vault is held exactly when it holds the call (no stall bookkeeping)', async () => {
  const vault = new FakeDestination('local vault', 'vault');
  const policy = new DurabilityPolicy([vault], parsePolicy('all'), 100, events());
  try {
    const { held } = policy.store(fakeCall(2, 2n));
    assert.equal(policy.stalledForMs(), null, 'nothing is tracked for a lone vault');
    vault.confirmNext();
    assert.equal(await stateOf(held), 'held');
  } finally {
    policy.close();
  }
});
