// The backup server as strangers would meet it: a real `lnbackup server` child process on
// 127.0.0.1, real BOLT #8 connections, real sealed records. Tenants are isolated (another client's
// vault looks exactly like a missing one), the allow-list and quotas hold, out-of-order appends
// are refused, hostile connections (garbage, slow-loris, oversized frames) do not stop a
// well-behaved client, and no acknowledged record is lost over SIGTERM or kill -9.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { until } from './helpers/waiting.js';
import { ErrorCode, MessageType, NO_HASH, type Message } from '../src/protocol/messages.js';
import { generatePrivateKey, publicKeyOf } from '../src/transport/keys.js';
import { parseRemoteUrl, formatRemoteUrl } from '../src/destinations/remoteUrl.js';
import { BackupServer } from '../src/server/server.js';
import { openStore } from '../src/server/storage/openStore.js';
import { StorageUnavailableError } from '../src/server/storage/store.js';
import { tempDir } from './helpers/paths.js';
import { storeOverride } from './helpers/storeOverride.js';
import { RawClient, testVault, type ErrorMessage, type TestVault } from './helpers/rawClient.js';
import { startServer, type ServerHandle } from './helpers/serverProcess.js';
import { runCli } from './helpers/vaultFixture.js';

const tmp = tempDir('server-safety');

function asError(m: Message, what: string): ErrorMessage {
  assert.equal(m.type, MessageType.Error, `${what}: expected an Error, got ${MessageType[m.type]}`);
  return m as ErrorMessage;
}

function codeName(e: ErrorMessage): string {
  return ErrorCode[e.code] ?? String(e.code);
}

/** The answer with the vault id taken out, to compare answers about two different vault ids. */
function shape(e: ErrorMessage, vaultId: Buffer): string {
  return JSON.stringify({
    code: codeName(e),
    requestIdSet: e.requestId !== 0,
    seq: String(e.seq),
    message: e.message.replaceAll(vaultId.toString('hex'), '<vault>'),
  });
}

/** Opens (creating) the vault and appends `n` records, each acknowledged. */
async function fill(c: RawClient, v: TestVault, n: number, payloadBytes = 200): Promise<void> {
  const st = await c.openVault(v.vaultId, v.identity);
  assert.equal(st.type, MessageType.VaultState, st.type === MessageType.Error ? st.message : '');
  for (let i = 0; i < n; i++) {
    const r = v.next(payloadBytes);
    const a = await c.append(v.vaultId, r);
    assert.equal(a.type, MessageType.Ack, a.type === MessageType.Error ? `seq ${r.seq}: ${a.message}` : '');
  }
}

/** `p`, or a failure naming `what` after `ms` (the timer does not outlive the promise). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Streams appends like a node catching up: up to `window` outstanding (the server allows 1024), a new
 * one sent for every answer, until `limit` were sent or the connection closes. Collects every Ack
 * and Error until the connection closes.
 */
function stream(
  c: RawClient,
  v: TestVault,
  window: number,
  limit: number,
  payloadBytes = 1000,
): { acked: bigint[]; errors: ErrorMessage[]; sent: () => number; done: Promise<void> } {
  const acked: bigint[] = [];
  const errors: ErrorMessage[] = [];
  let sent = 0;
  const sendOne = (): void => {
    if (c.isClosed || sent >= limit) return;
    try {
      c.appendNoWait(v.vaultId, v.next(payloadBytes));
      sent++;
    } catch {
      // the connection is closing
    }
  };
  const take = (): void => {
    for (const m of c.inbox.splice(0)) {
      if (m.type === MessageType.Ack) acked.push(m.seq);
      else if (m.type === MessageType.Error) errors.push(m);
      else continue;
      sendOne();
    }
  };
  const timer = setInterval(take, 2);
  for (let i = 0; i < window; i++) sendOne();
  const done = c.closed.then(() => {
    clearInterval(timer);
    take();
  });
  return { acked, errors, sent: () => sent, done };
}

/** After a restart: the vault holds every acknowledged record, byte for byte, in order. */
async function assertAllAckedStored(srv: ServerHandle, v: TestVault, acked: bigint[]): Promise<bigint> {
  const c = await RawClient.ready(srv.url, v.transportKey);
  try {
    const st = await c.openVault(v.vaultId);
    assert.equal(st.type, MessageType.VaultState, st.type === MessageType.Error ? st.message : '');
    if (st.type !== MessageType.VaultState) throw new Error('unreachable');
    const maxAcked = acked.reduce((m, s) => (s > m ? s : m), 0n);
    assert.ok(st.lastSeq >= maxAcked, `the vault ends at ${st.lastSeq}, but ${maxAcked} was acknowledged`);
    const records = await c.readAll(v.vaultId);
    assert.equal(BigInt(records.length), st.lastSeq);
    records.forEach((r, i) => {
      assert.equal(r.seq, BigInt(i + 1));
      assert.ok(r.bytes.equals(v.sealed[i].bytes), `record ${r.seq} differs from what was sent`);
    });
    // Acks came in order, from 1, without gaps.
    acked.forEach((s, i) => assert.equal(s, BigInt(i + 1)));
    return st.lastSeq;
  } finally {
    c.close();
  }
}

/** A client of `v` with its vault open: created with its identity, or only opened. */
async function clientWithVault(url: string, v: TestVault, create: boolean): Promise<RawClient> {
  const c = await RawClient.ready(url, v.transportKey);
  assert.equal((await (create ? c.openVault(v.vaultId, v.identity) : c.openVault(v.vaultId))).type, MessageType.VaultState);
  return c;
}

test('remote URLs: format and parse, with clear errors', () => {
  const key = publicKeyOf(generatePrivateKey());
  const pub = parseRemoteUrl(formatRemoteUrl(key, '::1', 9736));
  assert.equal(pub.host, '::1');
  assert.equal(pub.port, 9736);
  assert.ok(pub.publicKey.equals(key));
  assert.equal(pub.url, `lnbackup://${key.toString('hex')}@[::1]:9736`);
  assert.equal(parseRemoteUrl(`lnbackup://${key.toString('hex').toUpperCase()}@example.org:1/`).url, `lnbackup://${key.toString('hex')}@example.org:1`);
  assert.throws(() => parseRemoteUrl(`lnbackup://${key.toString('hex')}@example.org`), /lnbackup:\/\/<server public key>@<host>:<port> expected, got/);
  assert.throws(() => parseRemoteUrl('http://example.org:80'), /expected, got "http:\/\/example.org:80"/);
  assert.throws(() => parseRemoteUrl(`lnbackup://${'ab'.repeat(33)}@h:1`), /public key/);
});

test("two clients on one server cannot see or touch each other's vaults", async () => {
  const srv = await startServer();
  const a = testVault(tmp, 'iso-a');
  const b = testVault(tmp, 'iso-b');
  const ca = await RawClient.ready(srv.url, a.transportKey);
  const cb = await RawClient.ready(srv.url, b.transportKey);
  try {
    const first = await ca.openVault(a.vaultId, a.identity);
    assert.equal(first.type, MessageType.VaultState);
    if (first.type === MessageType.VaultState) {
      assert.equal(first.lastSeq, 0n);
      assert.ok(first.lastHash.equals(NO_HASH));
      assert.ok(first.identity.equals(a.identity));
    }
    for (let i = 0; i < 3; i++) assert.equal((await ca.append(a.vaultId, a.next())).type, MessageType.Ack);

    const ghost = crypto.randomBytes(16);
    // OpenVault: B on A's vault, with no identity and with A's own identity, answers as for a vault that does not exist.
    const ghostOpen = asError(await cb.openVault(ghost), 'open missing');
    assert.equal(ghostOpen.code, ErrorCode.UnknownVault);
    const foreignOpen = asError(await cb.openVault(a.vaultId), 'open foreign');
    assert.equal(shape(foreignOpen, a.vaultId), shape(ghostOpen, ghost));
    // Append and ReadRecords: refused the same way for A's vault and for a missing one.
    const r4 = a.next();
    const foreignAppend = asError(await cb.append(a.vaultId, r4), 'append foreign');
    const ghostAppend = asError(await cb.append(ghost, r4), 'append missing');
    assert.equal(shape(foreignAppend, a.vaultId), shape(ghostAppend, ghost));
    const foreignRead = asError(await cb.read(a.vaultId), 'read foreign');
    const ghostRead = asError(await cb.read(ghost), 'read missing');
    assert.equal(shape(foreignRead, a.vaultId), shape(ghostRead, ghost));
    assert.equal(foreignRead.code, ErrorCode.UnknownVault);

    // ListVaults: each sees only its own.
    const emptyList = await cb.list();
    assert.equal(emptyList.type, MessageType.VaultList);
    if (emptyList.type === MessageType.VaultList) assert.equal(emptyList.vaults.length, 0);
    await fill(cb, b, 2);
    const la = await ca.list();
    const lb = await cb.list();
    assert.ok(la.type === MessageType.VaultList && lb.type === MessageType.VaultList);
    assert.deepEqual(
      la.vaults.map((v) => v.vaultId.toString('hex')),
      [a.vaultId.toString('hex')],
    );
    assert.equal(la.vaults[0].lastSeq, 3n);
    assert.deepEqual(
      lb.vaults.map((v) => v.vaultId.toString('hex')),
      [b.vaultId.toString('hex')],
    );

    // A's vault is untouched: the record B tried to append is A's next one and is still accepted.
    assert.equal((await ca.append(a.vaultId, r4)).type, MessageType.Ack);
    const records = await ca.readAll(a.vaultId);
    assert.deepEqual(
      records.map((r) => r.seq),
      [1n, 2n, 3n, 4n],
    );
    records.forEach((r, i) => assert.ok(r.bytes.equals(a.sealed[i].bytes)));

    // Vault ids are scoped by owner: B creating A's id (even with A's identity) makes a vault of
    // B's own, empty, and A's is untouched.
    const own = await cb.openVault(a.vaultId, a.identity);
    assert.ok(own.type === MessageType.VaultState && own.lastSeq === 0n, 'B holds its own, empty vault of that id');
    const lb2 = await cb.list();
    assert.ok(
      lb2.type === MessageType.VaultList && lb2.vaults.length === 2 && lb2.vaults.every((v) => v.vaultId.equals(a.vaultId) || v.vaultId.equals(b.vaultId)),
    );
    assert.deepEqual(
      (await ca.readAll(a.vaultId)).map((r) => r.seq),
      [1n, 2n, 3n, 4n],
    );

    // A's identity with B's vault id, and a JSON that is not a VAULT.json: BadMessage, then closed.
    const bad = await RawClient.ready(srv.url, b.transportKey);
    const wrongId = asError(await bad.openVault(crypto.randomBytes(16), a.identity), 'identity of another vault id');
    assert.equal(wrongId.code, ErrorCode.BadMessage);
    await bad.closed;
  } finally {
    ca.close();
    cb.close();
    assert.equal(await srv.stop(), 0);
  }
});

test('allow-list: an unknown key is refused with a clear message, a listed key is admitted; an empty list is announced', async () => {
  const a = testVault(tmp, 'allow-a');
  const b = testVault(tmp, 'allow-b');
  const aKey = a.clientPublicKey.toString('hex');
  const bKey = b.clientPublicKey.toString('hex');
  const srv = await startServer({ open: false, args: ['--allow', aKey] });
  try {
    const cb = await RawClient.connect(srv.url, b.transportKey);
    const refused = asError(await cb.hello(), 'hello of an unlisted key');
    assert.equal(refused.code, ErrorCode.NotAllowed);
    assert.ok(refused.message.includes(bKey), refused.message);
    assert.match(refused.message, /--allow/);
    await cb.closed;

    const ca = await RawClient.ready(srv.url, a.transportKey);
    await fill(ca, a, 2);
    ca.close();
    await until('the refusal in the log', () => srv.stderr().includes('not on the allow-list'));
  } finally {
    assert.equal(await srv.stop(), 0);
  }

  const nobody = await startServer({ open: false });
  try {
    await until('the empty allow-list warning', () => /allow-list is empty/.test(nobody.stderr()));
    const c = await RawClient.connect(nobody.url, a.transportKey);
    assert.equal(asError(await c.hello(), 'hello on an empty allow-list').code, ErrorCode.NotAllowed);
  } finally {
    assert.equal(await nobody.stop(), 0);
  }
});

test('over quota: QuotaExceeded, nothing stored; the vault count is limited too, also after a restart', async () => {
  const a = testVault(tmp, 'quota-a');
  let srv = await startServer({ args: ['--quota', '3KiB', '--max-vaults', '1'] });
  try {
    const c = await clientWithVault(srv.url, a, true);
    let refused: ErrorMessage | null = null;
    const acked: bigint[] = [];
    for (let i = 0; i < 50 && !refused; i++) {
      const r = a.next(400);
      const ans = await c.append(a.vaultId, r);
      if (ans.type === MessageType.Ack) acked.push(ans.seq);
      else refused = ans;
    }
    assert.ok(refused, 'the quota was never reached');
    assert.equal(refused.code, ErrorCode.QuotaExceeded, refused.message);
    const refusedSeq = BigInt(acked.length + 1);
    assert.equal(refused.seq, refusedSeq);
    assert.match(refused.message, /quota/);
    assert.ok(acked.length >= 3 && acked.length <= 8, `${acked.length} records of ~500 bytes fit in 3 KiB`);
    // Nothing of the refused record is stored; sending it again is refused again.
    const st = await c.openVault(a.vaultId);
    assert.ok(st.type === MessageType.VaultState && st.lastSeq === BigInt(acked.length));
    assert.equal((await c.readAll(a.vaultId)).length, acked.length);
    assert.equal(asError(await c.append(a.vaultId, a.sealed[acked.length]), 'again').code, ErrorCode.QuotaExceeded);
    // A second vault is over --max-vaults 1.
    const second = testVault(tmp, 'quota-a2');
    const more = asError(await c.openVault(second.vaultId, second.identity), 'second vault');
    assert.equal(more.code, ErrorCode.QuotaExceeded);
    assert.match(more.message, /1/);
    c.close();
    assert.equal(await srv.stop(), 0);

    srv = await srv.restart();
    const c2 = await clientWithVault(srv.url, a, false);
    assert.equal(asError(await c2.append(a.vaultId, a.sealed[acked.length]), 'after restart').code, ErrorCode.QuotaExceeded);
    c2.close();
  } finally {
    await srv.stop();
  }
});

test("out-of-order and replayed appends are refused with the server's last seq, nothing stored; a lying header is BadMessage", async () => {
  const a = testVault(tmp, 'order-a');
  const srv = await startServer();
  try {
    const c = await RawClient.ready(srv.url, a.transportKey);
    await fill(c, a, 1);
    const r2 = a.next();
    const r3 = a.next();
    const skip = asError(await c.append(a.vaultId, r3), 'skip');
    assert.equal(skip.code, ErrorCode.OutOfOrder);
    assert.equal(skip.seq, 1n);
    assert.deepEqual(
      (await c.readAll(a.vaultId)).map((r) => r.seq),
      [1n],
    );
    assert.equal((await c.append(a.vaultId, r2)).type, MessageType.Ack);
    const replay = asError(await c.append(a.vaultId, r2), 'replay');
    assert.equal(replay.code, ErrorCode.OutOfOrder);
    assert.equal(replay.seq, 2n);
    assert.equal((await c.append(a.vaultId, r3)).type, MessageType.Ack);
    assert.deepEqual(
      (await c.readAll(a.vaultId)).map((r) => r.seq),
      [1n, 2n, 3n],
    );

    // Pipelined: every Append gets one answer, in Append order, refusals included.
    const batch = [a.next(), a.next(), a.next()];
    for (const r of batch) c.appendNoWait(a.vaultId, r);
    c.appendNoWait(a.vaultId, batch[0]);
    const answers: string[] = [];
    for (let i = 0; i < 4; i++) {
      const m = await c.waitFor((x) => x.type === MessageType.Ack || x.type === MessageType.Error, 30_000, 'an answer');
      answers.push(m.type === MessageType.Ack ? `ack ${m.seq}` : `${codeName(m as ErrorMessage)} ${(m as ErrorMessage).seq}`);
    }
    assert.deepEqual(answers, ['ack 4', 'ack 5', 'ack 6', 'OutOfOrder 6']);

    // The Append's seq and the record header's must agree.
    const r7 = a.next();
    c.appendNoWait(a.vaultId, { ...r7, seq: 8n });
    const lie = await c.nextError();
    assert.equal(lie.code, ErrorCode.BadMessage);
    assert.match(lie.message, /header says seq 7/);
    await c.closed;
    const c2 = await clientWithVault(srv.url, a, false);
    assert.equal((await c2.append(a.vaultId, r7)).type, MessageType.Ack);
    c2.close();
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('garbage, 50 slow-loris connections and an oversized frame: the server keeps serving a well-behaved client', async () => {
  const srv = await startServer({ args: ['--handshake-timeout', '3'] });
  const good = testVault(tmp, 'hostile-good');
  const sockets: net.Socket[] = [];
  try {
    const c = await RawClient.ready(srv.url, good.transportKey);
    await fill(c, good, 2);

    // 50 connections that start the handshake and never finish it.
    const slowClosed: Promise<void>[] = [];
    for (let i = 0; i < 50; i++) {
      const s = net.connect(srv.port, '127.0.0.1');
      s.on('error', () => {});
      s.once('connect', () => s.write(Buffer.alloc(10)));
      slowClosed.push(new Promise((resolve) => s.once('close', () => resolve())));
      sockets.push(s);
    }
    // Raw garbage instead of a handshake.
    for (let i = 0; i < 5; i++) {
      const s = net.connect(srv.port, '127.0.0.1');
      s.on('error', () => {});
      s.once('connect', () => s.write(crypto.randomBytes(4096)));
      sockets.push(s);
    }
    // A real handshake, then garbage as a message; then a message before Hello.
    const junk = await RawClient.connect(srv.url, generatePrivateKey());
    junk.sendRaw(crypto.randomBytes(300));
    assert.equal(asError(await junk.waitFor(() => true), 'garbage message').code, ErrorCode.BadMessage);
    await junk.closed;
    const early = await RawClient.connect(srv.url, generatePrivateKey());
    early.send({ type: MessageType.ListVaults, requestId: 1 });
    const earlyErr = asError(await early.waitFor(() => true), 'message before Hello');
    assert.equal(earlyErr.code, ErrorCode.BadMessage);
    assert.match(earlyErr.message, /first message must be Hello/);
    await early.closed;
    // A frame larger than the server's 16 MiB message limit: the connection is cut.
    const big = await RawClient.ready(srv.url, generatePrivateKey(), { maxMessageBytes: 64 * 1024 * 1024 });
    big.sendRaw(Buffer.alloc(16 * 1024 * 1024 + 1024, 5));
    await big.closed;

    // Meanwhile the well-behaved client's appends are all acknowledged (generous bound only).
    const started = Date.now();
    for (let i = 0; i < 20; i++) {
      const r = good.next();
      const ans = await c.append(good.vaultId, r);
      assert.equal(ans.type, MessageType.Ack, ans.type === MessageType.Error ? ans.message : '');
    }
    const ms = Date.now() - started;
    assert.ok(ms < 30_000, `20 appends took ${ms} ms`);
    const fresh = await RawClient.ready(srv.url, testVault(tmp, 'hostile-fresh').transportKey);
    await fill(fresh, testVault(tmp, 'hostile-fresh2'), 1);
    fresh.close();
    // The slow-loris connections are cut by the handshake timeout (eventually; no timing asserted).
    await within(Promise.all(slowClosed), 60_000, 'the closing of the slow-loris connections');
    assert.equal(srv.child.exitCode, null, 'the server is still running');
    assert.deepEqual(
      (await c.readAll(good.vaultId)).map((r) => r.seq),
      good.sealed.map((r) => r.seq),
    );
    c.close();
  } finally {
    for (const s of sockets) s.destroy();
    assert.equal(await srv.stop(), 0);
  }
});

test('SIGTERM with appends in flight: the server answers what it received, exits 0, and every acked record is there after restart', async () => {
  const a = testVault(tmp, 'sigterm-a');
  let srv = await startServer();
  try {
    const c = await clientWithVault(srv.url, a, true);
    // The client keeps streaming while the server stops: what arrived before the signal is
    // answered, what comes after is not, and the stream does not keep the server from stopping.
    const p = stream(c, a, 500, 100_000);
    await until('200 acks', () => p.acked.length >= 200, 30_000);
    assert.equal(await srv.stop(), 0);
    await p.done;
    assert.ok(p.acked.length > 0);
    for (const e of p.errors) assert.equal(e.code, ErrorCode.TooBusy, e.message);
    const keyHex = fs.readFileSync(path.join(srv.dataDir, 'server.key')).toString('hex');
    assert.ok(!srv.stderr().includes(keyHex), 'the server key is in the log');
    const stopped = runCli(['server', 'status', '--data', srv.dataDir, '--json']);
    assert.equal(stopped.code, 3, stopped.stderr);
    assert.equal((JSON.parse(stopped.stdout) as { running: boolean }).running, false);
    srv = await srv.restart();
    const last = await assertAllAckedStored(srv, a, p.acked);
    process.stdout.write(`# SIGTERM: ${p.sent()} appends sent, ${p.acked.length} acked, ${last} records stored\n`);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('server status --json shows the clients, their vaults and connections', async () => {
  const a = testVault(tmp, 'status-a');
  const srv = await startServer();
  try {
    const c = await RawClient.ready(srv.url, a.transportKey);
    await fill(c, a, 3);
    const key = a.clientPublicKey.toString('hex');
    type Status = {
      ok: boolean;
      running: boolean;
      url: string;
      connections: number;
      clients: { publicKey: string; connected: boolean; records: number; vaults: { vaultId: string; lastSeq: string; bytes: number }[] }[];
    };
    const status = await until('the status to show the vault', () => {
      const r = runCli(['server', 'status', '--data', srv.dataDir, '--json']);
      if (r.code !== 0) return null;
      const s = JSON.parse(r.stdout) as Status;
      const client = s.clients.find((x) => x.publicKey === key);
      return client?.vaults[0]?.lastSeq === '3' && client.records === 3 ? s : null;
    });
    assert.equal(status.running, true);
    assert.equal(status.url, srv.url);
    assert.ok(status.connections >= 1);
    const client = status.clients.find((x) => x.publicKey === key)!;
    assert.equal(client.connected, true);
    assert.equal(client.vaults[0].vaultId, a.vaultId.toString('hex'));
    assert.equal(
      client.vaults[0].bytes,
      a.sealed.reduce((n, r) => n + r.bytes.length, 0),
    );
    const human = runCli(['server', 'status', '--data', srv.dataDir]);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /running/);
    assert.ok(human.stdout.includes(a.vaultId.toString('hex')));
    c.close();
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});

test('kill -9 of the server, then restart: every acked record is present', async () => {
  const a = testVault(tmp, 'kill9-a');
  let srv = await startServer();
  try {
    const c = await clientWithVault(srv.url, a, true);
    const p = stream(c, a, 500, 100_000);
    await until('200 acks', () => p.acked.length >= 200, 30_000);
    srv.kill9();
    await p.done;
    assert.equal(await srv.exited, null);
    const status = runCli(['server', 'status', '--data', srv.dataDir]);
    assert.equal(status.code, 3);
    assert.match(status.stdout, /NOT RUNNING/);
    srv = await srv.restart();
    const last = await assertAllAckedStored(srv, a, p.acked);
    process.stdout.write(`# kill -9: ${p.sent()} appends sent, ${p.acked.length} acked before the kill, ${last} records stored\n`);
    // The vault goes on from where it ends.
    const c2 = await clientWithVault(srv.url, a, false);
    c2.close();
  } finally {
    await srv.stop();
  }
});

test('storage failure: StorageUnavailable for the failed append and every later pending one, none acked; the vault resumes once reopened', async () => {
  const dataDir = path.join(tmp, 'failing');
  const real = await openStore({ dataDir });
  let failing = false;
  const store = storeOverride(real, {
    append: (id, records) => (failing ? Promise.reject(new StorageUnavailableError('disk full (simulated)')) : real.append(id, records)),
  });
  const srv = await BackupServer.start({ dataDir, host: '127.0.0.1', port: 0, allow: 'open', store });
  const a = testVault(tmp, 'failing-a');
  try {
    const c = await RawClient.ready(srv.url, a.transportKey);
    await fill(c, a, 3);
    failing = true;
    const batch = [a.next(), a.next(), a.next()];
    for (const r of batch) c.appendNoWait(a.vaultId, r);
    const answers: ErrorMessage[] = [];
    for (let i = 0; i < 3; i++) answers.push(asError(await c.waitFor((m) => m.type === MessageType.Ack || m.type === MessageType.Error), `answer ${i}`));
    assert.deepEqual(
      answers.map((e) => [codeName(e), e.seq]),
      [
        ['StorageUnavailable', 4n],
        ['StorageUnavailable', 5n],
        ['StorageUnavailable', 6n],
      ],
    );
    assert.match(answers[0].message, /disk full \(simulated\)/);
    failing = false;
    // Still refused until the vault is reopened, even though the storage is back.
    assert.equal(asError(await c.append(a.vaultId, batch[0]), 'before reopening').code, ErrorCode.StorageUnavailable);
    const st = await c.openVault(a.vaultId);
    assert.ok(st.type === MessageType.VaultState && st.lastSeq === 3n);
    for (const r of batch) assert.equal((await c.append(a.vaultId, r)).type, MessageType.Ack);
    assert.deepEqual(
      (await c.readAll(a.vaultId)).map((r) => r.seq),
      [1n, 2n, 3n, 4n, 5n, 6n],
    );
    c.close();
  } finally {
    await srv.stop();
  }
});

test('server command line: usage errors are clear', () => {
  const dir = path.join(tmp, 'cli');
  const open = runCli(['server', '--data', dir, '--open', '--allow', '02' + '11'.repeat(32), '--listen', '127.0.0.1:0']);
  assert.equal(open.code, 2);
  assert.match(open.stderr, /--open admits every key/);
  const listen = runCli(['server', '--data', dir, '--listen', 'nowhere']);
  assert.equal(listen.code, 2);
  assert.match(listen.stderr, /--listen takes <host>:<port>/);
  const pg = runCli(['server', '--data', dir, '--storage', 'postgres://user:hunter2@/']);
  assert.equal(pg.code, 2);
  assert.match(pg.stderr, /PostgreSQL URL/);
  assert.ok(!pg.stderr.includes('hunter2'));
  const none = runCli(['server', 'status', '--data', path.join(dir, 'nothing')]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no lnbackup server has run/);
  const help = runCli(['server', '--help']);
  for (const o of ['--data', '--listen', '--storage', '--open', '--allow', '--quota', '--max-vaults', '--json']) assert.ok(help.stdout.includes(o), o);
});

test('a port in use and a data folder in use are reported clearly', async () => {
  const srv = await startServer();
  try {
    const busy = runCli(['server', '--data', path.join(tmp, 'busy'), '--open', '--listen', `127.0.0.1:${srv.port}`]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /already in use.*--listen/);
    const locked = runCli(['server', '--data', srv.dataDir, '--open', '--listen', '127.0.0.1:0']);
    assert.equal(locked.code, 1);
    assert.match(locked.stderr, /locked|in use/);
  } finally {
    assert.equal(await srv.stop(), 0);
  }
});
