// `lnbackup doctor`: checks a node's whole backup setup and says, for each thing that needs
// attention, what is wrong and how to fix it. Read-only: it opens the database and the vault for
// reading, asks each server what it holds (never creating anything there), and writes nothing.
// The checks, in order: lightningd's config (the plugin line, no second db_write plugin, the wallet),
// lnbackup.json, the key, the vault (identity, writable, free space, not on the database's disk),
// the database level with the vault, each server (reachable, key allowed, level with the vault, the
// same chain), each replica, retention, and, when lightningd runs, the plugin's status file.
import fs from 'node:fs';
import path from 'node:path';
import { configPath, readConfig, resolveIn, retentionProblem, retentionSettings, destinationSettings, type PluginConfig } from '../cln/config.js';
import { loadNodeKeys } from '../cln/backup/nodeKeys.js';
import { STATUS_FILE } from '../cln/statusFile.js';
import { PLUGIN_PATH, lightningdPid } from '../cli/initNode.js';
import { ServerClient, ServerError, type VaultState } from '../destinations/serverClient.js';
import { ErrorCode } from '../protocol/messages.js';
import { vaultTail } from '../destinations/transfer.js';
import { versionDistance } from '../journal/dataVersion.js';
import { withConsistentSnapshot } from '../journal/snapshotSource.js';
import { vaultStatus } from '../restore/status.js';
import { openIdentity, vaultIdBytes } from '../vault/identity.js';
import type { VaultKeys } from '../vault/keys.js';
import { pluginFiles, readLightningdConfig } from './lightningdConfig.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface Check {
  readonly check: string;
  readonly status: CheckStatus;
  readonly detail: string;
  /** What to do about it (for warn and fail). */
  readonly fix?: string;
}

export interface DoctorOptions {
  readonly lightningDir: string;
  readonly network: string;
  /** lightningd's --conf, when the node is started with one. */
  readonly conf?: string;
  /** Per server: connection and answers (default 10 s). */
  readonly serverTimeoutMs?: number;
  /** Called as each check starts (for progress on a terminal). */
  readonly onCheck?: (name: string) => void;
}

export interface DoctorReport {
  /** True when every check is ok or skipped. */
  readonly ok: boolean;
  readonly lightningdRunning: boolean;
  readonly checks: readonly Check[];
}

/** Plugin files and plugin sources past this are not scanned for a db_write hook. */
const MAX_PLUGIN_SCAN_BYTES = 4 * 1024 * 1024;
/** Below this much free space on the vault's filesystem, warn (a full disk stalls the node). */
const LOW_FREE_BYTES = 1024 ** 3;

function isOurPlugin(file: string): boolean {
  const real = (p: string): string => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  return real(file) === real(PLUGIN_PATH) || path.basename(file) === 'lnbackup-cln' || /lnbackup\/dist\/src\/cln\/main\.js$/.test(file);
}

/** True when a plugin file (or the script it is) mentions the db_write hook: a second backup plugin. */
function mentionsDbWrite(file: string): boolean {
  try {
    const st = fs.statSync(file);
    if (!st.isFile() || st.size > MAX_PLUGIN_SCAN_BYTES) return false;
    return fs.readFileSync(file).includes('db_write');
  } catch {
    return false;
  }
}

function checkLightningdConfig(o: DoctorOptions, networkDir: string): Check[] {
  const config = readLightningdConfig(o.lightningDir, o.network, o.conf);
  const where =
    config.files.length > 0
      ? config.files.join(', ')
      : `no config file (looked for ${path.join(o.lightningDir, 'config')} and ${path.join(networkDir, 'config')})`;
  const checks: Check[] = config.problems.map((p) => ({
    check: 'lightningd config',
    status: 'warn',
    detail: p,
    fix: 'fix or remove the file, as lightningd would refuse it too',
  }));
  const plugins = pluginFiles(config, o.lightningDir);
  const ours = plugins.filter((p) => isOurPlugin(p.file));
  const disabled = config.lines.filter((l) => l.key === 'disable-plugin' && /lnbackup-cln|main\.js$/.test(l.value));
  const line = `plugin=${PLUGIN_PATH}`;
  if (ours.length === 0) {
    checks.push({
      check: 'plugin line',
      status: 'fail',
      detail: `lightningd's config does not load lnbackup-cln (${where})`,
      fix: `add this line to ${config.files[0] ?? path.join(o.lightningDir, 'config')} and restart lightningd: ${line}`,
    });
  } else if (ours.length > 1) {
    checks.push({
      check: 'plugin line',
      status: 'fail',
      detail: `lnbackup-cln is loaded ${ours.length} times (${ours.map((p) => p.at).join(', ')})`,
      fix: 'keep exactly one plugin line for lnbackup-cln',
    });
  } else if (!fs.existsSync(ours[0].file)) {
    checks.push({
      check: 'plugin line',
      status: 'fail',
      detail: `${ours[0].at} loads ${ours[0].file}, which does not exist`,
      fix: `point it at the installed plugin: ${line}`,
    });
  } else {
    checks.push({ check: 'plugin line', status: 'ok', detail: `${ours[0].at} loads ${ours[0].file}` });
  }
  for (const d of disabled)
    checks.push({ check: 'plugin line', status: 'fail', detail: `${d.at} disables ${d.value}`, fix: 'remove that disable-plugin line' });
  const others = plugins.filter((p) => !isOurPlugin(p.file) && mentionsDbWrite(p.file));
  checks.push(
    others.length === 0
      ? { check: 'other db_write plugins', status: 'ok', detail: 'no other plugin in the config mentions the db_write hook' }
      : {
          check: 'other db_write plugins',
          status: 'warn',
          detail: `${others.map((p) => `${p.file} (${p.at})`).join(', ')} mention${others.length === 1 ? 's' : ''} the db_write hook: a second backup of the database can disagree with this one about what was committed`,
          fix: 'keep one db_write backup plugin: remove or disable the other',
        },
  );
  const wallet = config.lines.filter((l) => l.key === 'wallet').pop();
  if (wallet && /^postgres(ql)?:/.test(wallet.value)) {
    checks.push({
      check: 'wallet',
      status: 'warn',
      detail: `${wallet.at}: the database is in PostgreSQL; db_write carries no statements there and lnbackup cannot restore it`,
      fix: "protect it with PostgreSQL's synchronous replication (see the README's PostgreSQL section)",
    });
  }
  return checks;
}

function checkVault(config: PluginConfig, keys: VaultKeys, dbPath: string): Check[] {
  const checks: Check[] = [];
  try {
    openIdentity(config.vault, keys);
  } catch (err) {
    return [
      {
        check: 'vault',
        status: 'fail',
        detail: `${config.vault}: ${(err as Error).message}`,
        fix: "mount the vault's disk, or restore the vault (e.g. `lnbackup restore --from <server>`), then run doctor again",
      },
    ];
  }
  try {
    fs.accessSync(config.vault, fs.constants.W_OK);
    checks.push({ check: 'vault', status: 'ok', detail: `${config.vault} is this node's vault and writable` });
  } catch {
    checks.push({
      check: 'vault',
      status: 'fail',
      detail: `${config.vault} is not writable by this user`,
      fix: "run lightningd as the vault's owner, or chown the vault to lightningd's user",
    });
  }
  const free = fs.statfsSync(config.vault);
  const freeBytes = free.bavail * free.bsize;
  checks.push(
    freeBytes < LOW_FREE_BYTES
      ? {
          check: 'vault free space',
          status: 'warn',
          detail: `${(freeBytes / 1024 ** 2).toFixed(0)} MiB free on the vault's filesystem`,
          fix: 'free space there: when it is full, the node waits (and stops at the stall limit)',
        }
      : { check: 'vault free space', status: 'ok', detail: `${(freeBytes / 1024 ** 3).toFixed(1)} GiB free` },
  );
  const sameDevice = fs.statSync(config.vault).dev === fs.statSync(path.dirname(dbPath)).dev;
  const d = destinationSettings(config);
  const elsewhere = d.remotes.length + d.replicas.length;
  checks.push(
    !sameDevice
      ? { check: 'vault device', status: 'ok', detail: "the vault is on another filesystem than the node's database" }
      : {
          check: 'vault device',
          status: elsewhere > 0 ? 'ok' : 'warn',
          detail: `the vault is on the same filesystem as the node's database${elsewhere > 0 ? `; ${elsewhere} other destination(s) hold the backup too` : ': one disk failure loses both'}`,
          ...(elsewhere > 0
            ? {}
            : {
                fix: 'move the vault to another disk (`lnbackup init --force --vault <other disk>`), or add a server or replica (`lnbackup destination add`)',
              }),
        },
  );
  return checks;
}

function checkDatabaseLevel(config: PluginConfig, keys: VaultKeys, dbPath: string, running: boolean): Check {
  let dbVersion: number;
  try {
    dbVersion = withConsistentSnapshot(dbPath, (v) => v.dataVersion);
  } catch (err) {
    return { check: 'database', status: 'skip', detail: `${dbPath} could not be read now (${(err as Error).message})` };
  }
  const latest = vaultStatus(config.vault, keys).latest;
  if (latest === null || latest.version === null)
    return { check: 'database', status: 'ok', detail: `the vault holds no version yet; the database is at data_version ${dbVersion}` };
  const behind = versionDistance(latest.version, dbVersion);
  if (behind === 0 || (behind === -1 && latest.inFlight)) {
    return {
      check: 'database',
      status: 'ok',
      detail: `the vault is at data_version ${latest.version}${latest.inFlight ? ' (the last one in flight)' : ''}, level with the database (${dbVersion})`,
    };
  }
  if (behind > 0) {
    return {
      check: 'database',
      status: 'fail',
      detail: `the database is at data_version ${dbVersion} but the vault only at ${latest.version}: ${behind} transaction(s) were committed without a backup`,
      fix: running
        ? "the plugin is not running in this lightningd: check the plugin line and lightningd's log"
        : 'start lightningd with the plugin; it refuses to run on a database ahead of its vault only if the vault is damaged (then `lnbackup verify`)',
    };
  }
  return {
    check: 'database',
    status: 'fail',
    detail: `the database is at data_version ${dbVersion}, older than the vault (${latest.version}): it is a stale copy`,
    fix: `never start lightningd on it: restore first with 'lnbackup restore --vault ${config.vault} --to ${dbPath} --force'`,
  };
}

async function checkServer(url: string, keys: VaultKeys, vaultDir: string, running: boolean, timeoutMs: number): Promise<Check> {
  const check = `server ${url}`;
  const vaultId = vaultIdBytes(openIdentity(vaultDir, keys));
  let client: ServerClient;
  try {
    client = await ServerClient.connect(url, keys.transport, { handshakeTimeoutMs: timeoutMs });
  } catch (err) {
    return {
      check,
      status: 'fail',
      detail: (err as Error).message,
      fix: 'check that the server runs and is reachable from here, and that the URL (its key) is the one it prints',
    };
  }
  try {
    let held: VaultState;
    try {
      // An empty identity opens only a vault the server already holds: doctor never creates one.
      held = await client.openVault(vaultId, Buffer.alloc(0));
    } catch (err) {
      if (!(err instanceof ServerError && err.code === ErrorCode.UnknownVault)) throw err;
      return {
        check,
        status: 'fail',
        detail: `the server holds no copy of vault ${vaultId.toString('hex')}`,
        fix: 'with lightningd stopped: `lnbackup destination remove … --remote <url>`, then `lnbackup destination add … --remote <url>` uploads the vault again',
      };
    }
    const local = vaultTail(vaultDir, vaultId);
    if (held.lastSeq < local.lastSeq) {
      const n = local.lastSeq - held.lastSeq;
      return running
        ? {
            check,
            status: 'warn',
            detail: `the server is ${n} record(s) behind the local vault (the plugin sends them while it runs)`,
            fix: "if it stays behind, see the plugin's destinations in `lightning-cli lnbackup-status`",
          }
        : {
            check,
            status: 'warn',
            detail: `the server is ${n} record(s) behind the local vault; the plugin sends them when lightningd starts`,
            fix: 'start lightningd (the plugin catches the server up before it counts)',
          };
    }
    if (held.lastSeq > local.lastSeq) {
      return {
        check,
        status: 'fail',
        detail: `the server holds records up to ${held.lastSeq}, past the local vault's ${local.lastSeq}: the local vault lost its newest records`,
        fix: 'with lightningd stopped, restore the database from the server (`lnbackup restore --from <url>`) and the vault with it, then run doctor again',
      };
    }
    if (!held.lastHash.equals(local.lastHash)) {
      return {
        check,
        status: 'fail',
        detail: `the server's record ${local.lastSeq} is not the local vault's: the two copies diverged`,
        fix: 'remove the server (`lnbackup destination remove`) and add it again with a new vault there, after checking which copy is right with `lnbackup verify`',
      };
    }
    return { check, status: 'ok', detail: `key allowed; level with the local vault (record ${local.lastSeq}, the same chain)` };
  } catch (err) {
    return { check, status: 'fail', detail: (err as Error).message, fix: "see the server's log (`lnbackup server status` on its machine)" };
  } finally {
    client.close();
  }
}

function checkReplica(file: string, dbPath: string, running: boolean): Check {
  const check = `replica ${file}`;
  if (!fs.existsSync(file))
    return {
      check,
      status: 'fail',
      detail: 'the replica file does not exist',
      fix: 'mount its disk; the plugin makes it again from the vault when lightningd starts',
    };
  try {
    const replica = withConsistentSnapshot(file, (v) => v.dataVersion);
    const db = withConsistentSnapshot(dbPath, (v) => v.dataVersion);
    const behind = versionDistance(replica, db);
    if (behind === 0) return { check, status: 'ok', detail: `at data_version ${replica}, level with the database` };
    return {
      check,
      status: running && Math.abs(behind) <= 1 ? 'ok' : 'warn',
      detail: `at data_version ${replica}, the database at ${db}`,
      fix: running ? 'if it stays apart, see `lightning-cli lnbackup-status`' : 'the plugin brings it level when lightningd starts',
    };
  } catch (err) {
    return { check, status: 'skip', detail: `could not be read now (${(err as Error).message})` };
  }
}

function checkStatusFile(networkDir: string, lightningDir: string, network: string): Check {
  const file = path.join(networkDir, STATUS_FILE);
  const pidFile = path.join(lightningDir, `lightningd-${network}.pid`);
  let status: { updatedAt?: string; lastError?: unknown; stalledForMs?: unknown };
  try {
    status = JSON.parse(fs.readFileSync(file, 'utf8').slice(0, 1024 * 1024)) as typeof status;
  } catch {
    return {
      check: 'plugin status',
      status: 'fail',
      detail: `lightningd runs but ${file} is missing or unreadable: the plugin is not running`,
      fix: "check the plugin line and lightningd's log (`grep lnbackup` in it)",
    };
  }
  const updated = Date.parse(status.updatedAt ?? '');
  const started = fs.statSync(pidFile).mtimeMs;
  if (!(updated >= started - 1000)) {
    return {
      check: 'plugin status',
      status: 'fail',
      detail: `${file} was last written at ${status.updatedAt ?? '?'}, before this lightningd started: the plugin did not start with it`,
      fix: "check the plugin line and lightningd's log",
    };
  }
  if (typeof status.stalledForMs === 'number' && status.stalledForMs > 0) {
    return {
      check: 'plugin status',
      status: 'warn',
      detail: `the node has been waiting ${(status.stalledForMs / 1000).toFixed(0)} s for its destinations`,
      fix: 'see `lightning-cli lnbackup-status`: a destination is unreachable or full',
    };
  }
  if (typeof status.lastError === 'string' && status.lastError.length > 0) {
    return { check: 'plugin status', status: 'warn', detail: `the plugin's last error: ${status.lastError}`, fix: 'see `lightning-cli lnbackup-status`' };
  }
  return { check: 'plugin status', status: 'ok', detail: `the plugin runs (status written ${status.updatedAt})` };
}

/** Runs every check; never throws for what it finds (only for a programming error). */
export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const networkDir = path.resolve(o.lightningDir, o.network);
  const running = lightningdPid(o.lightningDir, o.network) !== null;
  const checks: Check[] = [];
  const step = <T>(name: string, body: () => T): T => {
    o.onCheck?.(name);
    return body();
  };
  checks.push(...step('lightningd config', () => checkLightningdConfig(o, networkDir)));

  let config: PluginConfig;
  try {
    config = step('lnbackup.json', () => readConfig(networkDir));
    checks.push({ check: 'lnbackup.json', status: 'ok', detail: `${configPath(networkDir)}: vault ${config.vault}` });
  } catch (err) {
    checks.push({ check: 'lnbackup.json', status: 'fail', detail: (err as Error).message, fix: "run 'lnbackup init' (lightningd stopped)" });
    return finish(running, checks);
  }
  let keys: VaultKeys;
  try {
    keys = step('key', () => loadNodeKeys(networkDir, config));
    checks.push({ check: 'key', status: 'ok', detail: "the vault key is derived from this node's seed" });
  } catch (err) {
    checks.push({ check: 'key', status: 'fail', detail: (err as Error).message, fix: "point lnbackup.json at the node's own hsm_secret (or key file)" });
    return finish(running, checks);
  }
  const dbPath = resolveIn(networkDir, config.database);
  const vaultChecks = step('vault', () => checkVault(config, keys, dbPath));
  checks.push(...vaultChecks);
  if (vaultChecks[0]?.status === 'fail' && vaultChecks.length === 1) return finish(running, checks);
  checks.push(step('database', () => checkDatabaseLevel(config, keys, dbPath, running)));
  const d = destinationSettings(config);
  for (const url of d.remotes) checks.push(await step(`server ${url}`, () => checkServer(url, keys, config.vault, running, o.serverTimeoutMs ?? 10_000)));
  for (const file of d.replicas) checks.push(step(`replica ${file}`, () => checkReplica(file, dbPath, running)));
  const problem = retentionProblem(retentionSettings(config));
  checks.push(
    problem === null
      ? { check: 'retention', status: 'ok', detail: 'settings valid' }
      : { check: 'retention', status: 'fail', detail: problem, fix: 'set it again with `lnbackup retention`' },
  );
  if (running) checks.push(step('plugin status', () => checkStatusFile(networkDir, o.lightningDir, o.network)));
  else checks.push({ check: 'plugin status', status: 'skip', detail: 'lightningd is not running' });
  return finish(running, checks);
}

function finish(lightningdRunning: boolean, checks: Check[]): DoctorReport {
  return { ok: checks.every((c) => c.status === 'ok' || c.status === 'skip'), lightningdRunning, checks };
}
