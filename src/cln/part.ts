// What one part of the lnbackup-cln plugin brings to the router (plugin.ts): its entries in the
// manifest, the hooks and RPC methods it answers, what it does at `init`, its typed status and its
// close. Parts know nothing of stdio or of each other; the router hands each request to the part
// that declared it (docs/CORE-LIGHTNING.md, "The plugin protocol").
import type { LogLevel } from '../util/log.js';

/** An RPC method as the manifest lists it. */
export interface RpcMethodEntry {
  readonly name: string;
  readonly usage: string;
  readonly description: string;
}

/** A plugin option as the manifest lists it. */
export interface OptionEntry {
  readonly name: string;
  readonly type: 'string' | 'int' | 'bool' | 'flag';
  readonly default?: string | number | boolean;
  readonly description: string;
}

/** What a handler answers: the JSON-RPC `result`. */
export type Handler = (params: unknown) => Promise<unknown>;

/** The `init` parameters a part may use (docs/CORE-LIGHTNING.md, "Start-up"). */
export interface InitParams {
  /** lightningd's network directory (`configuration.lightning-dir`; already the network's). */
  readonly lightningDir: string | null;
  /** The JSON-RPC socket's file name in lightningDir (`configuration.rpc-file`). */
  readonly rpcFile: string | null;
  readonly network: string | null;
  /** The plugin options lightningd passes (`options`). */
  readonly options: Readonly<Record<string, unknown>>;
}

/** What the router gives every part. */
export interface PartContext {
  /** Logs through lightningd (a `log` notification, prefixed `lnbackup:`). */
  log(level: LogLevel, message: string): void;
  /** The status changed: lnbackup-status.json is rewritten soon (at most once a second). */
  statusChanged(): void;
  /** The status changed in a way an operator must see now (a stall, a failure): rewritten at once. */
  statusUrgent(): void;
  /** Aborted when the plugin shuts down. */
  readonly shutdown: AbortSignal;
}

export interface PluginPart<Status extends object> {
  readonly name: string;
  readonly options?: readonly OptionEntry[];
  readonly rpcMethods?: readonly (RpcMethodEntry & { readonly handle: Handler })[];
  /** Hooks by name; the router calls a hook's handler for one request at a time, in order (main.ts). */
  readonly hooks?: Readonly<Record<string, Handler>>;
  /** lightningd sent `init` (it may come after the first hooks: never rely on it for the hot path). */
  init?(params: InitParams): void;
  status(): Status;
  /** Stops; the plugin is shutting down. */
  close(): Promise<void>;
}
