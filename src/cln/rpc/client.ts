// A client of lightningd's JSON-RPC (docs/CORE-LIGHTNING.md, "lightningd's RPC"): JSON-RPC 2.0
// objects over the unix socket `<lightning-dir>/<rpc-file>` named in the plugin's `init`, framed
// by JSON objects (util/jsonFraming.ts) since a reply can be far larger than one read. Replies are
// matched to calls by id; every reply is bounded before it is buffered.
//
// Never call it from the db_write path: lightningd waits for the hook before it serves RPC, so a
// call made there never returns (a deadlock). The lint rules keep journal/, vault/, destinations/
// and the backup part from importing this folder; only parts that run beside the hook use it.
import net from 'node:net';
import path from 'node:path';
import { JsonObjectSplitter } from '../../util/jsonFraming.js';
import type { InitParams } from '../part.js';

/** Largest reply accepted (listpeerchannels on a big node is megabytes; a runaway peer is not). */
export const MAX_REPLY_BYTES = 64 * 1024 * 1024;
/** How long a call waits for its reply by default. */
export const DEFAULT_CALL_TIMEOUT_MS = 60_000;

/** lightningd answered with a JSON-RPC error. */
export class LightningRpcError extends Error {
  constructor(
    readonly method: string,
    readonly code: number,
    message: string,
    readonly data: unknown,
  ) {
    super(`lightningd's ${method} failed (code ${code}): ${message}`);
  }
}

/** The socket failed, closed, sent something that is not JSON-RPC, or a call timed out. */
export class LightningRpcTransportError extends Error {}

/** The socket's path from init's parameters (lightning-dir is already the network's directory). */
export function rpcSocketPath(init: InitParams): string {
  if (init.lightningDir === null || init.rpcFile === null) {
    throw new LightningRpcTransportError("init did not name lightningd's RPC socket (configuration.lightning-dir and rpc-file); is this lightningd too old?");
  }
  return path.resolve(init.lightningDir, init.rpcFile);
}

interface Pending {
  readonly method: string;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout;
}

export class LightningRpc {
  private nextId = 1;
  private readonly pending = new Map<string, Pending>();
  private readonly splitter = new JsonObjectSplitter(MAX_REPLY_BYTES);
  private broken: Error | null = null;

  private constructor(
    private readonly socket: net.Socket,
    readonly socketPath: string,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (err) => this.fail(new LightningRpcTransportError(`lightningd's RPC socket ${socketPath} failed: ${err.message}`)));
    socket.on('close', () => this.fail(new LightningRpcTransportError(`lightningd's RPC socket ${socketPath} closed`)));
  }

  /** Connects to the socket; rejects with a clear error when nobody listens there. */
  static connect(socketPath: string): Promise<LightningRpc> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath);
      const failed = (err: Error): void =>
        reject(new LightningRpcTransportError(`cannot reach lightningd's RPC at ${socketPath}: ${err.message}; is lightningd running?`));
      socket.once('error', failed);
      socket.once('connect', () => {
        socket.off('error', failed);
        resolve(new LightningRpc(socket, socketPath));
      });
    });
  }

  /** Calls `method` with named `params`; resolves with its result. */
  call<T = unknown>(method: string, params: Readonly<Record<string, unknown>> = {}, timeoutMs = DEFAULT_CALL_TIMEOUT_MS): Promise<T> {
    if (this.broken) return Promise.reject(this.broken);
    const id = `lnbackup:${method}#${this.nextId++}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new LightningRpcTransportError(`lightningd did not answer ${method} within ${timeoutMs} ms`));
      }, timeoutMs);
      timer.unref();
      this.pending.set(id, { method, resolve: (v) => resolve(v as T), reject, timer });
      this.socket.write(JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n');
    });
  }

  /** Closes the socket; calls still waiting are rejected. */
  close(): void {
    this.fail(new LightningRpcTransportError('the RPC client was closed'));
    this.socket.destroy();
  }

  private receive(chunk: Buffer): void {
    let texts: string[];
    try {
      texts = this.splitter.push(chunk);
    } catch (err) {
      this.fail(new LightningRpcTransportError(`lightningd's RPC sent an unreadable stream: ${(err as Error).message}`));
      this.socket.destroy();
      return;
    }
    for (const text of texts) this.settle(text);
  }

  private settle(text: string): void {
    let reply: { id?: unknown; result?: unknown; error?: { code?: unknown; message?: unknown; data?: unknown } };
    try {
      reply = JSON.parse(text) as typeof reply;
    } catch {
      this.fail(new LightningRpcTransportError("lightningd's RPC sent a message that is not JSON"));
      this.socket.destroy();
      return;
    }
    if (typeof reply.id !== 'string') return; // a notification, or a reply to nobody here
    const p = this.pending.get(reply.id);
    if (!p) return;
    this.pending.delete(reply.id);
    clearTimeout(p.timer);
    if (reply.error !== undefined) {
      const e = reply.error;
      const code = typeof e?.code === 'number' ? e.code : 0;
      const message = typeof e?.message === 'string' ? e.message : 'no message';
      p.reject(new LightningRpcError(p.method, code, message, e?.data));
    } else if ('result' in reply) {
      p.resolve(reply.result);
    } else {
      p.reject(new LightningRpcTransportError(`lightningd's reply to ${p.method} has neither result nor error`));
    }
  }

  private fail(err: Error): void {
    this.broken ??= err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(this.broken);
    }
    this.pending.clear();
  }
}
