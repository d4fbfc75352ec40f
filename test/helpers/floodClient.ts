// A hostile BOLT #8 peer for the flood tests: it runs the real handshake (src/transport/handshake.ts)
// over a raw socket, then writes frames itself (src/transport/cipher.ts), so that it can send what a
// well-behaved SecureConnection never does: fragments of a message that never ends, any number of
// messages without reading a reply. It never reads what the server sends (the socket is paused
// after the handshake) unless asked to wait for the close.
import net from 'node:net';
import { CipherState } from '../../src/transport/cipher.js';
import { ACT_TWO_BYTES, Initiator } from '../../src/transport/handshake.js';
import { encodeMessage, type Message } from '../../src/protocol/messages.js';

const FRAGMENT_BYTES = 65534;
const MORE = Buffer.of(1);
const LAST = Buffer.of(0);

export class FloodClient {
  private closed = false;
  readonly whenClosed: Promise<void>;

  private constructor(
    private readonly socket: net.Socket,
    private readonly sender: CipherState,
  ) {
    this.whenClosed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.once('close', () => (this.closed = true));
  }

  /** Handshakes with the server at 127.0.0.1:port, pinning `serverKey`, as `localKey`. */
  static connect(port: number, localKey: Buffer, serverKey: Buffer): Promise<FloodClient> {
    const initiator = new Initiator(localKey, serverKey);
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    socket.write(initiator.actOne());
    return new Promise((resolve, reject) => {
      let got = Buffer.alloc(0);
      const onData = (chunk: Buffer): void => {
        got = Buffer.concat([got, chunk]);
        if (got.length < ACT_TWO_BYTES) return;
        socket.off('data', onData).off('close', onClose);
        socket.pause();
        try {
          const { actThree, keys } = initiator.actTwo(got.subarray(0, ACT_TWO_BYTES));
          socket.write(actThree);
          resolve(new FloodClient(socket, new CipherState(keys.sendKey, keys.chainingKey)));
        } catch (err) {
          socket.destroy();
          reject(err as Error);
        }
      };
      const onClose = (): void => reject(new Error('closed during the handshake'));
      socket.on('data', onData).once('close', onClose);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** `count` non-final fragments of a message that never ends; resolves once the socket took them (or closed). */
  async fragments(count: number): Promise<void> {
    const body = Buffer.alloc(FRAGMENT_BYTES, 0x5a);
    for (let i = 0; i < count && !this.closed; i++) {
      const out = Buffer.allocUnsafe(18 + 1 + FRAGMENT_BYTES + 16);
      this.sender.writeFrame([MORE, body], 1 + FRAGMENT_BYTES, out, 0);
      if (!this.socket.write(out))
        await new Promise<void>((resolve) => {
          const done = (): void => {
            this.socket.off('drain', done).off('close', done);
            resolve();
          };
          this.socket.on('drain', done).on('close', done);
        });
    }
  }

  /** One whole message (in as many fragments as it needs). */
  send(m: Message): void {
    const message = encodeMessage(m);
    for (let at = 0; at === 0 || at < message.length; at += FRAGMENT_BYTES) {
      const piece = message.subarray(at, at + FRAGMENT_BYTES);
      const last = at + FRAGMENT_BYTES >= message.length;
      const out = Buffer.allocUnsafe(18 + 1 + piece.length + 16);
      this.sender.writeFrame([last ? LAST : MORE, piece], 1 + piece.length, out, 0);
      if (!this.closed) this.socket.write(out);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}
