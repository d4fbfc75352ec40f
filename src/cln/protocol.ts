// The plugin side of Core Lightning's plugin protocol: JSON-RPC 2.0 objects on stdin/stdout,
// the manifest, the only db_write answer lightningd accepts, and log notifications.

import { isU32 } from '../journal/dataVersion.js';

export type JsonRpcId = string | number;

export interface JsonRpcRequest {
  readonly jsonrpc: '2.0';
  readonly id?: JsonRpcId;
  readonly method: string;
  readonly params?: unknown;
}

export const STATUS_METHOD = 'lnbackup-status';

export const MANIFEST = {
  options: [],
  rpcmethods: [
    {
      name: STATUS_METHOD,
      usage: '',
      description: 'lnbackup: last durable version, vault, generation, snapshot and hook latency',
    },
  ],
  hooks: [{ name: 'db_write' }],
  // Keep false: a plugin started later would miss the history (reference/cln.md).
  dynamic: false,
};

/** lightningd's log levels. */
export type LogLevel = 'debug' | 'info' | 'unusual' | 'broken';

export function result(id: JsonRpcId, value: unknown): string {
  return JSON.stringify({ jsonrpc: '2.0', id, result: value }) + '\n\n';
}

export function error(id: JsonRpcId, code: number, message: string): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code, message } }) + '\n\n';
}

export function logNotification(level: LogLevel, message: string): string {
  return JSON.stringify({ jsonrpc: '2.0', method: 'log', params: { level, message } }) + '\n\n';
}

/** The one reply that lets lightningd commit. */
export const CONTINUE = { result: 'continue' };
/** Makes lightningd abort without committing (reference/cln.md: "returned failed db_write"). */
export const ABORT = { result: 'abort' };

export interface DbWriteParams {
  readonly dataVersion: number;
  readonly writes: readonly string[];
}

/** Checks a db_write call's params; returns null when they are not what lightningd sends. */
export function parseDbWriteParams(params: unknown): DbWriteParams | null {
  if (typeof params !== 'object' || params === null) return null;
  const p = params as { data_version?: unknown; writes?: unknown };
  const v = p.data_version;
  if (!isU32(v)) return null;
  if (!Array.isArray(p.writes) || !p.writes.every((w) => typeof w === 'string')) return null;
  return { dataVersion: v, writes: p.writes as string[] };
}
