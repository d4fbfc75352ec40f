#!/usr/bin/env node
// The `lnbackup` command: init, restore, verify, status, demo. Every command takes --json (one
// JSON object on stdout) and shows progress on a terminal for long work.
import { Command } from 'commander';
import { restoreDatabase } from '../restore/rebuild.js';
import { vaultStatus } from '../restore/status.js';
import { verifyVault } from '../restore/verify.js';
import { U32 } from '../journal/dataVersion.js';
import { initNode } from './initNode.js';
import { hsmSecretOption, keyFileOption, keyOrigin, loadKeys, requireKeys, type KeyFlags } from './keyOptions.js';
import { emit, reportError, EXIT_CHECK_FAILED, UsageError } from './output.js';
import { jsonOption, run } from './runner.js';
import { formatBytes, progressBar } from './progress.js';
import { runDemo } from './demo.js';
import { registerServerCommands } from './serverCommands.js';

const program = new Command();
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

Exit codes: 0 ok, 1 error, 2 usage error, 3 a check failed (verify found a bad record).`,
  );

/** A command that opens a vault: --vault, the key options, --json. */
function vaultCommand(name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .requiredOption('--vault <path>', 'the vault directory')
    .addOption(hsmSecretOption)
    .addOption(keyFileOption)
    .addOption(jsonOption());
}

function parseVersion(v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n) || n >= U32) throw new UsageError(`--version takes a data_version (0..${U32 - 1}), not '${v}'`);
  return n;
}

program
  .command('init')
  .description('set up a node (lightningd stopped): create or reopen its vault, take the first snapshot, write the plugin configuration')
  .requiredOption('--lightning-dir <dir>', "lightningd's base directory (e.g. ~/.lightning)")
  .requiredOption('--network <net>', 'bitcoin, testnet, signet or regtest (the subdirectory holding hsm_secret and the database)')
  .requiredOption('--vault <path>', 'the vault directory (put it on another disk)')
  .addOption(keyFileOption)
  .option('--node-id <id>', 'the node id, with --key-file (from `lightning-cli getinfo`)')
  .option('--force', 'replace an existing lnbackup configuration of this node')
  .addOption(jsonOption())
  .action((o: { lightningDir: string; network: string; vault: string; keyFile?: string; nodeId?: string; force?: boolean; json?: boolean }) =>
    run(o, () => {
      const bar = progressBar('snapshot', !o.json);
      const r = initNode({ ...o, onProgress: bar.update });
      bar.done();
      for (const w of r.warnings) process.stderr.write(`lnbackup: warning: ${w}\n`);
      emit(o, { ok: true, ...r }, () => [
        `node id:     ${r.nodeId ?? '(unknown: key file without node id)'}`,
        `vault:       ${r.vault} (${r.vaultCreated ? 'created' : 'reopened'}, id ${r.vaultId})`,
        `snapshot:    generation ${r.generation} at data_version ${r.dataVersion} (${r.dbBytes === 0 ? 'no database yet: the backup starts from the schema migrations' : formatBytes(r.dbBytes)})`,
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
  .option('--exclude-in-flight', 'leave out the last transaction if its commit is not confirmed')
  .option('--force', 'replace an existing file (stop lightningd first)')
  .action((o: KeyFlags & { vault: string; to: string; version?: number; excludeInFlight?: boolean; force?: boolean; json?: boolean }) =>
    run(o, () => {
      const { keys } = requireKeys(o);
      const bar = progressBar('restore', !o.json);
      const notices: string[] = [];
      const r = restoreDatabase({ vaultDir: o.vault, keys, to: o.to, version: o.version, excludeInFlight: o.excludeInFlight, force: o.force, onProgress: bar.update, onNotice: (m) => notices.push(m) });
      bar.done();
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

vaultCommand('verify', 'check every record of a vault (authentication, hash chain, sequence, snapshots) without writing a database')
  .action((o: KeyFlags & { vault: string; json?: boolean }) =>
    run(o, () => {
      const { keys } = requireKeys(o);
      const bar = progressBar('verify', !o.json);
      const r = verifyVault(o.vault, keys, bar.update);
      bar.done();
      emit(o, r, () => [
        r.ok ? `ok: ${r.records} records, ${formatBytes(r.bytes)}, ${r.generations.length} generation(s)` : `FAILED after ${r.records} good records`,
        ...r.generations.map((g) => `  generation ${g.generation}: snapshot at version ${g.baseVersion}, up to version ${g.version}${g.inFlight ? ' (last transaction in flight)' : ''}, ${g.transactions} transactions, ${g.superseded} superseded${g.complete ? '' : ', snapshot INCOMPLETE'}`),
        ...(r.tornTail ? [`  note: a torn, never-acknowledged record at ${r.tornTail.segment}:${r.tornTail.offset} (${r.tornTail.bytes} bytes) is ignored`] : []),
        ...(r.firstBadRecord ? [`first bad record: ${r.firstBadRecord.seq} in ${r.firstBadRecord.segment} at byte ${r.firstBadRecord.offset}: ${r.firstBadRecord.reason}`] : []),
      ]);
      return r.ok ? 0 : EXIT_CHECK_FAILED;
    }),
  );

vaultCommand('status', 'what a vault holds: node id, generations, versions (with a key), size')
  .action((o: KeyFlags & { vault: string; json?: boolean }) =>
    run(o, () => {
      const origin = keyOrigin(o);
      const s = vaultStatus(o.vault, origin ? loadKeys(origin).keys : null);
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
  .description('the whole job on embedded defaults: a simulated node replays a recorded trace into a vault, crashes, restarts, and is restored and verified')
  .option('--trace <file>', 'the db_write trace to replay (default: the recorded node1 trace in ../shared/traces)')
  .option('--dir <dir>', 'work directory (default: a new temporary one)')
  .addOption(jsonOption())
  .action((o: { trace?: string; dir?: string; json?: boolean }) => run(o, () => runDemo(o)));

registerServerCommands(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.exitCode = reportError({}, err);
});
