// Unit tests of the server destination's decisions that need no server (src/destinations/
// remoteLeveling.ts, remoteProblems.ts): whether a server's copy is a prefix of the node's chain
// (behind or level), has diverged, or cannot be compared; and what the reconnect loop does after
// each way a session can end (refusals wait the refusal delay and stop a waiting start, busy
// servers halve the window, everything else backs off).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCode, MessageType } from '../../src/protocol/messages.js';
import { disagreement } from '../../src/destinations/remoteLeveling.js';
import { sessionEnd } from '../../src/destinations/remoteProblems.js';
import { ProtocolError, ServerError, type VaultState } from '../../src/destinations/serverClient.js';

const hashOf = (seq: bigint): Buffer => Buffer.alloc(32, Number(seq % 251n));

function state(lastSeq: bigint, lastHash = hashOf(lastSeq)): VaultState {
  return {
    type: MessageType.VaultState,
    requestId: 1,
    vaultId: Buffer.alloc(16),
    firstSeq: lastSeq === 0n ? 0n : 1n,
    lastSeq,
    lastHash,
    lastGeneration: 1,
    bytes: 0n,
    identity: Buffer.alloc(0),
  };
}

test("leveling: an empty copy, or one whose last record is the node's, is a prefix (resume after it)", () => {
  const local = (seq: bigint): Buffer => hashOf(seq);
  assert.equal(disagreement('srv', '/v', state(0n), local), null);
  assert.equal(disagreement('srv', '/v', state(41n), local), null);
});

test('leveling: a different last record has diverged; a record the vault no longer holds, or cannot read, cannot be compared', () => {
  assert.match(
    disagreement('srv', '/v', state(41n, Buffer.alloc(32, 0xee)), hashOf) ?? '',
    /srv holds a different record 41 than this node \(its hash differs\): the server's copy diverged/,
  );
  assert.match(disagreement('srv', '/v', state(41n), () => null) ?? '', /the local vault at \/v no longer holds record 41 to compare it with/);
  const unreadable = (): Buffer => {
    throw new Error('EIO');
  };
  assert.equal(disagreement('srv', '/v', state(41n), unreadable), "cannot compare srv's copy with the local vault: EIO");
});

test('session end: refusals wait the refusal delay and stop a waiting start; a bad message waits but keeps the start; the rest backs off', () => {
  const every = 'retrying every 5 s';
  const err = (code: ErrorCode, seq = 0n): ServerError => new ServerError(code, seq, `server says ${ErrorCode[code]}`);
  const quota = sessionEnd('srv', err(ErrorCode.QuotaExceeded), every);
  assert.deepEqual([quota.kind, quota.level, quota.wait, quota.endsStart], ['quota', 'unusual', 'refused', true]);
  assert.match(quota.message, /Records wait on the node until there is room \(retrying every 5 s\)/);
  for (const code of [ErrorCode.NotAllowed, ErrorCode.IdentityMismatch, ErrorCode.UnknownVault, ErrorCode.UnsupportedVersion]) {
    const e = sessionEnd('srv', err(code), every);
    assert.deepEqual([e.kind, e.level, e.wait, e.endsStart], ['refused', 'broken', 'refused', true], ErrorCode[code]);
  }
  const bad = sessionEnd('srv', err(ErrorCode.BadMessage), every);
  assert.deepEqual([bad.kind, bad.wait, bad.endsStart], ['bad-message', 'refused', false]);
  assert.deepEqual([sessionEnd('srv', err(ErrorCode.OutOfOrder), every).kind, sessionEnd('srv', err(ErrorCode.OutOfOrder), every).wait], ['resync', 'backoff']);
  assert.equal(sessionEnd('srv', err(ErrorCode.TooBusy, 0n), every).halveWindow, false, 'busy before any append: the window is not to blame');
  assert.equal(sessionEnd('srv', err(ErrorCode.TooBusy, 7n), every).halveWindow, true);
  const closed = sessionEnd('srv', null, every);
  assert.deepEqual([closed.kind, closed.message, closed.wait, closed.endsStart], ['connection', 'srv closed the connection; reconnecting', 'backoff', false]);
  assert.equal(sessionEnd('srv', new ProtocolError('srv sent garbage'), every).message, 'srv sent garbage; reconnecting');
  assert.equal(sessionEnd('srv', new Error('ECONNREFUSED'), every).message, 'srv: ECONNREFUSED; reconnecting');
});
