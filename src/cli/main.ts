#!/usr/bin/env node
// The `lnbackup` command: init, restore, verify, status, scrub, demo. Every command takes --json (one
// JSON object on stdout) and shows progress on a terminal for long work.
import { Command, CommanderError } from 'commander';
import { listGenerationSummaries } from '../restore/generationList.js';
import { restoreDatabase } from '../restore/rebuild.js';
import { vaultStatus } from '../restore/status.js';
import { verifyVault } from '../restore/verify.js';
import { U32 } from '../journal/dataVersion.js';
import { prepareNode } from './initNode.js';
import { hsmSecretOption, keyFileOption, keyOrigin, loadKeys, requireKeys, type KeyFlags } from './keyOptions.js';
import { emit, reportError, EXIT_CHECK_FAILED, EXIT_USAGE, UsageError } from './output.js';
import { jsonOption, run } from './runner.js';
import { asUsage, checkDestinations, parseLocalVaultMode, parseStallLimit, registerDestinationCommands } from './destinationCommands.js';
import { downloadDir, pushVault, type PushResult } from '../destinations/transfer.js';
import { formatPolicy, parsePolicy } from '../destinations/policy.js';
import { parseRemoteUrl } from '../destinations/remoteUrl.js';
import type { VaultKeys } from '../vault/keys.js';

interface InitFlags extends RetentionFlags {
  lightningDir: string;
  network: string;
  vault: string;
  keyFile?: string;
  nodeId?: string;
  force?: boolean;
  json?: boolean;
  remote: string[];
  replica: string[];
  policy: string;
  stallLimit: string;
  localVault: string;
}
import { formatBytes, progressBar } from './progress.js';
import { runDemo } from './demo.js';
import { registerServerCommands } from './serverCommands.js';
import { registerRetentionCommand, retentionFromFlags, retentionOptions, type RetentionFlags } from './retentionCommand.js';
import { registerScrubCommand } from './scrubCommand.js';
import { repairVaultInMemory } from '../vault/redundancy/protectedRead.js';

// The server flushes every vault file a round touched in parallel on libuv's thread pool (4
// threads unless set): give it more before anything uses the pool.
if (process.argv[2] === 'server' && process.env.UV_THREADPOOL_SIZE === undefined) process.env.UV_THREADPOOL_SIZE = '64';

const program = new Command();
// Usage errors found by commander (a missing option, an unknown one) become exit code 2, and a
// JSON answer with --json, like the usage errors the commands find themselves.
program.exitOverride();
program
  .name('lnbackup')
  .description('Continuous, zero-loss, encrypted backup for Core Lightning nodes.')
  .version('0.1.0')
  .enablePositionalOptions()
  .showHelpAfterError()
  .addHelpText(
    'after',
    `
Quick start:
  lnbackup init --lightning-dir ~/.lightning --network bitcoin --vault /mnt/backup/node1
  # add to lightningd's config:  plugin=<the path init prints>
  lnbackup status --vault /mnt/backup/node1 --hsm-secret ~/.lightning/bitcoin/hsm_secret
  lnbackup restore --vault /mnt/backup/node1 --hsm-secret <hsm_secret> --to lightningd.sqlite3

Off the machine:
  lnbackup server --data /srv/lnbackup --listen 0.0.0.0:9736 --allow <node key>   # on the backup host
  lnbackup destination key --lightning-dir ~/.lightning --network bitcoin         # the node key
  lnbackup destination add --lightning-dir ~/.lightning --network bitcoin --remote lnbackup://<server key>@host:9736
  lnbackup restore --from lnbackup://<server key>@host:9736 --hsm-secret <hsm_secret> --to lightningd.sqlite3

Exit codes: 0 ok, 1 error, 2 usage error, 3 a check failed (verify found a bad record).`,
  );

/** A command that reads a vault: --vault or --from (a server), the key options, --json. */
function vaultCommand(name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option('--vault <path>', 'the vault directory')
    .option('--from <url>', 'read the vault from an lnbackup server instead (lnbackup://<server key>@host:port; needs the key)')
    .option('--vault-id <id>', 'with --from: which of this node\'s vaults on the server (when it holds several)')
    .addOption(hsmSecretOption)
    .addOption(keyFileOption)
    .addOption(jsonOption());
}

interface SourceFlags {
  vault?: string;
  from?: string;
  vaultId?: string;
  json?: boolean;
}

/** Runs `use` on the vault directory: the local one, or a verified download from a server. */
async function withVaultDir<T>(o: SourceFlags, keys: VaultKeys | null, use: (dir: string) => T | Promise<T>): Promise<T> {
  if (!o.vault === !o.from) throw new UsageError('give one of --vault <path> or --from <lnbackup://…>');
  if (o.vault) return use(o.vault);
  if (!keys) throw new UsageError('--from needs the vault key (--hsm-secret or --key-file): the node\'s server key is derived from it');
  const bar = progressBar('download', !o.json);
  return downloadDir({ url: o.from as string, keys, vaultId: o.vaultId, onProgress: bar.update }, (dir) => {
    bar.done();
    return use(dir);
  });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function parseTime(v: string): number {
  const t = Date.parse(v);
  if (!/^\d{4}-\d{2}-\d{2}/.test(v) || Number.isNaN(t)) throw new UsageError(`--time takes an ISO 8601 moment (e.g. 2026-11-22T10:30:00Z), not '${v}'`);
  return t;
}

function parseVersion(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n >= U32) throw new UsageError(`--version takes a data_version (0..${U32 - 1}), not '${v}'`);
  return n;
}

retentionOptions(
  program
    .command('init')
    .description('set up a node (lightningd stopped): create or reopen its vault, take the first snapshot, write the plugin configuration')
    .requiredOption('--lightning-dir <dir>', "lightningd's base directory (e.g. ~/.lightning)")
    .requiredOption('--network <net>', 'bitcoin, testnet, signet or regtest (the subdirectory holding hsm_secret and the database)')
    .requiredOption('--vault <path>', 'the vault directory (put it on another disk)')
    .addOption(keyFileOption)
    .option('--node-id <id>', 'the node id, with --key-file (from `lightning-cli getinfo`)')
    .option('--force', 'replace an existing lnbackup configuration of this node')
    .option('--remote <url>', 'an lnbackup server that must also hold every record (repeatable): lnbackup://<server key>@host:port', collect, [])
    .option('--replica <file>', 'a live sqlite replica kept as a hot standby (repeatable)', collect, [])
    .option('--policy <policy>', "'all' (default: every destination durable before lightningd commits) or 'quorum=K'", 'all')
    .option('--stall-limit <seconds>', "stop lightningd once a transaction has waited this long for its destinations (default 'none': wait)", 'none')
    .option('--local-vault <mode>', "'durable' (default) or 'cache' (with --remote: the servers hold the backup, the local vault only feeds them)", 'durable'),
)
  .addOption(jsonOption())
  .action((o: InitFlags) =>
    run(o, async () => {
      const destinations = {
        remotes: o.remote.map((u) => asUsage(() => parseRemoteUrl(u).url)),
        replicas: o.replica,
        policy: formatPolicy(asUsage(() => parsePolicy(o.policy))),
        stallLimitSeconds: parseStallLimit(o.stallLimit),
        localVault: parseLocalVaultMode(o.localVault),
      };
      checkDestinations(destinations);
      const bar = progressBar('snapshot', !o.json);
      const prepared = prepareNode({ ...o, destinations, retention: retentionFromFlags(o), onProgress: bar.update });
      bar.done();
      const r = prepared.result;
      const pushed: ({ url: string } & PushResult)[] = [];
      for (const url of destinations.remotes) {
        const up = progressBar(`upload to ${url.slice(0, 24)}…`, !o.json);
        pushed.push({ url, ...(await pushVault({ vaultDir: r.vault, url, keys: prepared.keys, onProgress: up.update })) });
        up.done();
      }
      prepared.commit();
      for (const w of r.warnings) process.stderr.write(`lnbackup: warning: ${w}\n`);
      emit(o, { ok: true, ...r, pushed }, () => [
        `node id:     ${r.nodeId ?? '(unknown: key file without node id)'}`,
        `vault:       ${r.vault} (${r.vaultCreated ? 'created' : 'reopened'}, id ${r.vaultId})`,
        `snapshot:    generation ${r.generation} at data_version ${r.dataVersion} (${r.dbBytes === 0 ? 'no database yet: the backup starts from the schema migrations' : formatBytes(r.dbBytes)})`,
        ...pushed.map((p) => `server:      ${p.url} holds the vault (${p.records} records uploaded)`),
        ...(destinations.replicas.length ? destinations.replicas.map((f) => `replica:     ${f} (built from the vault when lightningd starts)`) : []),
        `policy:      ${destinations.policy}`,
        `config:      ${r.config}`,
        '',
        "Now add this line to lightningd's config file and start lightningd:",
        `  plugin=${r.plugin}`,
      ]);
    }),
  );

vaultCommand('restore', 'rebuild a Core Lightning database from a vault (newest version, or --version N), with integrity checks')
  .requiredOption('--to <file>', 'the database file to write (e.g. <lightning-dir>/<network>/lightningd.sqlite3)')
  .option('--version <n>', 'restore this data_version instead of the newest', parseVersion)
  .option('--time <when>', "restore the database as it was at this moment (ISO 8601, e.g. 2026-11-22T10:30:00Z); see 'lnbackup generations' for what is kept", parseTime)
  .option('--exclude-in-flight', 'leave out the last transaction if its commit is not confirmed')
  .option('--force', 'replace an existing file (stop lightningd first)')
  .action((o: KeyFlags & SourceFlags & { to: string; version?: number; time?: number; excludeInFlight?: boolean; force?: boolean }) =>
    run(o, async () => {
      const { keys } = requireKeys(o);
      const notices: string[] = [];
      const r = await withVaultDir(o, keys, async (vaultDir) => {
        // Damaged files are repaired in memory from their parity or mirror first (and said so).
        const repair = await repairVaultInMemory(vaultDir);
        const bar = progressBar('restore', !o.json);
        const restored = restoreDatabase({ vaultDir, keys, to: o.to, version: o.version, time: o.time, excludeInFlight: o.excludeInFlight, force: o.force, onProgress: bar.update, onNotice: (m) => notices.push(m), repair });
        bar.done();
        return restored;
      });
      emit(o, { ok: true, ...r, notices }, () => [
        ...notices.map((n) => `note: ${n}`),
        `restored:    ${r.to} (${formatBytes(r.dbBytes)})`,
        `version:     ${r.version}${r.inFlight ? ` (the last transaction is the in-flight one: acknowledged, commit unconfirmed; committed for sure: ${r.committedVersion})` : ' (committed)'}`,
        `from:        generation ${r.generation}, snapshot at version ${r.baseVersion}, ${r.transactions} transactions, ${r.statements} statements, ${r.superseded} superseded`,
        `checks:      integrity_check ${r.integrityCheck}, foreign_key_check ok`,
        ...(r.tornTail ? [`note: skipped a torn, never-acknowledged record at ${r.tornTail.segment}:${r.tornTail.offset}`] : []),
      ]);
    }),
  );

vaultCommand('generations', 'the generations a vault keeps (what point-in-time restore can reach) and what each costs')
  .action((o: KeyFlags & SourceFlags) =>
    run(o, async () => {
      const { keys } = requireKeys(o);
      const r = await withVaultDir(o, keys, (vaultDir) => listGenerationSummaries(vaultDir, keys));
      emit(o, { ok: r.damage === null, ...r }, () => [
        ...r.generations.map(
          (g) =>
            `generation ${g.generation}: versions ${g.baseVersion}..${g.lastVersion}, ${g.snapshotTakenAt} .. ${g.lastCallAt ?? g.snapshotTakenAt}, ${g.calls} calls, ${g.pages} pages; ` +
            `${formatBytes(g.recordBytes)} of records, packs ${formatBytes(g.packBytes)} (shared)${g.complete ? '' : ', snapshot INCOMPLETE'}`,
        ),
        `total:       ${formatBytes(r.recordBytes)} of records + ${formatBytes(r.packBytes)} of page packs, + ${formatBytes(r.redundancyBytes)} of parity and mirrors`,
        ...(r.damage ? [`damage:      ${r.damage} (run 'lnbackup scrub --repair'; the list stops there)`] : []),
      ]);
      return r.damage === null ? 0 : EXIT_CHECK_FAILED;
    }),
  );

vaultCommand('verify', 'check every record of a vault (authentication, hash chain, sequence, snapshots) without writing a database')
  .action((o: KeyFlags & SourceFlags) =>
    run(o, async () => {
      const { keys } = requireKeys(o);
      const r = await withVaultDir(o, keys, async (vaultDir) => {
        const repair = await repairVaultInMemory(vaultDir);
        const bar = progressBar('verify', !o.json);
        const verified = verifyVault(vaultDir, keys, bar.update, repair);
        bar.done();
        return verified;
      });
      emit(o, r, () => [
        ...r.notices.map((n) => `note: ${n}`),
        r.ok ? `ok: ${r.records} records, ${formatBytes(r.bytes)}, ${r.generations.length} generation(s)` : `FAILED after ${r.records} good records`,
        ...r.generations.map((g) => `  generation ${g.generation}: snapshot at version ${g.baseVersion}, up to version ${g.version}${g.inFlight ? ' (last transaction in flight)' : ''}, ${g.transactions} transactions, ${g.superseded} superseded${g.complete ? '' : ', snapshot INCOMPLETE'}`),
        ...(r.tornTail ? [`  note: a torn, never-acknowledged record at ${r.tornTail.segment}:${r.tornTail.offset} (${r.tornTail.bytes} bytes) is ignored`] : []),
        ...(r.firstBadRecord ? [`first bad record: ${r.firstBadRecord.seq} in ${r.firstBadRecord.segment} at byte ${r.firstBadRecord.offset}: ${r.firstBadRecord.reason}`] : []),
      ]);
      return r.ok ? 0 : EXIT_CHECK_FAILED;
    }),
  );

vaultCommand('status', 'what a vault holds: node id, generations, versions (with a key), size')
  .action((o: KeyFlags & SourceFlags) =>
    run(o, async () => {
      const origin = keyOrigin(o);
      const keys = origin ? loadKeys(origin).keys : null;
      const s = await withVaultDir(o, keys, (vaultDir) => ({ ...vaultStatus(vaultDir, keys), ...(o.from ? { from: o.from } : {}) }));
      emit(o, s, () => [
        `vault:       ${s.vault} (id ${s.vaultId}, format ${s.formatVersion})`,
        `node id:     ${s.nodeId ?? 'unknown'}`,
        `size:        ${formatBytes(s.totalBytes)} in ${s.segmentFiles} segment file(s); last write ${s.lastWriteAt ?? 'never'}`,
        ...s.generations.map((g) => `generation ${g.generation}: ${formatBytes(g.bytes)}, ${g.segments} segment(s)${g.baseVersion !== null ? `, snapshot at version ${g.baseVersion} (${g.snapshotTakenAt})` : ''}`),
        s.latest
          ? `latest:      version ${s.latest.version}${s.latest.inFlight ? ` (in flight; committed ${s.latest.committedVersion})` : ''}, record ${s.latest.lastSeq}`
          : 'versions:    pass --hsm-secret or --key-file to read them',
      ]);
    }),
  );

program
  .command('demo')
  .description('the whole job on embedded defaults: a simulated node replays a recorded trace into a local vault and an embedded lnbackup server, crashes, restarts, and is restored (from the vault, then from the server alone) and verified')
  .option('--trace <file>', 'the db_write trace to replay (default: the recorded node1 trace in testdata/traces)')
  .option('--dir <dir>', 'work directory (default: a new temporary one)')
  .addOption(jsonOption())
  .action((o: { trace?: string; dir?: string; json?: boolean }) => run(o, () => runDemo(o)));

registerServerCommands(program);
registerScrubCommand(program);
registerDestinationCommands(program);
registerRetentionCommand(program);
(await import('./recoverCommand.js')).registerRecoverCommand(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) {
    // commander has printed the message (or the help) already.
    const usage = err.exitCode !== 0;
    if (usage && process.argv.includes('--json')) process.stdout.write(JSON.stringify({ ok: false, error: err.message.replace(/^error: /, '') }) + '\n');
    process.exitCode = usage ? EXIT_USAGE : 0;
    return;
  }
  process.exitCode = reportError({}, err);
});
