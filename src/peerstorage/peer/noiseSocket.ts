// A plain BOLT #8 connection, as Lightning nodes speak it: the Noise_XK handshake
// (src/transport/handshake.ts) under a timeout, then one message per encrypted frame (BOLT #8
// "Lightning Message Specification": encrypted 2-byte length + MAC, encrypted body + MAC, each
// direction's key rotated every 1000 nonces by src/transport/cipher.ts's CipherState). No
// fragment layer: a message is at most 65535 bytes, as BOLT #1 says. Received messages wait in a
// bounded queue for receive(), which always has a timeout; when the queue is full the socket is
// paused (TCP back-pressure), so a fast sender costs at most the queue and one read. Any bad MAC
// or a frame too short for a message type ends the connection with an error that says so.
import net from 'node:net';
import { CipherState, FRAME_HEADER_BYTES, MAC_BYTES, MAX_FRAME_PLAINTEXT } from '../../transport/cipher.js';
import { ACT_ONE_BYTES, ACT_THREE_BYTES, ACT_TWO_BYTES, Initiator, Responder, type SessionKeys } from '../../transport/handshake.js';

export class PeerConnectionError extends Error {}
/** A wait for a message ran out (the connection itself is still open). */
export class PeerTimeoutError extends PeerConnectionError {}

export interface NoiseSocketOptions {
  /** The whole handshake, from the TCP connect on (default 10 s). */
  readonly handshakeTimeoutMs?: number;
  /** Messages received and not yet taken before the socket is paused (default 64). */
  readonly maxQueuedMessages?: number;
}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_QUEUED = 64;

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Reads exactly the acts of one side of the handshake from a socket, then hands back the keys and any extra bytes. */
function runHandshake(
  socket: net.Socket,
  timeoutMs: number,
  acts: readonly { bytes: number; handle: (act: Buffer) => { reply?: Buffer; keys?: SessionKeys } }[],
  lost: (detail: string) => string,
): Promise<{ keys: SessionKeys; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let received = Buffer.alloc(0);
    let next = 0;
    const detach = (): void => {
      clearTimeout(timer);
      socket.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
    };
    const fail = (message: string): void => {
      detach();
      socket.destroy();
      reject(new PeerConnectionError(message));
    };
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      while (next < acts.length && received.length >= acts[next].bytes) {
        const act = acts[next++];
        let result: { reply?: Buffer; keys?: SessionKeys };
        try {
          result = act.handle(received.subarray(0, act.bytes));
        } catch (error) {
          fail(`BOLT #8 handshake failed: ${messageOf(error)}`);
          return;
        }
        received = received.subarray(act.bytes);
        if (result.reply) socket.write(result.reply);
        if (result.keys) {
          detach();
          resolve({ keys: result.keys, rest: received });
          return;
        }
      }
      // Nothing legitimate is longer than the act being waited for.
      if (next < acts.length && received.length > acts[next].bytes) fail(lost('it sent more than the handshake act'));
    };
    const onEnd = (): void => fail(lost('end of stream'));
    const onError = (error: Error): void => fail(lost(error.message));
    const onClose = (): void => fail(lost('closed'));
    const timer = setTimeout(() => fail(`the BOLT #8 handshake did not complete within ${timeoutMs} ms`), timeoutMs);
    socket.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
  });
}

export class NoiseSocket {
  readonly remotePublicKey: Buffer;
  private readonly sender: CipherState;
  private readonly receiver: CipherState;
  private readonly maxQueued: number;
  private buffered: Buffer;
  /** Body bytes (ciphertext + MAC) of the frame being read; 0 while waiting for a header. */
  private bodyBytes = 0;
  private readonly queue: Buffer[] = [];
  private waiter: { resolve: (m: Buffer) => void; reject: (e: Error) => void; timer: NodeJS.Timeout } | null = null;
  /** Why the connection is over (null while it is open). */
  private ended: PeerConnectionError | null = null;
  readonly closed: Promise<void>;

  private constructor(
    private readonly socket: net.Socket,
    keys: SessionKeys,
    rest: Buffer,
    options: NoiseSocketOptions,
    private readonly who: string,
  ) {
    this.remotePublicKey = keys.remotePublicKey;
    this.sender = new CipherState(keys.sendKey, keys.chainingKey);
    this.receiver = new CipherState(keys.receiveKey, keys.chainingKey);
    this.maxQueued = options.maxQueuedMessages ?? DEFAULT_MAX_QUEUED;
    this.buffered = rest;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => {
      this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
      this.pump();
    });
    socket.on('end', () =>
      this.end(this.buffered.length > 0 || this.bodyBytes > 0 ? `${who} closed the connection in the middle of a frame` : `${who} closed the connection`),
    );
    socket.on('error', (error) => this.end(`connection to ${who} lost: ${error.message}`));
    socket.on('close', () => this.end(`connection to ${who} closed`));
    this.pump();
  }

  /** Connects to host:port as the initiator; the peer must hold the key `remotePublicKey`. */
  static async connect(host: string, port: number, localKey: Buffer, remotePublicKey: Buffer, options: NoiseSocketOptions = {}): Promise<NoiseSocket> {
    const who = `${remotePublicKey.toString('hex')}@${host}:${port}`;
    const initiator = new Initiator(localKey, remotePublicKey);
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    let connected = false;
    socket.once('connect', () => (connected = true));
    socket.write(initiator.actOne());
    const { keys, rest } = await runHandshake(
      socket,
      options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      [
        {
          bytes: ACT_TWO_BYTES,
          handle: (act) => {
            const { actThree, keys: k } = initiator.actTwo(act);
            return { reply: actThree, keys: k };
          },
        },
      ],
      (detail) =>
        connected ? `${who} closed the connection during the BOLT #8 handshake (${detail}): is that its node id?` : `cannot connect to ${who}: ${detail}`,
    );
    return new NoiseSocket(socket, keys, rest, options, who);
  }

  /** Runs the responder's side on an accepted socket. */
  static async accept(socket: net.Socket, localKey: Buffer, options: NoiseSocketOptions = {}): Promise<NoiseSocket> {
    socket.setNoDelay(true);
    const responder = new Responder(localKey);
    const who = `${socket.remoteAddress}:${socket.remotePort}`;
    const { keys, rest } = await runHandshake(
      socket,
      options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS,
      [
        { bytes: ACT_ONE_BYTES, handle: (act) => ({ reply: responder.actOne(act) }) },
        { bytes: ACT_THREE_BYTES, handle: (act) => ({ keys: responder.actThree(act) }) },
      ],
      (detail) => `${who} closed the connection during the BOLT #8 handshake (${detail})`,
    );
    return new NoiseSocket(socket, keys, rest, options, `${keys.remotePublicKey.toString('hex')}@${who}`);
  }

  /** Sends one message (one frame, at most 65535 bytes). */
  send(message: Buffer): void {
    if (this.ended) throw this.ended;
    if (message.length > MAX_FRAME_PLAINTEXT) throw new RangeError(`a BOLT #8 message is at most ${MAX_FRAME_PLAINTEXT} bytes, got ${message.length}`);
    this.socket.write(this.sender.encryptFrame(message));
  }

  /** The next message; rejects after `timeoutMs`, or when the connection ends first. */
  receive(timeoutMs: number, what: string): Promise<Buffer> {
    const queued = this.queue.shift();
    if (queued) {
      if (this.queue.length < this.maxQueued && this.socket.isPaused()) {
        this.socket.resume();
        this.pump();
      }
      return Promise.resolve(queued);
    }
    if (this.ended) return Promise.reject(this.ended);
    if (this.waiter) return Promise.reject(new Error('receive() is already waiting'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        reject(new PeerTimeoutError(`${this.who} sent no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = { resolve, reject, timer };
    });
  }

  /** Ends our side after what is queued was sent; resolves when the socket is closed (at most `timeoutMs`). */
  async close(timeoutMs = 2000): Promise<void> {
    this.end(`connection to ${this.who} closed by us`);
    this.socket.end();
    const timer = setTimeout(() => this.socket.destroy(), timeoutMs);
    await this.closed;
    clearTimeout(timer);
  }

  private fail(message: string): void {
    this.end(message);
    this.socket.destroy();
  }

  private end(reason: string): void {
    if (this.ended) return;
    this.ended = new PeerConnectionError(reason);
    if (this.waiter) {
      clearTimeout(this.waiter.timer);
      this.waiter.reject(this.ended);
      this.waiter = null;
    }
  }

  private deliver(message: Buffer): void {
    if (this.waiter) {
      clearTimeout(this.waiter.timer);
      const { resolve } = this.waiter;
      this.waiter = null;
      resolve(message);
      return;
    }
    this.queue.push(message);
  }

  /** Decrypts every complete frame received. */
  private pump(): void {
    while (!this.ended) {
      if (this.queue.length >= this.maxQueued) {
        this.socket.pause();
        return;
      }
      if (this.bodyBytes === 0) {
        if (this.buffered.length < FRAME_HEADER_BYTES) return;
        const length = this.receiver.openLength(this.buffered.subarray(0, FRAME_HEADER_BYTES));
        this.buffered = this.buffered.subarray(FRAME_HEADER_BYTES);
        if (length === null) return this.fail(`${this.who} sent a frame whose length fails its MAC: not BOLT #8, or corrupted`);
        if (length < 2) return this.fail(`${this.who} sent a frame of ${length} bytes, shorter than a message type`);
        this.bodyBytes = length + MAC_BYTES;
      }
      if (this.buffered.length < this.bodyBytes) return;
      const body = this.buffered.subarray(0, this.bodyBytes);
      this.buffered = this.buffered.subarray(this.bodyBytes);
      this.bodyBytes = 0;
      const plaintext = this.receiver.openBody(body);
      if (plaintext === null) return this.fail(`${this.who} sent a frame whose body fails its MAC`);
      this.deliver(Buffer.from(plaintext));
    }
  }
}
