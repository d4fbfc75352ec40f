// The plugin side of Core Lightning's plugin protocol (docs/CORE-LIGHTNING.md, "The plugin
// protocol"): JSON-RPC 2.0 objects on stdin/stdout, the manifest's fixed part, the init
// parameters, the only db_write answer lightningd accepts, and log notifications.

import { isU32 } from '../journal/dataVersion.js';
import type { LogLevel } from '../util/log.js';
import type { InitParams } from './part.js';

export type JsonRpcId = string | number;

export interface JsonRpcRequest {
  readonly jsonrpc: '2.0';
  readonly id?: JsonRpcId;
  readonly method: string;
  readonly params?: unknown;
}

export const STATUS_METHOD = 'lnbackup-status';

/** The manifest's own entries; the parts add theirs (plugin.ts). */
export const MANIFEST_BASE = {
  rpcmethods: [
    {
      name: STATUS_METHOD,
      usage: '',
      description: 'lnbackup: last durable version, vault, generation, snapshot and hook latency',
    },
  ],
  // Keep false: a plugin started later would miss the history (docs/CORE-LIGHTNING.md, "Start-up").
  dynamic: false,
} as const;

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
/** Makes lightningd abort without committing (docs/CORE-LIGHTNING.md, "Answers to db_write"). */
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

/** Reads init's params; anything missing or of the wrong type is null (or empty), never a throw. */
export function parseInitParams(params: unknown): InitParams {
  const p = (typeof params === 'object' && params !== null ? params : {}) as { options?: unknown; configuration?: unknown };
  const c = (typeof p.configuration === 'object' && p.configuration !== null ? p.configuration : {}) as Record<string, unknown>;
  const text = (v: unknown): string | null => (typeof v === 'string' ? v : null);
  const options = typeof p.options === 'object' && p.options !== null && !Array.isArray(p.options) ? (p.options as Record<string, unknown>) : {};
  return { lightningDir: text(c['lightning-dir']), rpcFile: text(c['rpc-file']), network: text(c.network), options };
}
