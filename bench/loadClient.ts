// The capacity section's load generator, a child process forked by bench/capacity.ts (IPC channel).
// It plays `nodes` simulated nodes against one lnbackup server, each with its own transport key,
// its own vault (an identity made by createIdentity in a folder of its own, under a random root
// key) and its own BOLT #8 connection:
//
//   1. setup  (on the 'config' message): every node makes its keys and vault, then connects
//      (staggered: a few handshakes at a time, a pause between starts), says Hello, waits for
//      Welcome, sends OpenVault with its identity and waits for VaultState. Reports 'ready'.
//   2. load   (on the 'start' message): from `startAt` (epoch ms, the same for every load process),
//      each node sends one Append every 1000/rate ms, with consecutive seqs, its payload size taken
//      in turn from the trace's db_write calls. By default the record is framed, not sealed: a valid
//      header (magic, version, sealed length, seq, a random nonce) and random bytes of exactly the
//      sealed body's size. The server cannot open records and checks only the header, so it does
//      the same work as for a sealed one, and the load generator is spared the XChaCha20-Poly1305
//      and SHA-256 (half of its CPU per record) on a machine it shares with the server. With
//      `seal` every record is really sealed by RecordSealer under the node's key. Nodes are
//      phase-shifted evenly over one interval so the total offered load is smooth. An Append is
//      sent at its due time whether or not the previous one was acknowledged (pipelined, up to the
//      server's maxPendingAppends), as the records of a busy node would be.
//   3. window: an Append sent in [startAt + warmupMs, + windowMs) has its ack latency (send() →
//      its Ack received; acks are cumulative) kept; acks received in the window are counted.
//      After the window no more Appends are sent; the process waits up to drainMs for the acks
//      still outstanding, closes every connection and reports 'result' (latencies as JSON).
//
// Also measured here, to tell a slow server from a saturated load generator: this process's CPU
// time in the window, its event-loop delay, and how late sends were against their schedule.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { ErrorCode, MessageType, PROTOCOL_VERSION, decodeMessage, encodeMessage, type Message } from '../src/protocol/messages.js';
import { SecureConnection } from '../src/transport/connection.js';
import { generatePrivateKey } from '../src/transport/keys.js';
import { BODY_PREFIX_BYTES, encodeHeader, genesisHash, HEADER_BYTES, RecordType } from '../src/vault/format.js';
import { NONCE_BYTES, TAG_BYTES } from '../src/vault/aead.js';
import { createIdentity, identityPath } from '../src/vault/identity.js';
import { vaultKeysFromRoot } from '../src/vault/keys.js';
import { RecordSealer } from '../src/vault/sealer.js';

export interface LoadConfig {
  readonly type: 'config';
  readonly host: string;
  readonly port: number;
  /** The server's public key, hex. */
  readonly serverKey: string;
  /** Nodes this process plays, and the index of its first one among all (for the phase shift). */
  readonly nodes: number;
  readonly firstIndex: number;
  readonly totalNodes: number;
  /** Appends per second per node. */
  readonly rate: number;
  /** Payload sizes (bytes) to cycle through: the trace's db_write calls. */
  readonly payloadSizes: readonly number[];
  /** Seal every record for real (RecordSealer); otherwise a valid header and a random body of the same size. */
  readonly seal: boolean;
  /** Where the nodes' vault folders go. */
  readonly workDir: string;
  /** At most this many handshakes in flight, and this pause between two connection starts. */
  readonly maxConcurrentConnects: number;
  readonly connectIntervalMs: number;
}

export interface LoadStart {
  readonly type: 'start';
  /** Epoch ms at which every node starts sending. */
  readonly startAt: number;
  readonly warmupMs: number;
  readonly windowMs: number;
  /** How long to wait after the window for outstanding acks. */
  readonly drainMs: number;
}

export interface LoadReady {
  readonly type: 'ready';
  readonly nodes: number;
  /** Setup of every node: keys, vault, connect, Hello, OpenVault (ms). */
  readonly setupMs: number;
  /** Per node: connect() called → VaultState received (ms). */
  readonly connectMs: number[];
  readonly maxPendingAppends: number;
}

export interface LoadResult {
  readonly type: 'result';
  readonly nodes: number;
  /** Ack latency (ms) of every Append sent in the window and acknowledged, in no order. */
  readonly latenciesMs: number[];
  /** Appends sent in the window. */
  readonly sentInWindow: number;
  /** Acks received in the window (records made durable and acknowledged during it). */
  readonly ackedInWindow: number;
  /** Bytes of the records acknowledged in the window. */
  readonly ackedBytesInWindow: number;
  /** Appends sent in the window with no ack when the drain ended. */
  readonly unacked: number;
  /** Every Append sent, every ack received (whole run). */
  readonly sentTotal: number;
  readonly ackedTotal: number;
  /** Sends that waited because maxPendingAppends records were unacknowledged. */
  readonly heldBack: number;
  /** Error messages from the server, by code name, and the first one's text. */
  readonly errors: Record<string, number>;
  readonly firstError: string | null;
  /** Connections that closed before the end. */
  readonly lostConnections: number;
  /** This process's CPU time (user + system) during the window (ms). */
  readonly cpuMsInWindow: number;
  /** Event-loop delay during the window (ms): p99 and max. */
  readonly loopDelayP99Ms: number;
  readonly loopDelayMaxMs: number;
  /** How late sends were against their schedule, in the window (ms): p99 and max. */
  readonly sendLagP99Ms: number;
  readonly sendLagMaxMs: number;
}

export type LoadReport = LoadReady | LoadResult | { readonly type: 'error'; readonly message: string };

/** Slots for the send times of outstanding Appends (more than any server lets be outstanding). */
const RING = 1 << 14;

interface SimNode {
  readonly index: number;
  readonly vaultId: Buffer;
  readonly sealer: RecordSealer;
  conn: SecureConnection | null;
  /** Seq of the last Append sent and of the last one acknowledged. */
  sent: number;
  acked: number;
  /** performance.now() of each outstanding Append, by seq % RING; and its size. */
  readonly sentAt: Float64Array;
  readonly sentBytes: Uint32Array;
  /** When the next Append is due (performance.now() ms). */
  nextDue: number;
  sizeCursor: number;
  dataVersion: number;
  failed: boolean;
  waiter: ((m: Message) => void) | null;
}

/** Sends a report to the parent; resolves once it is handed to the IPC channel. */
function report(r: LoadReport): Promise<void> {
  return new Promise((resolve) => {
    if (!process.send) return resolve();
    process.send(r, undefined, {}, () => resolve());
  });
}

const rounded = (v: number): number => Math.round(v * 1000) / 1000;

function quantile(values: number[], q: number): number {
  if (values.length === 0) return 0;
  const s = Float64Array.from(values).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

class LoadProcess {
  private readonly nodes: SimNode[] = [];
  private readonly pool: Buffer;
  private maxPending = 1024;
  private readonly errors: Record<string, number> = {};
  private firstError: string | null = null;
  private lostConnections = 0;
  private stopping = false;
  // Window bookkeeping (performance.now() ms).
  private windowStart = Infinity;
  private windowEnd = Infinity;
  private readonly latencies: number[] = [];
  private readonly sendLags: number[] = [];
  private sentInWindow = 0;
  private ackedInWindow = 0;
  private ackedBytesInWindow = 0;
  private sentTotal = 0;
  private ackedTotal = 0;
  private heldBack = 0;

  constructor(private readonly config: LoadConfig) {
    const largest = Math.max(...config.payloadSizes, 1) + BODY_PREFIX_BYTES + TAG_BYTES;
    this.pool = crypto.randomBytes(largest + 4096);
  }

  async setup(): Promise<LoadReady> {
    const c = this.config;
    const started = performance.now();
    const serverKey = Buffer.from(c.serverKey, 'hex');
    fs.mkdirSync(c.workDir, { recursive: true });
    const connectMs: number[] = new Array<number>(c.nodes);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < c.nodes) {
        const i = next++;
        connectMs[i] = await this.addNode(i, serverKey);
        if (c.connectIntervalMs > 0) await new Promise((resolve) => setTimeout(resolve, c.connectIntervalMs));
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, c.maxConcurrentConnects) }, worker));
    return {
      type: 'ready',
      nodes: this.nodes.length,
      setupMs: Math.round(performance.now() - started),
      connectMs: connectMs.map(rounded),
      maxPendingAppends: this.maxPending,
    };
  }

  private async addNode(i: number, serverKey: Buffer): Promise<number> {
    const c = this.config;
    const keys = vaultKeysFromRoot(crypto.randomBytes(32));
    const dir = path.join(c.workDir, `node-${c.firstIndex + i}`);
    fs.mkdirSync(dir, { recursive: true });
    const identity = createIdentity(dir, keys, null);
    const identityBytes = fs.readFileSync(identityPath(dir));
    const vaultId = Buffer.from(identity.vaultId, 'hex');
    const node: SimNode = {
      index: c.firstIndex + i,
      vaultId,
      sealer: new RecordSealer(keys.record, vaultId, { lastSeq: 0n, lastHash: genesisHash(vaultId), generation: 1 }),
      conn: null,
      sent: 0,
      acked: 0,
      sentAt: new Float64Array(RING),
      sentBytes: new Uint32Array(RING),
      nextDue: Infinity,
      sizeCursor: Math.floor(Math.random() * c.payloadSizes.length),
      dataVersion: 1,
      failed: false,
      waiter: null,
    };
    const t = performance.now();
    const conn = await SecureConnection.connect(c.host, c.port, generatePrivateKey(), serverKey);
    node.conn = conn;
    conn.onMessage((raw) => this.onMessage(node, raw));
    conn.onClose((error) => {
      node.conn = null;
      if (!this.stopping) {
        node.failed = true;
        this.lostConnections++;
        this.noteError('ConnectionLost', `node ${node.index}: the connection closed${error ? `: ${error.message}` : ''}`);
      }
    });
    const welcome = await this.request(node, { type: MessageType.Hello, versions: [PROTOCOL_VERSION], agent: 'lnbackup-bench/loadClient' });
    if (welcome.type !== MessageType.Welcome) throw new Error(`node ${node.index}: expected Welcome, got ${MessageType[welcome.type]}`);
    this.maxPending = Math.min(this.maxPending, welcome.maxPendingAppends);
    const state = await this.request(node, { type: MessageType.OpenVault, requestId: 1, vaultId, identity: identityBytes });
    if (state.type !== MessageType.VaultState) {
      throw new Error(`node ${node.index}: expected VaultState, got ${MessageType[state.type]}${state.type === MessageType.Error ? `: ${state.message}` : ''}`);
    }
    if (state.lastSeq !== 0n) throw new Error(`node ${node.index}: the new vault already holds records up to ${state.lastSeq}`);
    this.nodes.push(node);
    return performance.now() - t;
  }

  private request(node: SimNode, m: Message): Promise<Message> {
    return new Promise((resolve) => {
      node.waiter = resolve;
      node.conn!.send(encodeMessage(m));
    });
  }

  private noteError(code: string, message: string): void {
    this.errors[code] = (this.errors[code] ?? 0) + 1;
    this.firstError ??= message;
  }

  private onMessage(node: SimNode, raw: Buffer): void {
    const now = performance.now();
    let m: Message;
    try {
      m = decodeMessage(raw);
    } catch (err) {
      node.failed = true;
      this.noteError('Undecodable', `node ${node.index}: ${(err as Error).message}`);
      return;
    }
    if (m.type === MessageType.Ack) return this.onAck(node, Number(m.seq), now);
    if (m.type === MessageType.Error && node.waiter === null) {
      node.failed = true;
      this.noteError(ErrorCode[m.code] ?? `code ${m.code}`, `node ${node.index}, seq ${m.seq}: ${m.message}`);
      return;
    }
    const waiter = node.waiter;
    node.waiter = null;
    if (waiter) waiter(m);
    else this.noteError('Unexpected', `node ${node.index}: unexpected ${MessageType[m.type]}`);
  }

  private onAck(node: SimNode, seq: number, now: number): void {
    const inWindow = now >= this.windowStart && now < this.windowEnd;
    for (let s = node.acked + 1; s <= seq && s <= node.sent; s++) {
      const at = node.sentAt[s % RING];
      if (at >= this.windowStart && at < this.windowEnd) this.latencies.push(rounded(now - at));
      if (inWindow) {
        this.ackedInWindow++;
        this.ackedBytesInWindow += node.sentBytes[s % RING];
      }
      this.ackedTotal++;
    }
    if (seq > node.acked) node.acked = Math.min(seq, node.sent);
  }

  private sendNext(node: SimNode): void {
    const sizes = this.config.payloadSizes;
    const size = sizes[node.sizeCursor];
    node.sizeCursor = (node.sizeCursor + 1) % sizes.length;
    const offset = (node.sent * 131) % 4096;
    let record: { seq: bigint; bytes: Buffer };
    if (this.config.seal) {
      record = node.sealer.seal({
        type: RecordType.Writes,
        generation: 1,
        dataVersion: node.dataVersion++,
        supersedes: 0n,
        payload: this.pool.subarray(offset, offset + size),
      });
    } else {
      const seq = BigInt(node.sent + 1);
      const sealedLength = BODY_PREFIX_BYTES + size + TAG_BYTES;
      const bytes = Buffer.allocUnsafe(HEADER_BYTES + sealedLength);
      encodeHeader(sealedLength, seq, crypto.randomBytes(NONCE_BYTES)).copy(bytes, 0);
      this.pool.copy(bytes, HEADER_BYTES, offset, offset + sealedLength);
      record = { seq, bytes };
    }
    const seq = Number(record.seq);
    const message = encodeMessage({ type: MessageType.Append, vaultId: node.vaultId, record: { seq: record.seq, generation: 1, bytes: record.bytes } });
    const at = performance.now();
    node.sentAt[seq % RING] = at;
    node.sentBytes[seq % RING] = record.bytes.length;
    node.sent = seq;
    node.conn!.send(message);
    this.sentTotal++;
    if (at >= this.windowStart && at < this.windowEnd) {
      this.sentInWindow++;
      this.sendLags.push(rounded(at - node.nextDue));
    }
  }

  async run(start: LoadStart): Promise<LoadResult> {
    const c = this.config;
    const t0 = start.startAt - performance.timeOrigin;
    const interval = 1000 / c.rate;
    this.windowStart = t0 + start.warmupMs;
    this.windowEnd = this.windowStart + start.windowMs;
    for (const n of this.nodes) n.nextDue = t0 + (interval * n.index) / c.totalNodes;
    const loop = monitorEventLoopDelay({ resolution: 1 });
    let cpuAtStart: NodeJS.CpuUsage | null = null;
    let cpuMs = 0;

    await new Promise<void>((resolve) => {
      const tick = (): void => {
        const now = performance.now();
        if (cpuAtStart === null && now >= this.windowStart) {
          cpuAtStart = process.cpuUsage();
          loop.enable();
        }
        if (now >= this.windowEnd) {
          const used = process.cpuUsage(cpuAtStart ?? undefined);
          cpuMs = (used.user + used.system) / 1000;
          loop.disable();
          resolve();
          return;
        }
        for (const n of this.nodes) {
          while (!n.failed && n.conn !== null && n.nextDue <= now && n.nextDue < this.windowEnd) {
            if (n.sent - n.acked >= this.maxPending) {
              this.heldBack++;
              break;
            }
            this.sendNext(n);
            n.nextDue += interval;
          }
        }
        setTimeout(tick, 1);
      };
      setTimeout(tick, Math.max(0, t0 - performance.now()));
    });

    // Drain: wait for the outstanding acks.
    const drainUntil = performance.now() + start.drainMs;
    while (performance.now() < drainUntil && this.nodes.some((n) => !n.failed && n.conn !== null && n.acked < n.sent)) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    let unacked = 0;
    for (const n of this.nodes) {
      for (let s = n.acked + 1; s <= n.sent; s++) {
        const at = n.sentAt[s % RING];
        if (at >= this.windowStart && at < this.windowEnd) unacked++;
      }
    }
    await this.closeAll();
    const delay = (v: number): number => rounded(v / 1e6);
    return {
      type: 'result',
      nodes: this.nodes.length,
      latenciesMs: this.latencies,
      sentInWindow: this.sentInWindow,
      ackedInWindow: this.ackedInWindow,
      ackedBytesInWindow: this.ackedBytesInWindow,
      unacked,
      sentTotal: this.sentTotal,
      ackedTotal: this.ackedTotal,
      heldBack: this.heldBack,
      errors: this.errors,
      firstError: this.firstError,
      lostConnections: this.lostConnections,
      cpuMsInWindow: Math.round(cpuMs),
      loopDelayP99Ms: loop.count > 0 ? delay(loop.percentile(99)) : 0,
      loopDelayMaxMs: loop.count > 0 ? delay(loop.max) : 0,
      sendLagP99Ms: rounded(quantile(this.sendLags, 0.99)),
      sendLagMaxMs: rounded(this.sendLags.reduce((a, b) => Math.max(a, b), 0)),
    };
  }

  async closeAll(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.nodes.map(
        (n) =>
          new Promise<void>((resolve) => {
            const conn = n.conn;
            if (!conn) return resolve();
            const timer = setTimeout(() => {
              conn.destroy();
              resolve();
            }, 2000);
            conn.onClose(() => {
              clearTimeout(timer);
              resolve();
            });
            conn.close();
          }),
      ),
    );
  }
}

function main(): void {
  if (!process.send) {
    process.stderr.write('bench/loadClient.js is started by bench/capacity.js (it needs an IPC channel)\n');
    process.exit(2);
  }
  let load: LoadProcess | null = null;
  const fail = (err: unknown): void => {
    process.exitCode = 1;
    void report({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) }).then(() => process.disconnect?.());
  };
  process.on('message', (m: LoadConfig | LoadStart) => {
    if (m.type === 'config') {
      load = new LoadProcess(m);
      load.setup().then(report, fail);
    } else if (m.type === 'start' && load) {
      load.run(m).then((r) => report(r).then(() => process.disconnect?.()), fail);
    }
  });
  // The channel closed (the result was sent, or the parent went away): nothing more to do.
  process.on('disconnect', () => process.exit());
}

main();
