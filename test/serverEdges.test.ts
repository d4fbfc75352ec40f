// Edge cases a client can send that the server must refuse, over a real in-process BackupServer
// and real TCP: an empty page pack (it would be stored with no parity, and scrub would "repair"
// it on every run), the all-zero vault id (the "no vault" value of errors), and a first record
// so high in sequence that the vault could never take the next one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ErrorCode, MAX_FIRST_SEQ, MessageType, NO_VAULT } from '../src/protocol/messages.js';
import { checkNewVault, checkPack } from '../src/server/storage/groupCommit.js';
import { encodeHeader } from '../src/vault/format.js';
import { tempDir } from './helpers/paths.js';
import { RawClient, TestVault, type ErrorMessage } from './helpers/rawClient.js';
import { startServer } from './helpers/remoteFixture.js';

const tmp = tempDir('server-edges');

/** A record whose header says `seq` (the server checks only the header, never the sealed body). */
function recordAt(seq: bigint): { seq: bigint; generation: number; bytes: Buffer } {
  const body = crypto.randomBytes(200);
  return { seq, generation: 1, bytes: Buffer.concat([encodeHeader(body.length, seq, crypto.randomBytes(24)), body]) };
}

async function refusedAndClosed(c: RawClient, what: string): Promise<ErrorMessage> {
  const e = await c.nextError();
  assert.equal(e.code, ErrorCode.BadMessage, `${what}: ${e.message}`);
  await c.closed;
  return e;
}

test('an empty pack, the zero vault id and a first seq with no room after it are refused; the vault is untouched', async () => {
  const dataDir = path.join(tmp, 'data');
  fs.mkdirSync(dataDir);
  const server = await startServer(dataDir, { scrubIntervalMs: 0 });
  const v = new TestVault(path.join(tmp, 'node'));
  try {
    let c = await RawClient.ready(server.url, v.transportKey);
    assert.equal((await c.openVault(v.vaultId, v.identity)).type, MessageType.VaultState);
    c.send({
      type: MessageType.PutPack,
      requestId: 5,
      vaultId: v.vaultId,
      name: `p-${'ab'.repeat(16)}.pack`,
      totalBytes: 0,
      offset: 0,
      bytes: Buffer.alloc(0),
    });
    assert.match((await refusedAndClosed(c, 'empty pack')).message, /pack size 0/);

    c = await RawClient.ready(server.url, v.transportKey);
    const zeroIdentity = Buffer.from(JSON.stringify({ format: 'lnbackup-vault', vaultId: NO_VAULT.toString('hex') }));
    c.send({ type: MessageType.OpenVault, requestId: 6, vaultId: NO_VAULT, identity: zeroIdentity });
    assert.match((await refusedAndClosed(c, 'zero vault id')).message, /all-zero vault id/);

    c = await RawClient.ready(server.url, v.transportKey);
    assert.equal((await c.openVault(v.vaultId)).type, MessageType.VaultState);
    c.appendNoWait(v.vaultId, recordAt(2n ** 64n - 1n));
    assert.match((await refusedAndClosed(c, 'seq 2^64-1')).message, /first record has a seq from 1 to/);

    // The highest first seq allowed is taken, and so is the next one.
    c = await RawClient.ready(server.url, v.transportKey);
    assert.equal((await c.openVault(v.vaultId)).type, MessageType.VaultState);
    assert.equal((await c.append(v.vaultId, recordAt(MAX_FIRST_SEQ))).type, MessageType.Ack);
    assert.equal((await c.append(v.vaultId, recordAt(MAX_FIRST_SEQ + 1n))).type, MessageType.Ack);
    const st = await c.openVault(v.vaultId);
    assert.ok(st.type === MessageType.VaultState && st.firstSeq === MAX_FIRST_SEQ && st.lastSeq === MAX_FIRST_SEQ + 1n);
    const list = await c.list();
    assert.ok(list.type === MessageType.VaultList && list.vaults.length === 1, 'no zero vault was created');
    c.close();
  } finally {
    await server.stop();
  }
});

test('the stores refuse an empty pack and the zero vault id themselves', () => {
  assert.throws(() => checkPack(`p-${'cd'.repeat(16)}.pack`, 0), /empty/);
  assert.throws(() => checkNewVault('02' + 'ab'.repeat(32), '0'.repeat(32), Buffer.from('{}')), /all-zero vault id/);
});
