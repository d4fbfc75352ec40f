// `lnbackup init`: binds a node to a vault. With lightningd stopped it derives the node id and key,
// creates the vault (or reopens this node's own), takes the first snapshot of lightningd.sqlite3
// (none yet on a brand-new node: the vault then starts from the migrations at data_version 1), and
// writes the plugin's configuration file into the network directory.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import {
  CONFIG_FILE,
  CONFIG_VERSION,
  DEFAULT_DB_FILE,
  DEFAULT_HSM_SECRET_FILE,
  configPath,
  writeConfig,
  type DestinationSettings,
  type LocalVaultMode,
  type PluginConfig,
} from '../cln/config.js';
import { versionDistance } from '../journal/dataVersion.js';
import { Journal } from '../journal/journal.js';
import type { RetentionSettings } from '../journal/retention.js';
import { withConsistentSnapshot } from '../journal/snapshotSource.js';
import type { KeyOrigin } from '../keys/rootKey.js';
import type { VaultKeys } from '../vault/keys.js';
import { WrongKeyError, VaultError } from '../vault/errors.js';
import { createIdentity, openIdentity, vaultExists, DEFAULT_SEGMENT_BYTES } from '../vault/identity.js';
import { loadKeys } from './keyOptions.js';
import type { ProgressFn } from './progress.js';

export interface InitOptions {
  readonly lightningDir: string;
  readonly network: string;
  readonly vault: string;
  readonly keyFile?: string;
  readonly nodeId?: string;
  readonly force?: boolean;
  readonly segmentBytes?: number;
  readonly failureRetrySeconds?: number;
  /** Destinations besides the local vault, and the durability policy (written to the configuration). */
  readonly destinations?: Omit<DestinationSettings, 'localVault'> & { readonly localVault?: LocalVaultMode };
  /** Compaction and retention settings that differ from the defaults. */
  readonly retention?: Partial<RetentionSettings>;
  readonly onProgress?: ProgressFn;
}

export interface InitResult {
  readonly nodeId: string | null;
  readonly networkDir: string;
  readonly vault: string;
  readonly vaultId: string;
  readonly vaultCreated: boolean;
  readonly generation: number;
  readonly dataVersion: number;
  readonly dbBytes: number;
  readonly config: string;
  readonly plugin: string;
  readonly warnings: string[];
}

export const PLUGIN_PATH = fileURLToPath(new URL('../cln/main.js', import.meta.url));

/** A node whose vault holds its first snapshot; `commit()` writes the plugin configuration. */
export interface PreparedNode {
  readonly result: InitResult;
  /** The vault keys (for pushing the vault to servers). */
  readonly keys: VaultKeys;
  commit(): void;
}

/** Sets a node up in one step: prepareNode, then its configuration. */
export function initNode(o: InitOptions): InitResult {
  const prepared = prepareNode(o);
  prepared.commit();
  return prepared.result;
}

/**
 * Everything up to the configuration file: checks, vault, first snapshot. The caller may do more
 * (push the vault to servers) before committing, so a node is configured only once its
 * destinations hold the snapshot.
 */
export function prepareNode(o: InitOptions): PreparedNode {
  const networkDir = path.resolve(o.lightningDir, o.network);
  const vault = path.resolve(o.vault);
  if (!fs.existsSync(networkDir)) {
    throw new VaultError(
      `${networkDir} does not exist. Create it and the node's hsm_secret first (lightning-hsmtool generatehsm ${path.join(networkDir, DEFAULT_HSM_SECRET_FILE)}).`,
    );
  }
  refuseIfLightningdRuns(o.lightningDir, o.network);
  if (fs.existsSync(configPath(networkDir)) && !o.force) {
    throw new VaultError(`${configPath(networkDir)} already exists: this node is already set up for lnbackup. Pass --force to replace its configuration.`);
  }
  const keyOrigin: KeyOrigin = o.keyFile ? { keyFile: path.resolve(o.keyFile) } : { hsmSecret: path.join(networkDir, DEFAULT_HSM_SECRET_FILE) };
  const { keys, nodeId: derivedNodeId, warnings } = loadKeys(keyOrigin);
  if (derivedNodeId && o.nodeId && derivedNodeId !== o.nodeId) {
    throw new VaultError(`the key gives node id ${derivedNodeId} but --node-id says ${o.nodeId}`);
  }
  const nodeId = derivedNodeId ?? o.nodeId ?? null;
  const vaultCreated = !vaultExists(vault);
  const identity = vaultCreated ? createVault(vault, keys, nodeId, o.segmentBytes) : openOwnVault(vault, keys, nodeId);
  const dbPath = path.join(networkDir, DEFAULT_DB_FILE);
  rollBackHotJournal(dbPath);
  const journal = Journal.open(vault, keys, dbPath);
  try {
    const held = journal.status();
    const nodeVersion = withConsistentSnapshot(dbPath, (view) => view.dataVersion);
    const behind = held.version === null ? 0 : versionDistance(held.version, nodeVersion);
    // One behind an unconfirmed (in-flight) transaction is fine: that transaction never committed.
    if (behind < -1 || (behind === -1 && held.versionCommitted)) {
      throw new VaultError(
        `the node's database is at data_version ${nodeVersion}, older than the vault (${held.version}). ` +
          `Refusing to start a backup from a stale database: restore it first with 'lnbackup restore --vault ${vault} --to ${dbPath} --force'.`,
      );
    }
    const taken = journal.takeSnapshot(o.onProgress);
    const d = o.destinations;
    const config: PluginConfig = {
      configVersion: CONFIG_VERSION,
      vault,
      key: keyOrigin,
      database: DEFAULT_DB_FILE,
      nodeId,
      vaultId: identity.vaultId,
      failureRetrySeconds: o.failureRetrySeconds ?? 30,
      ...(d
        ? {
            remotes: d.remotes,
            replicas: d.replicas.map((r) => path.resolve(r)),
            policy: d.policy,
            stallLimitSeconds: d.stallLimitSeconds,
            localVault: d.localVault ?? 'durable',
          }
        : {}),
      ...(o.retention && Object.keys(o.retention).length > 0 ? { retention: o.retention } : {}),
    };
    const result: InitResult = {
      nodeId,
      networkDir,
      vault,
      vaultId: identity.vaultId,
      vaultCreated,
      generation: taken.generation,
      dataVersion: taken.dataVersion,
      dbBytes: taken.dbBytes,
      config: path.join(networkDir, CONFIG_FILE),
      plugin: PLUGIN_PATH,
      warnings,
    };
    return { result, keys, commit: () => writeConfig(networkDir, config) };
  } finally {
    journal.close();
  }
}

function createVault(vault: string, keys: Parameters<typeof createIdentity>[1], nodeId: string | null, segmentBytes?: number) {
  if (fs.existsSync(vault) && fs.readdirSync(vault).length > 0) {
    throw new VaultError(`${vault} exists, is not empty and is not an lnbackup vault; choose an empty or new directory`);
  }
  fs.mkdirSync(vault, { recursive: true, mode: 0o700 });
  return createIdentity(vault, keys, nodeId, segmentBytes ?? DEFAULT_SEGMENT_BYTES);
}

function openOwnVault(vault: string, keys: Parameters<typeof openIdentity>[1], nodeId: string | null) {
  try {
    const id = openIdentity(vault, keys);
    if (id.nodeId && nodeId && id.nodeId !== nodeId) throw new WrongKeyError(`the vault at ${vault} belongs to node ${id.nodeId}, not ${nodeId}`);
    return id;
  } catch (err) {
    if (err instanceof WrongKeyError) {
      throw new VaultError(`refusing: ${err.message}. A vault serves one node; give this node its own --vault.`);
    }
    throw err;
  }
}

/**
 * A lightningd that died mid-transaction leaves a hot journal, which its next start rolls back.
 * lightningd is stopped here, so do what it would do: open the database read-write once.
 */
function rollBackHotJournal(dbPath: string): void {
  if (!fs.existsSync(`${dbPath}-journal`) || !fs.existsSync(dbPath)) return;
  const db = new Database(dbPath);
  try {
    db.prepare('SELECT count(*) FROM sqlite_master').get();
  } finally {
    db.close();
  }
}

/** lightningd writes <lightning-dir>/lightningd-<network>.pid while it runs. */
/** The pid of the lightningd running for this network (from its pid file), or null when none runs. */
export function lightningdPid(lightningDir: string, network: string): number | null {
  const pidFile = path.join(lightningDir, `lightningd-${network}.pid`);
  if (!fs.existsSync(pidFile)) return null;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').slice(0, 32).trim());
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    process.kill(pid, 0);
  } catch (err) {
    // EPERM: it exists but belongs to another user (lightningd's): it runs.
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return null;
  }
  return pid;
}

export function refuseIfLightningdRuns(lightningDir: string, network: string): void {
  const pid = lightningdPid(lightningDir, network);
  if (pid !== null) {
    throw new VaultError(`lightningd is running (pid ${pid}, ${path.join(lightningDir, `lightningd-${network}.pid`)}); stop it before 'lnbackup init'`);
  }
}
