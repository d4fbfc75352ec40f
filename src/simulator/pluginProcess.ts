// Runs a plugin executable the way lightningd does (cwd = the network directory, LIGHTNINGD_PLUGIN=1,
// LIGHTNINGD_VERSION, no arguments) and speaks JSON-RPC 2.0 with it over stdin/stdout: requests with
// lightningd-style string ids ("cln:db_write#26"), replies matched by id, `log` notifications
// forwarded, and the plugin's exit or protocol violations reported as typed errors.
//
// Waiting for a reply: 'idle' waits on the event loop; 'spin' waits as lightningd does for a
// db_write answer (it busy-polls the plugin's pipe, poll() with a zero timeout, holding a core):
// the request is written and the reply read with non-blocking system calls in a loop that never
// yields, so the plugin competes with a spinning core as it does on a real node.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { JsonObjectSplitter } from '../util/jsonFraming.js';

export const LIGHTNINGD_VERSION = 'v26.06.6';

/** How to start a plugin: an executable and its arguments. */
export interface PluginCommand {
  command: string;
  args: string[];
}

/** A `.js` file runs under this Node; anything else is executed directly. Paths become absolute. */
export function pluginCommandFor(file: string): PluginCommand {
  const abs = path.resolve(file);
  return /\.[cm]?js$/.test(abs) ? { command: process.execPath, args: [abs] } : { command: abs, args: [] };
}

export interface PluginExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class PluginExitedError extends Error {
  constructor(
    readonly exit: PluginExit,
    detail?: string,
  ) {
    super(detail ?? `plugin exited (${exit.signal ? `signal ${exit.signal}` : `code ${exit.code}`})`);
  }
}

export class PluginProtocolError extends Error {}

export class PluginTimeoutError extends Error {}

export interface RpcReply {
  result?: unknown;
  error?: unknown;
  /** Request written → reply parsed, in milliseconds. */
  latencyMs: number;
}

export interface PluginProcessOptions {
  command: PluginCommand;
  cwd: string;
  /** 'inherit' passes the plugin's stderr through; 'collect' keeps its last 64 KiB (stderrText). */
  stderr: 'inherit' | 'collect';
  onLog?: (level: string, message: string) => void;
  /** How to wait for replies (default 'idle'). */
  wait?: WaitMode;
}

export type WaitMode = 'idle' | 'spin';

/** The file descriptor under a child's pipe stream (libuv keeps it non-blocking). */
function pipeFd(stream: unknown, what: string): number {
  const fd = (stream as { _handle?: { fd?: unknown } } | null)?._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error(`the plugin's ${what} has no file descriptor to poll`);
  return fd;
}

/** Between requests, a spinning lightningd still reads what the plugin writes (its io loop): this often. */
const SPIN_DRAIN_MS = 2;

interface Pending {
  sentNs: bigint;
  resolve: (reply: RpcReply) => void;
  reject: (err: Error) => void;
  timer?: NodeJS.Timeout;
}

const STDERR_KEEP = 64 * 1024;
/** Notifications lightningd accepts from any plugin besides `log` (they relate to RPC commands). */
const IGNORED_NOTIFICATIONS = new Set(['message', 'progress']);

export class PluginProcess {
  readonly exited: Promise<PluginExit>;
  private readonly child: ChildProcess;
  private readonly splitter = new JsonObjectSplitter();
  private readonly pending = new Map<string, Pending>();
  private nextId = 1;
  private failure: Error | null = null;
  private stderrBuf = '';
  /** 'spin': the raw pipes, read and written with non-blocking calls (stdout is never a flowing stream). */
  private readonly spin: { readonly stdin: number; readonly stdout: number; readonly buf: Buffer; drain: NodeJS.Timeout } | null = null;

  constructor(private readonly opts: PluginProcessOptions) {
    this.child = spawn(opts.command.command, opts.command.args, {
      cwd: opts.cwd,
      env: { ...process.env, LIGHTNINGD_PLUGIN: '1', LIGHTNINGD_VERSION },
      stdio: ['pipe', 'pipe', opts.stderr === 'inherit' ? 'inherit' : 'pipe'],
    });
    this.exited = new Promise((resolve) => {
      this.child.on('error', (err) => {
        this.fail(new PluginExitedError({ code: null, signal: null }, `cannot run the plugin: ${err.message}`));
        resolve({ code: null, signal: null });
      });
      this.child.on('close', (code, signal) => {
        const exit = { code, signal };
        this.fail(new PluginExitedError(exit));
        resolve(exit);
      });
    });
    this.child.stdin?.on('error', () => {
      // EPIPE when the plugin is gone: its exit is reported by 'close'.
    });
    if (opts.wait === 'spin') {
      this.spin = {
        stdin: pipeFd(this.child.stdin, 'stdin'),
        stdout: pipeFd(this.child.stdout, 'stdout'),
        buf: Buffer.allocUnsafe(256 * 1024),
        drain: setInterval(() => this.drainStdout(), SPIN_DRAIN_MS),
      };
      this.spin.drain.unref();
      this.child.on('exit', () => {
        this.drainStdout();
        if (this.spin) clearInterval(this.spin.drain);
        // Nothing reads the stream itself: let it go, so that 'close' (and the exit) is reported.
        this.child.stdout?.destroy();
      });
    } else {
      this.child.stdout?.on('data', (chunk: Buffer) => this.onData(chunk));
    }
    this.child.stderr?.on('data', (chunk: Buffer) => {
      this.stderrBuf = (this.stderrBuf + chunk.toString('utf8')).slice(-STDERR_KEEP);
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** The tail of the plugin's stderr (when started with stderr: 'collect'). */
  stderrText(): string {
    return this.stderrBuf;
  }

  /**
   * Sends a request; resolves with its reply (result or error), rejects if the plugin fails.
   * `afterWrite` runs once the request is written, before the wait (to kill the plugin mid-call).
   * With wait 'spin' the whole wait happens inside this call, without yielding to the event loop.
   */
  request(method: string, params: unknown, timeoutMs?: number, afterWrite?: () => void): Promise<RpcReply> {
    if (this.failure) return Promise.reject(this.failure);
    const id = `cln:${method}#${this.nextId++}`;
    const text = JSON.stringify({ jsonrpc: '2.0', id, method, params }) + '\n\n';
    const reply = new Promise<RpcReply>((resolve, reject) => {
      const pending: Pending = { sentNs: process.hrtime.bigint(), resolve, reject };
      if (timeoutMs !== undefined && !this.spin) {
        pending.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new PluginTimeoutError(`no reply to ${id} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.pending.set(id, pending);
    });
    if (!this.spin) {
      this.child.stdin?.write(text);
      afterWrite?.();
    } else {
      this.spinUntilAnswered(id, Buffer.from(text), timeoutMs, afterWrite);
    }
    return reply;
  }

  /** lightningd's wait: write the request and poll for the reply with a zero timeout, again and again. */
  private spinUntilAnswered(id: string, text: Buffer, timeoutMs: number | undefined, afterWrite?: () => void): void {
    const spin = this.spin!;
    const deadline = timeoutMs === undefined ? Infinity : performance.now() + timeoutMs;
    let written = 0;
    let told = false;
    while (this.pending.has(id) && !this.failure) {
      if (written < text.length) {
        try {
          written += fs.writeSync(spin.stdin, text, written, text.length - written);
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code;
          if (code !== 'EAGAIN') {
            // EPIPE: the plugin is gone; its exit is reported on the event loop.
            this.fail(new PluginExitedError({ code: null, signal: null }, `plugin stdin: ${code ?? String(err)}`));
            return;
          }
        }
      }
      // At once once the whole request is written, before anything is read: the reply may already
      // be there (a fast plugin on a busy machine), and a kill mid-call must still come first.
      if (written === text.length && !told) {
        told = true;
        afterWrite?.();
        if (this.failure) return;
      }
      this.drainStdout();
      if (performance.now() > deadline) {
        const p = this.pending.get(id);
        this.pending.delete(id);
        p?.reject(new PluginTimeoutError(`no reply to ${id} within ${timeoutMs} ms`));
        return;
      }
    }
  }

  /** Reads whatever the plugin has written (never waits). */
  private drainStdout(): void {
    const spin = this.spin;
    if (!spin || this.failure) return;
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(spin.stdout, spin.buf, 0, spin.buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EAGAIN') return;
        if (code === 'EBADF') return; // closed after the exit
        throw err;
      }
      if (n === 0) {
        this.fail(new PluginExitedError({ code: null, signal: null }, 'plugin closed its stdout'));
        return;
      }
      this.onData(Buffer.from(spin.buf.subarray(0, n)));
    }
  }

  /** SIGKILLs the plugin now; whatever it still sends is ignored and pending requests fail. */
  kill(): void {
    this.fail(new PluginExitedError({ code: null, signal: 'SIGKILL' }));
    this.child.kill('SIGKILL');
  }

  /** Closes the plugin's stdin and waits for it to exit, SIGKILLing it after `timeoutMs`. */
  async close(timeoutMs: number): Promise<PluginExit> {
    this.child.stdin?.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  private fail(err: Error): void {
    if (this.failure) return;
    this.failure = err;
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
  }

  private protocolError(message: string): void {
    this.fail(new PluginProtocolError(message));
    this.child.kill('SIGKILL');
  }

  private onData(chunk: Buffer): void {
    if (this.failure) return;
    let texts: string[];
    try {
      texts = this.splitter.push(chunk);
    } catch (err) {
      return this.protocolError(`plugin stdout: ${(err as Error).message}`);
    }
    for (const text of texts) {
      const receivedNs = process.hrtime.bigint();
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(text) as Record<string, unknown>;
      } catch {
        return this.protocolError(`plugin sent invalid JSON: ${text.slice(0, 200)}`);
      }
      if (this.failure) return;
      if ('id' in msg) this.onReply(msg, receivedNs);
      else this.onNotification(msg);
    }
  }

  private onReply(msg: Record<string, unknown>, receivedNs: bigint): void {
    const id = msg.id;
    const pending = typeof id === 'string' ? this.pending.get(id) : undefined;
    if (!pending || 'method' in msg) {
      return this.protocolError(`plugin sent a reply for no pending request: ${JSON.stringify(id)}`);
    }
    if (!('result' in msg) && !('error' in msg)) {
      return this.protocolError(`plugin reply to ${String(id)} has neither result nor error`);
    }
    this.pending.delete(id as string);
    clearTimeout(pending.timer);
    pending.resolve({ result: msg.result, error: msg.error, latencyMs: Number(receivedNs - pending.sentNs) / 1e6 });
  }

  private onNotification(msg: Record<string, unknown>): void {
    const params = (msg.params ?? {}) as Record<string, unknown>;
    if (msg.method === 'log') {
      this.opts.onLog?.(String(params.level ?? 'info'), String(params.message ?? ''));
    } else if (!IGNORED_NOTIFICATIONS.has(String(msg.method))) {
      this.protocolError(`plugin sent an unknown notification: ${JSON.stringify(msg.method)}`);
    }
  }
}
