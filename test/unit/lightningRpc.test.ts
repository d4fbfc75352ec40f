// Unit tests of src/cln/rpc/client.ts against a real unix socket server standing in for lightningd's
// RPC: calls are matched to replies by id (whatever order and chunking), errors carry lightningd's
// code and message, garbage and a closed socket fail the waiting calls with a clear error.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { JsonObjectSplitter } from '../../src/util/jsonFraming.js';
import { LightningRpc, LightningRpcError, LightningRpcTransportError, rpcSocketPath } from '../../src/cln/rpc/client.js';
import { parseInitParams } from '../../src/cln/pluginProtocol.js';

interface Request {
  readonly id: string;
  readonly method: string;
  readonly params: Record<string, unknown>;
}

/** A unix socket server that hands each request to `answer` (which writes what it likes). */
async function fakeLightningd(answer: (req: Request, socket: net.Socket) => void): Promise<{ path: string; close: () => Promise<void> }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lnbackup-rpc-'));
  const socketPath = path.join(dir, 'lightning-rpc');
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    const splitter = new JsonObjectSplitter();
    socket.on('data', (chunk: Buffer) => {
      for (const text of splitter.push(chunk)) answer(JSON.parse(text) as Request, socket);
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    path: socketPath,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const reply = (socket: net.Socket, value: object): void => void socket.write(JSON.stringify({ jsonrpc: '2.0', ...value }) + '\n\n');

test('rpc: the socket path comes from init (lightning-dir is the network directory, rpc-file is in it)', () => {
  const init = parseInitParams({ options: {}, configuration: { 'lightning-dir': '/n/regtest', 'rpc-file': 'lightning-rpc', network: 'regtest' } });
  assert.equal(rpcSocketPath(init), '/n/regtest/lightning-rpc');
  assert.throws(() => rpcSocketPath(parseInitParams({ configuration: {} })), /did not name lightningd's RPC socket/);
});

test('rpc: replies are matched by id, out of order and split across reads; a large reply arrives whole', async () => {
  const held: Request[] = [];
  const big = 'x'.repeat(300_000);
  const srv = await fakeLightningd((req, socket) => {
    held.push(req);
    if (held.length < 3) return;
    // Answer the three in reverse order, one byte-split write at a time.
    for (const r of [...held].reverse()) {
      const text = JSON.stringify({ jsonrpc: '2.0', id: r.id, result: { method: r.method, echo: r.params, big: r.method === 'listpeers' ? big : '' } });
      const cut = Math.floor(text.length / 2);
      socket.write(text.slice(0, cut));
      socket.write(text.slice(cut) + '\n\n');
    }
  });
  const rpc = await LightningRpc.connect(srv.path);
  try {
    const [a, b, c] = await Promise.all([
      rpc.call<{ method: string; echo: unknown }>('getinfo'),
      rpc.call<{ method: string; big: string }>('listpeers', { id: 'abc' }),
      rpc.call<{ method: string; echo: unknown }>('listconfigs', { config: 'network' }),
    ]);
    assert.equal(a.method, 'getinfo');
    assert.equal(b.method, 'listpeers');
    assert.equal(b.big.length, big.length);
    assert.deepEqual(c.echo, { config: 'network' });
    assert.equal(new Set(held.map((r) => r.id)).size, 3, 'each call has its own id');
  } finally {
    rpc.close();
    await srv.close();
  }
});

test("rpc: a JSON-RPC error carries lightningd's code and message", async () => {
  const srv = await fakeLightningd((req, socket) => reply(socket, { id: req.id, error: { code: -32601, message: 'Unknown command' } }));
  const rpc = await LightningRpc.connect(srv.path);
  try {
    await assert.rejects(
      rpc.call('nosuch'),
      (err: unknown) => err instanceof LightningRpcError && err.code === -32601 && /nosuch failed \(code -32601\): Unknown command/.test(err.message),
    );
  } finally {
    rpc.close();
    await srv.close();
  }
});

test('rpc: garbage on the socket, or the socket closing, fails the waiting calls with a clear error; nobody listening is said so', async () => {
  const garbage = await fakeLightningd((_req, socket) => void socket.write('not json at all'));
  const rpc = await LightningRpc.connect(garbage.path);
  await assert.rejects(rpc.call('getinfo'), (err: unknown) => err instanceof LightningRpcTransportError && /unreadable stream/.test(err.message));
  await assert.rejects(rpc.call('getinfo'), LightningRpcTransportError, 'a broken client stays broken');
  rpc.close();
  await garbage.close();

  const closing = await fakeLightningd((_req, socket) => socket.destroy());
  const rpc2 = await LightningRpc.connect(closing.path);
  await assert.rejects(rpc2.call('getinfo'), /RPC socket .* closed/);
  rpc2.close();
  await closing.close();

  await assert.rejects(LightningRpc.connect(closing.path), /cannot reach lightningd's RPC at .*is lightningd running\?/);
});

test('rpc: a call that gets no reply times out', async () => {
  const silent = await fakeLightningd(() => undefined);
  const rpc = await LightningRpc.connect(silent.path);
  try {
    await assert.rejects(rpc.call('waitblockheight', {}, 100), /did not answer waitblockheight within 100 ms/);
  } finally {
    rpc.close();
    await silent.close();
  }
});
