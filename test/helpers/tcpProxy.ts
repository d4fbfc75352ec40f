// A TCP proxy on 127.0.0.1 that a test controls: it forwards both ways between its clients and a
// target port, and on demand drops every connection, cuts one right in the middle of a chunk it
// forwards, delays what it forwards, or black-holes traffic (holds it, closing nothing).
import net from 'node:net';

interface Direction {
  readonly from: net.Socket;
  readonly to: net.Socket;
  readonly queue: { chunk: Buffer; due: number }[];
  timer: NodeJS.Timeout | null;
}

interface Pair {
  readonly client: net.Socket;
  readonly upstream: net.Socket;
  readonly directions: readonly Direction[];
}

export class TcpProxy {
  /** Connections accepted so far. */
  accepted = 0;
  private readonly pairs = new Set<Pair>();
  private delayMs = 0;
  private holding = false;
  private cutArmed = false;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private readonly targetPort: number,
  ) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const proxy = new TcpProxy(server, (server.address() as net.AddressInfo).port, targetPort);
    server.on('connection', (socket) => proxy.accept(socket));
    return proxy;
  }

  /** Open connections. */
  get connections(): number {
    return this.pairs.size;
  }

  /** Closes every connection, both sides, at once. */
  dropAll(): void {
    for (const pair of [...this.pairs]) this.drop(pair);
  }

  /** The next chunk forwarded (either way) is cut: part of it is delivered, then both sides are closed. */
  cutMidFrame(): void {
    this.cutArmed = true;
  }

  /** Delays everything forwarded from now on by `ms`. */
  delay(ms: number): void {
    this.delayMs = ms;
  }

  /** While on, nothing is forwarded and nothing is closed (what arrives is held, then delivered when off). */
  blackhole(on: boolean): void {
    this.holding = on;
    for (const pair of this.pairs) {
      for (const d of pair.directions) {
        if (on) d.from.pause();
        else {
          d.from.resume();
          this.drain(pair, d);
        }
      }
    }
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket): void {
    this.accepted++;
    const upstream = net.connect({ host: '127.0.0.1', port: this.targetPort });
    const directions: Direction[] = [
      { from: client, to: upstream, queue: [], timer: null },
      { from: upstream, to: client, queue: [], timer: null },
    ];
    const pair: Pair = { client, upstream, directions };
    this.pairs.add(pair);
    for (const d of directions) {
      d.from.setNoDelay(true);
      if (this.holding) d.from.pause();
      d.from.on('data', (chunk: Buffer) => this.forward(pair, d, chunk));
      d.from.on('error', () => this.drop(pair));
      d.from.on('close', () => this.drop(pair));
    }
  }

  private forward(pair: Pair, d: Direction, chunk: Buffer): void {
    if (this.cutArmed) {
      this.cutArmed = false;
      const part = chunk.subarray(0, Math.floor(chunk.length / 2));
      this.pairs.delete(pair);
      d.to.end(part);
      d.from.destroy();
      setTimeout(() => d.to.destroy(), 100);
      return;
    }
    if (this.delayMs === 0 && !this.holding && d.queue.length === 0) {
      d.to.write(chunk);
      return;
    }
    d.queue.push({ chunk, due: Date.now() + this.delayMs });
    this.drain(pair, d);
  }

  private drain(pair: Pair, d: Direction): void {
    if (d.timer !== null || this.holding || !this.pairs.has(pair)) return;
    const now = Date.now();
    while (d.queue.length > 0 && d.queue[0].due <= now) d.to.write(d.queue.shift()!.chunk);
    if (d.queue.length > 0) {
      d.timer = setTimeout(() => {
        d.timer = null;
        this.drain(pair, d);
      }, d.queue[0].due - now);
    }
  }

  private drop(pair: Pair): void {
    if (!this.pairs.delete(pair)) return;
    for (const d of pair.directions) {
      if (d.timer) clearTimeout(d.timer);
      d.queue.length = 0;
    }
    pair.client.destroy();
    pair.upstream.destroy();
  }
}
