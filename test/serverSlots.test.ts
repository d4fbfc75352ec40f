// Connection slots under attack, over real TCP against an in-process BackupServer: the per-address
// limit is on by default, a share of the slots is kept for allowed keys (handshakes in progress
// cannot take them), handshakes that did not complete in time are dropped first when the slots
// run out, and a refused client is told that the server is full (not that the key is wrong), by
// the transport and by the node's ServerClient.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { ServerClient } from '../src/destinations/serverClient.js';
import { parseRemoteUrl } from '../src/destinations/remoteUrl.js';
import { DEFAULT_MAX_CONNECTIONS_PER_IP, HANDSHAKE_GRACE_MS } from '../src/server/server.js';
import { SecureConnection, ServerFullError } from '../src/transport/connection.js';
import { generatePrivateKey } from '../src/transport/keys.js';
import { privateKeyFromSeed, publicKeyOf } from '../src/transport/keys.js';
import { tempDir } from './helpers/paths.js';
import { RawClient } from './helpers/rawClient.js';
import { startServer } from './helpers/remoteFixture.js';
import { sleep, until } from './helpers/waiting.js';

const tmp = tempDir('server-slots');
let made = 0;
const fresh = (): string => {
  const dir = path.join(tmp, `data-${++made}`);
  fs.mkdirSync(dir);
  return dir;
};

/** `n` TCP connections that never start the handshake. */
async function idleSockets(port: number, n: number): Promise<net.Socket[]> {
  const out: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((resolve) => s.once('connect', resolve));
    out.push(s);
  }
  return out;
}

function connect(url: string, key: Buffer): Promise<SecureConnection> {
  const a = parseRemoteUrl(url);
  return SecureConnection.connect(a.host, a.port, key, a.publicKey);
}

test('the per-address limit is on by default: the next connection is told the server is full for this address', async () => {
  const server = await startServer(fresh(), { scrubIntervalMs: 0 });
  const idle = await idleSockets(server.port, DEFAULT_MAX_CONNECTIONS_PER_IP);
  try {
    await until('the server counted them', async () => (await server.status()).connections === DEFAULT_MAX_CONNECTIONS_PER_IP);
    await assert.rejects(connect(server.url, generatePrivateKey()), (e: unknown) => {
      assert.ok(e instanceof ServerFullError, String(e));
      assert.match(e.message, /is full \(it has as many connections from this address as it takes\)/);
      assert.doesNotMatch(e.message, /pinned key/);
      return true;
    });
  } finally {
    for (const s of idle) s.destroy();
    await server.stop();
  }
});

test('a share of the slots is kept for allowed keys; stale handshakes are dropped first; refused nodes are told the server is full', async () => {
  const seed = crypto.randomBytes(32);
  const goodKey = privateKeyFromSeed(seed);
  const server = await startServer(fresh(), { scrubIntervalMs: 0, allow: [publicKeyOf(goodKey).toString('hex')], maxConnections: 8, maxConnectionsPerIp: 100 });
  const sockets: net.Socket[] = [];
  const clients: RawClient[] = [];
  try {
    // 6 handshakes in progress take every slot strangers may have (2 of 8 are kept for allowed keys).
    sockets.push(...(await idleSockets(server.port, 6)));
    await until('the server counted them', async () => (await server.status()).handshaking === 6);
    await assert.rejects(
      connect(server.url, generatePrivateKey()),
      (e: unknown) => e instanceof ServerFullError && /every connection slot is taken/.test(e.message),
    );
    // The node's client says the same, not "the key does not match".
    await assert.rejects(
      ServerClient.connect(server.url, seed),
      (e: unknown) => e instanceof Error && /is full/.test(e.message) && !/pinned key/.test(e.message),
    );
    // Once they had their time, handshakes that did not complete make room for new ones.
    await sleep(HANDSHAKE_GRACE_MS + 200);
    clients.push(await RawClient.ready(server.url, goodKey));
    clients.push(await RawClient.ready(server.url, goodKey));
    const st = await server.status();
    assert.ok(st.handshaking <= 5, `${st.handshaking} stale handshakes left`);
    // The allowed clients now hold the kept slots: 6 fresh handshakes fill the rest.
    for (const s of sockets.splice(0)) s.destroy();
    await until('the old handshakes are gone', async () => (await server.status()).handshaking === 0);
    sockets.push(...(await idleSockets(server.port, 6)));
    await until('the server counted them', async () => (await server.status()).handshaking === 6);
    await assert.rejects(connect(server.url, generatePrivateKey()), ServerFullError);
    for (const c of clients) await c.ping();
  } finally {
    for (const c of clients) c.close();
    for (const s of sockets) s.destroy();
    await server.stop();
  }
});
