// The simulated lightningd's JSON-RPC socket, `<lightning-dir>/<network>/lightning-rpc` (the path
// `init` names): JSON-RPC 2.0 objects over a unix socket, answered from real Core Lightning answers
// (testdata/simulator/: listconfigs, getinfo) with the simulated node's directory, network and
// wallet put in; `stop` shuts the simulated node down cleanly. Unknown methods get lightningd's error (-32601, "Unknown command"). As lightningd,
// it serves nothing while a db_write hook is pending: requests wait until the hook is answered (a
// plugin that calls RPC from inside its hook therefore never gets an answer, as on a real node).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { JsonObjectSplitter } from '../util/jsonFraming.js';

export const RPC_FILE = 'lightning-rpc';
/** A request is a few hundred bytes; anything past this is refused and the connection closed. */
const MAX_REQUEST_BYTES = 1024 * 1024;
const RECORDED_DIR = fileURLToPath(new URL('../../../testdata/simulator/', import.meta.url));

export interface RpcSocketOptions {
  readonly networkDir: string;
  readonly network: string;
  /** The node's `wallet` setting (e.g. postgres://…); absent: the default sqlite wallet. */
  readonly walletDsn?: string;
  /** `stop` was called: lightningd shuts down cleanly. */
  readonly onStop?: () => void;
}

type Answer = { result: unknown } | { error: { code: number; message: string } };

function recorded(name: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(path.join(RECORDED_DIR, name), 'utf8')) as Record<string, unknown>;
}

export class SimulatedRpcSocket {
  private readonly server: net.Server;
  private readonly connections = new Set<net.Socket>();
  private held: (() => void)[] = [];
  private hookPending = false;
  private readonly answers: Record<string, () => unknown>;

  private constructor(
    readonly socketPath: string,
    opts: RpcSocketOptions,
  ) {
    this.server = net.createServer((socket) => this.serve(socket));
    const listconfigs = recorded('listconfigs.json') as { configs: Record<string, unknown> };
    const configs: Record<string, unknown> = {
      ...listconfigs.configs,
      'lightning-dir': { value_str: path.dirname(opts.networkDir), source: 'cmdline' },
      network: { value_str: opts.network, source: 'cmdline' },
      ...(opts.walletDsn !== undefined ? { wallet: { value_str: opts.walletDsn, source: 'cmdline' } } : {}),
    };
    const getinfo = { ...recorded('getinfo.json'), network: opts.network, 'lightning-dir': opts.networkDir };
    this.answers = {
      listconfigs: () => ({ configs }),
      getinfo: () => getinfo,
      stop: () => {
        setImmediate(() => opts.onStop?.());
        return 'Shutdown complete';
      },
    };
  }

  /** Listens at `<networkDir>/lightning-rpc` (a stale socket file from a killed lifetime is replaced). */
  static async start(opts: RpcSocketOptions): Promise<SimulatedRpcSocket> {
    const file = path.join(opts.networkDir, RPC_FILE);
    fs.rmSync(file, { force: true });
    const rpc = new SimulatedRpcSocket(file, opts);
    await new Promise<void>((resolve, reject) => {
      rpc.server.once('error', reject);
      rpc.server.listen(file, () => resolve());
    });
    return rpc;
  }

  /** A db_write hook is pending: requests wait until `hookAnswered`. */
  hookSent(): void {
    this.hookPending = true;
  }

  hookAnswered(): void {
    this.hookPending = false;
    const held = this.held;
    this.held = [];
    for (const answer of held) answer();
  }

  async close(): Promise<void> {
    for (const s of this.connections) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    fs.rmSync(this.socketPath, { force: true });
  }

  private serve(socket: net.Socket): void {
    this.connections.add(socket);
    socket.on('close', () => this.connections.delete(socket));
    socket.on('error', () => socket.destroy());
    const splitter = new JsonObjectSplitter(MAX_REQUEST_BYTES);
    socket.on('data', (chunk: Buffer) => {
      let texts: string[];
      try {
        texts = splitter.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const text of texts) {
        const answer = (): void => {
          if (!socket.destroyed) socket.write(JSON.stringify(this.answer(text)) + '\n');
        };
        if (this.hookPending) this.held.push(answer);
        else answer();
      }
    });
  }

  private answer(text: string): Record<string, unknown> {
    let req: { id?: unknown; method?: unknown };
    try {
      req = JSON.parse(text) as typeof req;
    } catch {
      return { jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } };
    }
    const method = typeof req.method === 'string' ? req.method : '';
    const handler = this.answers[method];
    const a: Answer = handler ? { result: handler() } : { error: { code: -32601, message: `Unknown command '${method.slice(0, 100)}'` } };
    return { jsonrpc: '2.0', id: req.id ?? null, ...a };
  }
}
