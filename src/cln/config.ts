// The plugin's configuration file, written by `lnbackup init` into the node's network directory.
// lightningd sends db_write calls before the plugin's `init` (migrations at start-up), so the
// plugin cannot take its settings from plugin options: it reads this file from its working
// directory, which lightningd sets to <lightning-dir>/<network>.
import fs from 'node:fs';
import path from 'node:path';
import { readBoundedFile, writeFileAtomic } from '../util/durableFs.js';
import type { KeyOrigin } from '../keys/rootKey.js';
import type { RetentionSettings } from '../journal/retention.js';

export const CONFIG_FILE = 'lnbackup.json';
export const CONFIG_VERSION = 1;
export const DEFAULT_DB_FILE = 'lightningd.sqlite3';
export const DEFAULT_HSM_SECRET_FILE = 'hsm_secret';

export interface PluginConfig {
  readonly configVersion: number;
  /** Absolute path of the vault directory. */
  readonly vault: string;
  /** Where the root key comes from; relative paths are relative to the network directory. */
  readonly key: KeyOrigin;
  /** The node's database file, relative to the network directory unless absolute. */
  readonly database: string;
  readonly nodeId: string | null;
  readonly vaultId: string;
  /** How long a failing vault write is retried (the node waits) before lightningd is stopped. */
  readonly failureRetrySeconds: number;
  /** lnbackup servers (lnbackup://<pubkey>@host:port) that hold every record. */
  readonly remotes?: readonly string[];
  /** Live sqlite replicas (absolute paths). */
  readonly replicas?: readonly string[];
  /** 'all' (default) or 'quorum=K'. */
  readonly policy?: string;
  /** Stop lightningd once a call has waited this long for its destinations (null: wait forever). */
  readonly stallLimitSeconds?: number | null;
  /** 'durable' (default): the local vault is a destination; 'cache': it only feeds the others. */
  readonly localVault?: LocalVaultMode;
  /** When to compact and what to keep (defaults: DEFAULT_RETENTION). */
  readonly retention?: Partial<RetentionSettings>;
  /** PostgreSQL nodes: how often the replication is checked (default 10 s). */
  readonly pgCheckIntervalSeconds?: number;
  /** PostgreSQL nodes: stop lightningd after this long not zero-loss (null or absent: never). */
  readonly pgUnprotectedLimitSeconds?: number | null;
  /** Serve Prometheus metrics at this loopback host:port (absent: no metrics). */
  readonly metrics?: string;
}

export const DEFAULT_RETENTION: RetentionSettings = { compactRatio: 0.25, compactMinBytes: 64 * 1024, keepGenerations: 1, keepSeconds: 0 };

export function retentionSettings(c: PluginConfig): RetentionSettings {
  return { ...DEFAULT_RETENTION, ...(c.retention ?? {}) };
}

/** Why a retention setting is not acceptable, or null. */
export function retentionProblem(r: Partial<RetentionSettings>): string | null {
  if (r.compactRatio !== undefined && !(typeof r.compactRatio === 'number' && r.compactRatio > 0 && r.compactRatio <= 1000))
    return 'compactRatio must be a number above 0';
  if (r.compactMinBytes !== undefined && !(Number.isSafeInteger(r.compactMinBytes) && r.compactMinBytes >= 0))
    return 'compactMinBytes must be a whole number of bytes';
  if (r.keepGenerations !== undefined && !(Number.isSafeInteger(r.keepGenerations) && r.keepGenerations >= 1)) return 'keepGenerations must be 1 or more';
  if (r.keepSeconds !== undefined && !(Number.isSafeInteger(r.keepSeconds) && r.keepSeconds >= 0)) return 'keepSeconds must be a whole number of seconds';
  return null;
}

export type LocalVaultMode = 'durable' | 'cache';

/** The destinations part of a configuration, with defaults filled in. */
export interface DestinationSettings {
  readonly remotes: readonly string[];
  readonly replicas: readonly string[];
  readonly policy: string;
  readonly stallLimitSeconds: number | null;
  readonly localVault: LocalVaultMode;
}

export function destinationSettings(c: PluginConfig): DestinationSettings {
  return {
    remotes: c.remotes ?? [],
    replicas: c.replicas ?? [],
    policy: c.policy ?? 'all',
    stallLimitSeconds: c.stallLimitSeconds ?? null,
    localVault: c.localVault ?? 'durable',
  };
}

export class ConfigError extends Error {}

export function configPath(networkDir: string): string {
  return path.join(networkDir, CONFIG_FILE);
}

export function writeConfig(networkDir: string, config: PluginConfig): void {
  writeFileAtomic(configPath(networkDir), JSON.stringify(config, null, 2) + '\n', 0o600);
}

export function readConfig(networkDir: string): PluginConfig {
  const file = configPath(networkDir);
  if (!fs.existsSync(file)) {
    throw new ConfigError(
      `no ${CONFIG_FILE} in ${networkDir}: this node has no lnbackup vault. ` +
        `Stop lightningd and run 'lnbackup init --lightning-dir <dir> --network <net> --vault <path>'.`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readBoundedFile(file, 64 * 1024).toString('utf8'));
  } catch (err) {
    throw new ConfigError(`${file} is not valid JSON (${(err as Error).message.split('\n')[0]}); re-run 'lnbackup init --force'`);
  }
  const c = raw as Partial<Record<keyof PluginConfig, unknown>>;
  const key = c.key as Record<string, unknown> | undefined;
  const keyOk = !!key && (typeof key.hsmSecret === 'string' || typeof key.keyFile === 'string');
  if (
    c.configVersion !== CONFIG_VERSION ||
    typeof c.vault !== 'string' ||
    !keyOk ||
    typeof c.database !== 'string' ||
    typeof c.vaultId !== 'string' ||
    typeof c.failureRetrySeconds !== 'number' ||
    !optionalStrings(c.remotes) ||
    !optionalStrings(c.replicas) ||
    (c.policy !== undefined && typeof c.policy !== 'string') ||
    (c.stallLimitSeconds !== undefined && c.stallLimitSeconds !== null && typeof c.stallLimitSeconds !== 'number') ||
    (c.localVault !== undefined && c.localVault !== 'durable' && c.localVault !== 'cache') ||
    (c.retention !== undefined && (typeof c.retention !== 'object' || c.retention === null || retentionProblem(c.retention) !== null)) ||
    !optionalSeconds(c.pgCheckIntervalSeconds, false) ||
    !optionalSeconds(c.pgUnprotectedLimitSeconds, true) ||
    (c.metrics !== undefined && typeof c.metrics !== 'string')
  ) {
    throw new ConfigError(`${file} is not an lnbackup ${CONFIG_VERSION} configuration; re-run 'lnbackup init --force'`);
  }
  return raw as PluginConfig;
}

/** Absent, or a whole number of seconds from 1 to a week (or null where that means "never"). */
function optionalSeconds(v: unknown, nullable: boolean): boolean {
  return v === undefined || (nullable && v === null) || (typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 7 * 24 * 3600);
}

function optionalStrings(v: unknown): boolean {
  return v === undefined || (Array.isArray(v) && v.every((x) => typeof x === 'string'));
}

export function resolveIn(networkDir: string, p: string): string {
  return path.resolve(networkDir, p);
}
