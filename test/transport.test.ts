// Checks src/transport: BOLT #8 Appendix A's vectors (initiator, responder, every failure case,
// message encryption with key rotation) on handshake.ts and cipher.ts, then SecureConnection over
// real TCP on 127.0.0.1: sizes, order, pinned keys, garbage, size bounds, timeouts and closing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { once } from 'node:events';
import { CipherState } from '../src/transport/cipher.js';
import { HandshakeError, Initiator, Responder } from '../src/transport/handshake.js';
import { generatePrivateKey, parsePublicKeyHex, privateKeyFromSeed, publicKeyOf } from '../src/transport/keys.js';
import { type ConnectionOptions, SecureConnection, TransportError } from '../src/transport/connection.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/^0x/, ''), 'hex');

// Appendix A's keys and messages.
const INITIATOR_STATIC = hex('1111111111111111111111111111111111111111111111111111111111111111');
const INITIATOR_STATIC_PUB = hex('034f355bdcb7cc0af728ef3cceb9615d90684bb5b2ca5f859ab0f0b704075871aa');
const INITIATOR_EPHEMERAL = hex('1212121212121212121212121212121212121212121212121212121212121212');
const RESPONDER_STATIC = hex('2121212121212121212121212121212121212121212121212121212121212121');
const RESPONDER_STATIC_PUB = hex('028d7500dd4c12685d1f568b4c2b5048e8534b873319f3a8daa612b469132ec7f7');
const RESPONDER_EPHEMERAL = hex('2222222222222222222222222222222222222222222222222222222222222222');
const ACT_ONE = hex('00036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df6086551151f58b8afe6c195782c6a');
const ACT_TWO = hex('0002466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b93aac583c9ef6eafca3f730ae');
const ACT_THREE = hex('00b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55a8fc28fef5bd6d71ad0c38228dc68b1c466263b47fdf31e560e139ba');
const CK = hex('919219dbb2920afa8db80f9a51787a840bcf111ed8d588caf9ab4be716e42b01');
const SK = hex('969ab31b4d288cedf6218839b27a3e2140827047f2c0f01bf5c04435d43511a9');
const RK = hex('bb9020b8965f4df047e07f955f3c4b88418984aadc5cdb35096b9ea8fa5c3442');

const vectorInitiator = (): Initiator => new Initiator(INITIATOR_STATIC, RESPONDER_STATIC_PUB, INITIATOR_EPHEMERAL);
const vectorResponder = (): Responder => new Responder(RESPONDER_STATIC, RESPONDER_EPHEMERAL);

test('keys: the vector keys, seeds, and the parsing of pinned keys', () => {
  assert.deepEqual(publicKeyOf(INITIATOR_STATIC), INITIATOR_STATIC_PUB);
  assert.deepEqual(publicKeyOf(RESPONDER_STATIC), RESPONDER_STATIC_PUB);
  const seed = crypto.randomBytes(32);
  assert.deepEqual(privateKeyFromSeed(seed), privateKeyFromSeed(seed));
  assert.notDeepEqual(privateKeyFromSeed(seed), privateKeyFromSeed(crypto.randomBytes(32)));
  assert.equal(publicKeyOf(privateKeyFromSeed(seed)).length, 33);
  assert.throws(() => privateKeyFromSeed(Buffer.alloc(31)), /32 bytes/);
  assert.equal(generatePrivateKey().length, 32);
  assert.notDeepEqual(generatePrivateKey(), generatePrivateKey());
  assert.deepEqual(parsePublicKeyHex(RESPONDER_STATIC_PUB.toString('hex').toUpperCase()), RESPONDER_STATIC_PUB);
  assert.throws(() => parsePublicKeyHex('02abcd'), /66 hex digits/);
  assert.throws(() => parsePublicKeyHex(`${'zz'}${'00'.repeat(32)}`), /66 hex digits/);
  assert.throws(() => parsePublicKeyHex(`04${INITIATOR_STATIC_PUB.subarray(1).toString('hex')}`), /not a valid secp256k1 public key/);
  assert.throws(() => parsePublicKeyHex(`02${'ff'.repeat(32)}`), /not a valid secp256k1 public key/);
});

test('BOLT #8 initiator: successful handshake', () => {
  const initiator = vectorInitiator();
  assert.deepEqual(initiator.actOne(), ACT_ONE);
  const { actThree, keys } = initiator.actTwo(ACT_TWO);
  assert.deepEqual(actThree, ACT_THREE);
  assert.deepEqual(keys.sendKey, SK);
  assert.deepEqual(keys.receiveKey, RK);
  assert.deepEqual(keys.chainingKey, CK);
  assert.deepEqual(keys.remotePublicKey, RESPONDER_STATIC_PUB);
});

for (const [name, actTwo, error] of [
  ['act2 short read', ACT_TWO.subarray(0, 49), /act two: expected 50 bytes, got 49/],
  [
    'act2 bad version',
    hex('0102466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b93aac583c9ef6eafca3f730ae'),
    /act two: unknown handshake version 1/,
  ],
  [
    'act2 bad key serialization',
    hex('0004466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b93aac583c9ef6eafca3f730ae'),
    /act two: the ephemeral key is not a valid public key/,
  ],
  ['act2 bad MAC', hex('0002466d7fcae563e5cb09a0d1870bb580344804617879a14949cf22285f1bae3f276e2470b93aac583c9ef6eafca3f730af'), /act two: bad MAC/],
] as const) {
  test(`BOLT #8 initiator: ${name}`, () => {
    const initiator = vectorInitiator();
    assert.deepEqual(initiator.actOne(), ACT_ONE);
    assert.throws(
      () => initiator.actTwo(actTwo),
      (e: unknown) => e instanceof HandshakeError && error.test(e.message),
    );
  });
}

test('BOLT #8 responder: successful handshake', () => {
  const responder = vectorResponder();
  assert.deepEqual(responder.actOne(ACT_ONE), ACT_TWO);
  const keys = responder.actThree(ACT_THREE);
  assert.deepEqual(keys.receiveKey, SK);
  assert.deepEqual(keys.sendKey, RK);
  assert.deepEqual(keys.chainingKey, CK);
  assert.deepEqual(keys.remotePublicKey, INITIATOR_STATIC_PUB);
});

for (const [name, actOne, error] of [
  ['act1 short read', ACT_ONE.subarray(0, 49), /act one: expected 50 bytes, got 49/],
  [
    'act1 bad version',
    hex('01036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df6086551151f58b8afe6c195782c6a'),
    /act one: unknown handshake version 1/,
  ],
  [
    'act1 bad key serialization',
    hex('00046360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df6086551151f58b8afe6c195782c6a'),
    /act one: the ephemeral key is not a valid public key/,
  ],
  ['act1 bad MAC', hex('00036360e856310ce5d294e8be33fc807077dc56ac80d95d9cd4ddbd21325eff73f70df6086551151f58b8afe6c195782c6b'), /act one: bad MAC/],
] as const) {
  test(`BOLT #8 responder: ${name}`, () => {
    assert.throws(
      () => vectorResponder().actOne(actOne),
      (e: unknown) => e instanceof HandshakeError && error.test(e.message),
    );
  });
}

for (const [name, actThree, error] of [
  [
    'act3 bad version',
    hex('01b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55a8fc28fef5bd6d71ad0c38228dc68b1c466263b47fdf31e560e139ba'),
    /act three: unknown handshake version 1/,
  ],
  ['act3 short read', ACT_THREE.subarray(0, 65), /act three: expected 66 bytes, got 65/],
  [
    'act3 bad MAC for ciphertext',
    hex('00c9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55a8fc28fef5bd6d71ad0c38228dc68b1c466263b47fdf31e560e139ba'),
    /act three: bad MAC on the initiator's key/,
  ],
  [
    'act3 bad rs',
    hex('00bfe3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa2235536ad09a8ee351870c2bb7f78b754a26c6cef79a98d25139c856d7efd252c2ae73c'),
    /act three: the initiator's key is not a valid public key/,
  ],
  [
    'act3 bad MAC',
    hex('00b9e3a702e93e3a9948c2ed6e5fd7590a6e1c3a0344cfc9d5b57357049aa22355361aa02e55a8fc28fef5bd6d71ad0c38228dc68b1c466263b47fdf31e560e139bb'),
    /act three: bad MAC$/,
  ],
] as const) {
  test(`BOLT #8 responder: ${name}`, () => {
    const responder = vectorResponder();
    assert.deepEqual(responder.actOne(ACT_ONE), ACT_TWO);
    assert.throws(
      () => responder.actThree(actThree),
      (e: unknown) => e instanceof HandshakeError && error.test(e.message),
    );
  });
}

test('BOLT #8 message encryption: "hello" 1002 times, key rotation at nonce 1000', () => {
  const expected = new Map([
    [0, 'cf2b30ddf0cf3f80e7c35a6e6730b59fe802473180f396d88a8fb0db8cbcf25d2f214cf9ea1d95'],
    [1, '72887022101f0b6753e0c7de21657d35a4cb2a1f5cde2650528bbc8f837d0f0d7ad833b1a256a1'],
    [500, '178cb9d7387190fa34db9c2d50027d21793c9bc2d40b1e14dcf30ebeeeb220f48364f7a4c68bf8'],
    [501, '1b186c57d44eb6de4c057c49940d79bb838a145cb528d6e8fd26dbe50a60ca2c104b56b60e45bd'],
    [1000, '4a2f3cc3b5e78ddb83dcb426d9863d9d9a723b0337c89dd0b005d89f8d3c05c52b76b29b740f09'],
    [1001, '2ecd8c8a5629d0d02ab457a0fdd0f7b90a192cd46be5ecb6ca570bfc5e268338b1a16cf4ef2d36'],
  ]);
  const hello = Buffer.from('hello');
  const sender = new CipherState(SK, CK);
  const receiver = new CipherState(SK, CK);
  for (let i = 0; i < 1002; i++) {
    const frame = sender.encryptFrame(hello);
    const want = expected.get(i);
    if (want !== undefined) assert.equal(frame.toString('hex'), want, `output ${i}`);
    assert.equal(receiver.openLength(frame.subarray(0, 18)), 5);
    assert.deepEqual(receiver.openBody(frame.subarray(18)), hello);
  }
  const tampered = sender.encryptFrame(hello);
  tampered[20] ^= 1;
  assert.equal(receiver.openLength(tampered.subarray(0, 18)), 5);
  assert.equal(receiver.openBody(tampered.subarray(18)), null);
});

// --- over TCP -------------------------------------------------------------------------------

const serverKey = generatePrivateKey();
const clientKey = generatePrivateKey();

interface Pair {
  readonly client: SecureConnection;
  readonly server: SecureConnection;
  /** The server's raw socket, to inject bytes or read counters. */
  readonly serverSocket: net.Socket;
  readonly dispose: () => void;
}

async function listen(onSocket: (socket: net.Socket) => void): Promise<{ server: net.Server; port: number }> {
  const server = net.createServer(onSocket);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port };
}

async function pair(serverOptions: ConnectionOptions = {}, clientOptions: ConnectionOptions = {}): Promise<Pair> {
  let serverSocket: net.Socket | undefined;
  let accepted: Promise<SecureConnection> | undefined;
  const { server, port } = await listen((socket) => {
    serverSocket = socket;
    accepted = SecureConnection.accept(socket, serverKey, serverOptions);
  });
  const client = await SecureConnection.connect('127.0.0.1', port, clientKey, publicKeyOf(serverKey), clientOptions);
  while (accepted === undefined) await new Promise((r) => setImmediate(r));
  const serverConnection = await accepted;
  return {
    client,
    server: serverConnection,
    serverSocket: serverSocket as net.Socket,
    dispose: () => {
      client.destroy();
      serverConnection.destroy();
      server.close();
    },
  };
}

/** The same promise, marked handled so that a rejection before the test awaits it is not reported. */
function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {});
  return promise;
}

function closed(connection: SecureConnection): Promise<Error | null> {
  return new Promise((resolve) => connection.onClose(resolve));
}

/** Resolves with the next `count` messages. */
function receive(connection: SecureConnection, count: number): Promise<Buffer[]> {
  return new Promise((resolve, reject) => {
    const messages: Buffer[] = [];
    connection.onClose((error) => reject(error ?? new Error('closed')));
    connection.onMessage((message) => {
      messages.push(message);
      if (messages.length === count) resolve(messages);
    });
  });
}

test('TCP: both sides learn the right remote key', async () => {
  const p = await pair();
  try {
    assert.deepEqual(p.client.remotePublicKey, publicKeyOf(serverKey));
    assert.deepEqual(p.server.remotePublicKey, publicKeyOf(clientKey));
  } finally {
    p.dispose();
  }
});

test('TCP: round trip of messages of 0, 1, 65534, 65535, 200000 bytes and 5 MiB', async () => {
  const p = await pair();
  try {
    p.server.onMessage((message) => p.server.send(message));
    const sizes = [0, 1, 65534, 65535, 65536, 2 * 65534, 200_000, 5 * 1024 * 1024];
    const sent = sizes.map((n) => crypto.randomBytes(n));
    const echoed = receive(p.client, sizes.length);
    for (const message of sent) p.client.send(message);
    const back = await echoed;
    for (let i = 0; i < sizes.length; i++) assert.ok(back[i].equals(sent[i]), `message of ${sizes[i]} bytes`);
  } finally {
    p.dispose();
  }
});

test('TCP: 2000 small messages arrive in order, both ways', async () => {
  const p = await pair();
  try {
    const count = 2000;
    const atServer = receive(p.server, count);
    const atClient = receive(p.client, count);
    for (let i = 0; i < count; i++) {
      p.client.send(Buffer.from(`c${i}`));
      p.server.send(Buffer.from(`s${i}`));
    }
    assert.deepEqual(
      (await atServer).map(String),
      Array.from({ length: count }, (_, i) => `c${i}`),
    );
    assert.deepEqual(
      (await atClient).map(String),
      Array.from({ length: count }, (_, i) => `s${i}`),
    );
  } finally {
    p.dispose();
  }
});

test('TCP: messages sent right after the handshake wait for the handler', async () => {
  const p = await pair();
  try {
    p.client.send(Buffer.from('early'));
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual((await receive(p.server, 1)).map(String), ['early']);
  } finally {
    p.dispose();
  }
});

test('TCP: a wrong pinned server key fails on both sides, with a clear message', async () => {
  let accepted: Promise<SecureConnection> | undefined;
  const { server, port } = await listen((socket) => (accepted = handled(SecureConnection.accept(socket, serverKey))));
  try {
    await assert.rejects(
      SecureConnection.connect('127.0.0.1', port, clientKey, publicKeyOf(generatePrivateKey())),
      (e: unknown) => e instanceof TransportError && /the server's key does not match the pinned key/.test(e.message),
    );
    assert.ok(accepted);
    await assert.rejects(accepted, (e: unknown) => e instanceof TransportError && /act one: bad MAC/.test(e.message));
  } finally {
    server.close();
  }
});

test('TCP: connection refused is a TransportError', async () => {
  const { server, port } = await listen(() => {});
  server.close();
  await once(server, 'close');
  await assert.rejects(
    SecureConnection.connect('127.0.0.1', port, clientKey, publicKeyOf(serverKey)),
    (e: unknown) => e instanceof TransportError && /cannot connect to 127\.0\.0\.1:\d+/.test(e.message),
  );
});

test('TCP: garbage during the handshake fails accept', async () => {
  let accepted: Promise<SecureConnection> | undefined;
  const { server, port } = await listen((socket) => (accepted = handled(SecureConnection.accept(socket, serverKey))));
  try {
    const raw = net.connect(port, '127.0.0.1');
    raw.on('error', () => {});
    raw.write(crypto.randomBytes(200));
    while (accepted === undefined) await new Promise((r) => setImmediate(r));
    await assert.rejects(accepted, (e: unknown) => e instanceof TransportError && /handshake failed: act one/.test(e.message));
    raw.destroy();
  } finally {
    server.close();
  }
});

test('TCP: garbage after the handshake destroys the connection with a TransportError', async () => {
  const p = await pair();
  try {
    const ended = closed(p.client);
    p.client.onMessage(() => assert.fail('no message expected'));
    p.serverSocket.write(crypto.randomBytes(100));
    const error = await ended;
    assert.ok(error instanceof TransportError);
    assert.match(error.message, /bad MAC on a frame length/);
    assert.throws(() => p.client.send(Buffer.from('x')), TransportError);
  } finally {
    p.dispose();
  }
});

test('TCP: a message over maxMessageBytes is cut before it is fully buffered', async () => {
  const p = await pair({ maxMessageBytes: 100_000 }, { maxMessageBytes: 16 * 1024 * 1024 });
  try {
    const big = crypto.randomBytes(8 * 1024 * 1024);
    let bytesReadAtError = -1;
    const ended = new Promise<Error | null>((resolve) =>
      p.server.onClose((error) => {
        bytesReadAtError = p.serverSocket.bytesRead;
        resolve(error);
      }),
    );
    p.server.onMessage(() => assert.fail('no message expected'));
    p.client.onClose(() => {});
    p.client.send(big);
    const error = await ended;
    assert.ok(error instanceof TransportError);
    assert.match(error.message, /more than the 100000 bytes allowed/);
    assert.ok(bytesReadAtError < big.length / 2, `read ${bytesReadAtError} bytes before cutting`);
    assert.throws(() => p.server.send(Buffer.alloc(200_000)), TransportError);
  } finally {
    p.dispose();
  }
});

test('TCP: a client that sends nothing is cut after handshakeTimeoutMs', async () => {
  let accepted: Promise<SecureConnection> | undefined;
  const { server, port } = await listen((socket) => (accepted = handled(SecureConnection.accept(socket, serverKey, { handshakeTimeoutMs: 300 }))));
  try {
    const raw = net.connect(port, '127.0.0.1');
    raw.on('error', () => {});
    const rawClosed = once(raw, 'close');
    while (accepted === undefined) await new Promise((r) => setImmediate(r));
    const started = Date.now();
    await assert.rejects(accepted, (e: unknown) => e instanceof TransportError && /did not complete within 300 ms/.test(e.message));
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 200 && elapsed < 5000, `rejected after ${elapsed} ms`);
    await rawClosed;
  } finally {
    server.close();
  }
});

test('TCP: a clean close calls onClose once with null on both sides, after queued messages', async () => {
  const p = await pair();
  try {
    const calls: Array<[string, Error | null]> = [];
    p.client.onClose((error) => calls.push(['client', error]));
    const serverClosed = new Promise<void>((resolve) =>
      p.server.onClose((error) => {
        calls.push(['server', error]);
        resolve();
      }),
    );
    const got: string[] = [];
    p.server.onMessage((message) => got.push(String(message)));
    for (const text of ['a', 'b', 'c']) p.client.send(Buffer.from(text));
    p.client.close();
    assert.throws(() => p.client.send(Buffer.from('late')), /closed/);
    await serverClosed;
    assert.deepEqual(got, ['a', 'b', 'c']);
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(calls.sort(), [
      ['client', null],
      ['server', null],
    ]);
    const late = await closed(p.client);
    assert.equal(late, null);
  } finally {
    p.dispose();
  }
});
