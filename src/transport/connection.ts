// One authenticated, encrypted TCP connection. It runs the BOLT #8 handshake on a socket (as the
// initiator, pinning the server's key, or as the responder) under a timeout, then carries
// application messages of any size up to a bound: each message is cut into BOLT #8 frames whose
// plaintext is a flag byte (1 = more fragments follow, 0 = last) and a fragment, every fragment
// but the last exactly 65534 bytes. Frames are decrypted as they arrive, the message size is
// checked before a fragment is read (the limit can be raised later: a server takes only a Hello
// until it admits the peer), the fragments being assembled are charged to a shared budget when one
// is given, the handshake refuses a peer that sends far ahead, and any bad MAC or malformed frame
// destroys the connection.
import net from 'node:net';
import { CipherState, FRAME_HEADER_BYTES, MAC_BYTES, MAX_FRAME_PLAINTEXT, frameBytes } from './cipher.js';
import { ACT_ONE_BYTES, ACT_THREE_BYTES, ACT_TWO_BYTES, HandshakeRefusal, Initiator, refusalOf, Responder, type SessionKeys } from './handshake.js';

export interface ConnectionOptions {
  readonly handshakeTimeoutMs?: number;
  /** Largest message taken in (a server raises it once the peer is admitted: setMaxMessageBytes). */
  readonly maxMessageBytes?: number;
  /** Charged with the fragments of messages being received (a server's memory budget). */
  readonly budget?: BufferBudget;
}

/** Bytes shared by many connections: take() says whether `bytes` more may be held. */
export interface BufferBudget {
  take(bytes: number): boolean;
  give(bytes: number): void;
}

export class TransportError extends Error {}

/** The server answered the handshake with a refusal: it takes no more connections now. */
export class ServerFullError extends TransportError {}

const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;
const FRAGMENT_BYTES = MAX_FRAME_PLAINTEXT - 1;
/**
 * Bytes a peer may send ahead during the handshake (the acts, then at most a few frames sent
 * right after act three); more is refused, so a peer cannot make a handshake hold memory.
 */
const MAX_EARLY_BYTES = 256 * 1024;
const MORE = Buffer.of(1);
const LAST = Buffer.of(0);

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Received bytes not yet consumed; take() copies only when the bytes span chunks. */
class ReceiveBuffer {
  private readonly chunks: Buffer[] = [];
  length = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.length += chunk.length;
  }

  /** The next `n` bytes; the caller checks that `n <= length`. */
  take(n: number): Buffer {
    this.length -= n;
    const first = this.chunks[0];
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    for (let at = 0; at < n;) {
      const chunk = this.chunks[0];
      const used = Math.min(chunk.length, n - at);
      at += chunk.copy(out, at, 0, used);
      if (used === chunk.length) this.chunks.shift();
      else this.chunks[0] = chunk.subarray(used);
    }
    return out;
  }
}

/** One act to read during the handshake: its size, and what to do with it. */
interface Act {
  readonly bytes: number;
  readonly handle: (message: Buffer) => { readonly reply?: Buffer; readonly keys?: SessionKeys };
}

interface HandshakePlan {
  readonly acts: readonly Act[];
  /** The error when the socket fails or ends before the handshake is done. */
  readonly lost: (detail: string) => string;
}

export class SecureConnection {
  readonly remotePublicKey: Buffer;
  private readonly sender: CipherState;
  private readonly receiver: CipherState;
  private maxMessageBytes: number;
  private readonly budget: BufferBudget | null;
  /** Called instead of failing when the budget refuses a fragment; reading stops meanwhile. */
  private overBudgetHandler: (() => void) | null = null;
  private overBudget = false;
  private messageHandler: ((message: Buffer) => void) | null = null;
  private closeHandler: ((error: Error | null) => void) | null = null;
  private open = true;
  private finished = false;
  private peerEnded = false;
  private error: Error | null = null;
  /** Bytes of the frame body (ciphertext and MAC) being waited for; 0 while waiting for a header. */
  private bodyBytes = 0;
  private readonly fragments: Buffer[] = [];
  private fragmentBytes = 0;

  private constructor(
    private readonly socket: net.Socket,
    keys: SessionKeys,
    private readonly received: ReceiveBuffer,
    options: ConnectionOptions,
  ) {
    this.remotePublicKey = keys.remotePublicKey;
    this.sender = new CipherState(keys.sendKey, keys.chainingKey);
    this.receiver = new CipherState(keys.receiveKey, keys.chainingKey);
    this.maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.budget = options.budget ?? null;
    socket.on('data', (chunk: Buffer) => {
      this.received.push(chunk);
      this.pump();
    });
    socket.on('end', () => {
      this.peerEnded = true;
      this.pump();
    });
    socket.on('error', (error) => {
      this.error ??= new TransportError(`connection lost: ${error.message}`, { cause: error });
    });
    socket.on('close', () => this.finish());
    this.pump();
  }

  /** Connects to host:port as the initiator; the server must hold the key `remotePublicKey`. */
  static connect(host: string, port: number, localKey: Buffer, remotePublicKey: Buffer, options: ConnectionOptions = {}): Promise<SecureConnection> {
    let initiator: Initiator;
    let socket: net.Socket;
    try {
      initiator = new Initiator(localKey, remotePublicKey);
      socket = net.connect({ host, port });
    } catch (error) {
      return Promise.reject(new TransportError(messageOf(error), { cause: error }));
    }
    let connected = false;
    socket.once('connect', () => (connected = true));
    socket.write(initiator.actOne());
    return SecureConnection.handshake(socket, options, {
      acts: [
        {
          bytes: ACT_TWO_BYTES,
          handle: (message) => {
            const refused = refusalOf(message);
            if (refused !== null) {
              const why =
                refused === HandshakeRefusal.TooManyFromAddress ? 'it has as many connections from this address as it takes' : 'every connection slot is taken';
              throw new ServerFullError(
                `the server at ${host}:${port} is full (${why}): it takes no more connections now; this is not a key problem, try again later`,
              );
            }
            const { actThree, keys } = initiator.actTwo(message);
            return { reply: actThree, keys };
          },
        },
      ],
      lost: (detail) =>
        !connected
          ? `cannot connect to ${host}:${port}: ${detail}`
          : `the server at ${host}:${port} closed the connection during the handshake (${detail}): the server's key does not match the pinned key, or it refused this client`,
    });
  }

  /** Runs the responder's side of the handshake on a socket a server accepted. */
  static accept(socket: net.Socket, localKey: Buffer, options: ConnectionOptions = {}): Promise<SecureConnection> {
    let responder: Responder;
    try {
      responder = new Responder(localKey);
    } catch (error) {
      socket.destroy();
      return Promise.reject(new TransportError(messageOf(error), { cause: error }));
    }
    return SecureConnection.handshake(socket, options, {
      acts: [
        { bytes: ACT_ONE_BYTES, handle: (message) => ({ reply: responder.actOne(message) }) },
        { bytes: ACT_THREE_BYTES, handle: (message) => ({ keys: responder.actThree(message) }) },
      ],
      lost: (detail) => `the client closed the connection during the handshake (${detail})`,
    });
  }

  private static handshake(socket: net.Socket, options: ConnectionOptions, plan: HandshakePlan): Promise<SecureConnection> {
    if (socket.destroyed) return Promise.reject(new TransportError(plan.lost('the socket was already closed')));
    socket.setNoDelay(true);
    const timeoutMs = options.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
    return new Promise((resolve, reject) => {
      const received = new ReceiveBuffer();
      let next = 0;
      const detach = (): void => {
        clearTimeout(timer);
        socket.off('data', onData).off('end', onEnd).off('error', onError).off('close', onClose);
      };
      const fail = (message: string, cause?: unknown): void => {
        detach();
        socket.destroy();
        reject(new TransportError(message, { cause }));
      };
      const onData = (chunk: Buffer): void => {
        received.push(chunk);
        if (received.length > MAX_EARLY_BYTES) {
          fail(`the peer sent more than ${MAX_EARLY_BYTES} bytes before the handshake completed`);
          return;
        }
        while (received.length >= plan.acts[next].bytes) {
          const act = plan.acts[next++];
          let result: ReturnType<Act['handle']>;
          try {
            result = act.handle(received.take(act.bytes));
          } catch (error) {
            if (error instanceof ServerFullError) {
              detach();
              socket.destroy();
              reject(error);
            } else fail(`handshake failed: ${messageOf(error)}`, error);
            return;
          }
          if (result.reply) socket.write(result.reply);
          if (result.keys) {
            detach();
            resolve(new SecureConnection(socket, result.keys, received, options));
            return;
          }
        }
      };
      const onEnd = (): void => fail(plan.lost('end of stream'));
      const onError = (error: Error): void => fail(plan.lost(error.message), error);
      const onClose = (): void => fail(plan.lost('closed'));
      const timer = setTimeout(() => fail(`the handshake did not complete within ${timeoutMs} ms`), timeoutMs);
      socket.on('data', onData).on('end', onEnd).on('error', onError).on('close', onClose);
    });
  }

  /** The handler of every message, in order; messages that arrive before it is set wait for it. */
  onMessage(handler: (message: Buffer) => void): void {
    this.messageHandler = handler;
    this.socket.resume();
    this.pump();
  }

  /** Messages up to `bytes` are taken from now on (the limit of frames not yet read). */
  setMaxMessageBytes(bytes: number): void {
    this.maxMessageBytes = bytes;
  }

  /**
   * When the budget refuses a fragment: the fragments held are given back, nothing more is read,
   * and `handler` runs (to tell the peer, then close). Without a handler the connection fails.
   */
  onOverBudget(handler: () => void): void {
    this.overBudgetHandler = handler;
  }

  /** Resolves once everything sent has been handed to the kernel (or the connection ended). */
  drained(): Promise<void> {
    if (this.socket.writableLength === 0 || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.socket.off('drain', done).off('close', done);
        resolve();
      };
      this.socket.on('drain', done).on('close', done);
    });
  }

  /** Called once when the connection ends: null for a clean close by either side. */
  onClose(handler: (error: Error | null) => void): void {
    this.closeHandler = handler;
    if (this.finished) process.nextTick(handler, this.error);
  }

  send(message: Buffer): void {
    if (!this.open) throw new TransportError('the connection is closed');
    if (message.length > this.maxMessageBytes) {
      throw new TransportError(`a message of ${message.length} bytes is more than the ${this.maxMessageBytes} allowed`);
    }
    const frames = Math.max(1, Math.ceil(message.length / FRAGMENT_BYTES));
    const out = Buffer.allocUnsafe(frames * frameBytes(1) + message.length);
    let at = 0;
    for (let i = 0; i < frames; i++) {
      const fragment = message.subarray(i * FRAGMENT_BYTES, (i + 1) * FRAGMENT_BYTES);
      at = this.sender.writeFrame([i === frames - 1 ? LAST : MORE, fragment], 1 + fragment.length, out, at);
    }
    this.socket.write(out);
  }

  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  /** Sends what is queued, then ends the connection. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.socket.end();
  }

  destroy(error?: Error): void {
    this.open = false;
    if (!this.finished) this.error ??= error ?? null;
    this.socket.destroy();
  }

  private fail(message: string): void {
    this.destroy(new TransportError(message));
  }

  /** Decrypts every complete frame received, delivering each completed message. */
  private pump(): void {
    while (this.messageHandler !== null && !this.socket.destroyed && !this.overBudget) {
      if (this.bodyBytes === 0) {
        if (this.received.length < FRAME_HEADER_BYTES) break;
        const length = this.receiver.openLength(this.received.take(FRAME_HEADER_BYTES));
        if (length === null) return this.fail('bad MAC on a frame length');
        if (length === 0) return this.fail('malformed frame: no flag byte');
        if (this.fragmentBytes + length - 1 > this.maxMessageBytes) {
          return this.fail(`a message of more than the ${this.maxMessageBytes} bytes allowed was received`);
        }
        this.bodyBytes = length + MAC_BYTES;
      }
      if (this.received.length < this.bodyBytes) break;
      const plaintext = this.receiver.openBody(this.received.take(this.bodyBytes));
      this.bodyBytes = 0;
      if (plaintext === null) return this.fail('bad MAC on a frame body');
      const fragment = plaintext.subarray(1);
      if (plaintext[0] === MORE[0]) {
        if (fragment.length !== FRAGMENT_BYTES) return this.fail(`malformed frame: a non-final fragment of ${fragment.length} bytes`);
        if (this.budget && !this.budget.take(fragment.length)) return this.refuseOverBudget();
        this.fragments.push(fragment);
        this.fragmentBytes += fragment.length;
        continue;
      }
      if (plaintext[0] !== LAST[0]) return this.fail(`malformed frame: flag byte ${plaintext[0]}`);
      this.messageHandler(this.fragments.length === 0 ? fragment : this.joinFragments(fragment));
    }
    if (this.socket.destroyed || this.overBudget) return;
    if (this.messageHandler === null && this.received.length > 0) this.socket.pause();
    else if (this.peerEnded) this.endOfStream();
  }

  private joinFragments(last: Buffer): Buffer {
    this.fragments.push(last);
    const message = Buffer.concat(this.fragments, this.fragmentBytes + last.length);
    this.dropFragments();
    return message;
  }

  private dropFragments(): void {
    this.budget?.give(this.fragmentBytes);
    this.fragments.length = 0;
    this.fragmentBytes = 0;
  }

  private refuseOverBudget(): void {
    this.overBudget = true;
    this.dropFragments();
    this.socket.pause();
    if (this.overBudgetHandler === null) this.fail('the memory budget for messages being received is spent');
    else this.overBudgetHandler();
  }

  /** The peer ended its side and every complete frame it sent was delivered. */
  private endOfStream(): void {
    if (this.received.length > 0 || this.bodyBytes > 0 || this.fragments.length > 0) {
      this.fail('the peer closed the connection in the middle of a message');
      return;
    }
    this.open = false;
    if (!this.socket.writableEnded) this.socket.end();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.open = false;
    this.dropFragments();
    if (this.closeHandler !== null) this.closeHandler(this.error);
  }
}
