// `lnbackup postgres check|standby|primary`: for nodes whose wallet is in PostgreSQL. `check` says
// whether the node's commits are zero-loss (exit 0), not (3, with every reason and its fix), or
// cannot be checked (1); `standby` builds a synchronous standby from an empty folder; `primary`
// prints, and with --apply applies, the primary's settings for synchronous commits. A DSN's
// password never appears in what these print.
import type { Command } from 'commander';
import { checkPostgres, type CheckResult } from '../postgres/check.js';
import { DsnError } from '../postgres/dsn.js';
import { applyPrimary, ApplyRefused, planPrimary, type PrimaryPlan } from '../postgres/primarySettings.js';
import { DEFAULT_STANDBY_NAME, setupStandby, StandbySetupError } from '../postgres/standbySetup.js';
import { describeEffect, type Reason } from '../postgres/verdict.js';
import type { StandbyRow } from '../postgres/replicationState.js';
import { EXIT_CHECK_FAILED, emit, UsageError } from './output.js';
import { progressBar } from './progress.js';
import { jsonOption, run } from './runner.js';

interface CheckFlags {
  dsn: string;
  timeout: string;
  json?: boolean;
}

interface StandbyFlags {
  primary: string;
  dataDir: string;
  name: string;
  port: string;
  timeout: string;
  json?: boolean;
}

interface PrimaryFlags {
  dsn: string;
  standbyName: string;
  apply?: boolean;
  json?: boolean;
}

/** A DSN or name the user gave that is not one is a usage error (exit 2). */
async function asUsage<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof DsnError) throw new UsageError(err.message);
    throw err;
  }
}

/** Step lines on stderr (not with --json). */
const stepPrinter =
  (json: boolean | undefined) =>
  (line: string): void => {
    if (!json) process.stderr.write(`lnbackup: ${line}\n`);
  };

function planLines(plan: PrimaryPlan): string[] {
  const standby = plan.standby
    ? `standby ${plan.standbyName}: ${plan.standby.state ?? 'connected (state hidden)'}, ${plan.standby.syncState ?? '?'}`
    : `standby ${plan.standbyName}: NOT CONNECTED`;
  if (plan.changes.length === 0) return [standby, `the primary's settings already make commits wait for ${plan.standbyName}: nothing to change`];
  return [
    standby,
    'settings to change:',
    ...plan.changes.map((c) => `  ${c.name}: '${c.current}' -> '${c.wanted}'${c.needsRestart ? ' (needs a restart of the primary)' : ''}`),
    'statements (as a superuser on the primary):',
    ...plan.statements.map((x) => `  ${x}`),
  ];
}

function parseSeconds(value: string, what: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 3600) throw new UsageError(`${what} must be a number of seconds between 0 and 3600, not ${value}`);
  return n;
}

const lag = (s: number | null): string => (s === null ? '-' : `${(s * 1000).toFixed(1)} ms`);

export function standbyLine(s: StandbyRow): string {
  if (s.state === null) return `  (a standby this role may not see: pid only)`;
  return `  ${s.name ?? '?'}  ${s.state}  ${s.syncState}  from ${s.clientAddr ?? 'local socket'}  lags: write ${lag(s.writeLag)}, flush ${lag(s.flushLag)}, replay ${lag(s.replayLag)}  (sent ${s.sentLsn}, flushed ${s.flushLsn})`;
}

const reasonLines = (label: string, r: Reason): string[] => [`  ${label} [${r.code}]: ${r.problem}`, `    fix: ${r.fix}`];

export function checkLines(r: CheckResult): string[] {
  const s = r.settings;
  const setting = (name: keyof typeof s): string => `${name} = '${s[name].value}' (${s[name].source})`;
  const lines = [
    `${r.dsn}: PostgreSQL ${r.serverVersion}, ${r.primary ? 'primary' : 'STANDBY (in recovery)'}, role ${r.user}, database ${r.database}`,
    r.verdict === 'zero-loss' ? 'verdict: ZERO-LOSS (every commit waits until a standby has flushed it to disk)' : 'verdict: NOT ZERO-LOSS',
    ...r.reasons.flatMap((x) => reasonLines('reason', x)),
  ];
  if (r.effect) lines.push(`  meanwhile: ${describeEffect(r.effect)}`);
  lines.push(`settings: ${setting('synchronous_commit')}, ${setting('synchronous_standby_names')}, ${setting('wal_level')}, ${setting('max_wal_senders')}`);
  lines.push(r.standbys.length === 0 ? 'standbys: none connected' : 'standbys:', ...r.standbys.map(standbyLine));
  lines.push(r.slots.length === 0 ? 'slots: none' : 'slots:');
  for (const slot of r.slots) {
    lines.push(
      `  ${slot.name}  ${slot.type}  ${slot.active ? 'active' : 'INACTIVE'}${slot.retainedBytes === null ? '' : `  keeps ${(slot.retainedBytes / 1024 / 1024).toFixed(1)} MiB of WAL`}${slot.walStatus ? `  (${slot.walStatus})` : ''}`,
    );
  }
  lines.push(...r.warnings.flatMap((x) => reasonLines('warning', x)));
  lines.push(`checked in ${r.durationMs} ms`);
  return lines;
}

export function registerPostgresCommand(program: Command): void {
  const postgres = program
    .command('postgres')
    .description(
      "for nodes whose wallet is in PostgreSQL (--wallet=postgres://…): check that commits are zero-loss, set up a synchronous standby, set the primary's settings",
    )
    .addHelpText(
      'after',
      `
Zero-loss means every commit waits until at least one standby has flushed it to disk:
synchronous_commit 'on' or 'remote_apply', and a standby streaming as sync/quorum that matches
synchronous_standby_names. See docs/POSTGRES.md.`,
    );

  postgres
    .command('check')
    .description(
      "say whether the node's commits are zero-loss: connects with the node's own wallet DSN (so per-role and per-database settings count) and lists every reason they are not, with the fix",
    )
    .requiredOption('--dsn <url>', "the node's wallet DSN (lightningd's --wallet), postgres://user:password@host:port/database")
    .option('--timeout <seconds>', 'how long to wait for the server to answer', '5')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
Exit code 0: zero-loss. 3: not zero-loss (every reason and its fix are printed; also when the
DSN names a standby, or the role may not see pg_stat_replication). 1: the server cannot be
reached or refused the connection. 2: usage error (a malformed DSN).`,
    )
    .action((o: CheckFlags) =>
      run(o, async () => {
        const timeoutMs = parseSeconds(o.timeout, '--timeout') * 1000;
        const r = await asUsage(() => checkPostgres(o.dsn, { timeoutMs }));
        emit(o, { ok: r.verdict === 'zero-loss', ...r }, () => checkLines(r));
        return r.verdict === 'zero-loss' ? 0 : EXIT_CHECK_FAILED;
      }),
    );

  postgres
    .command('standby')
    .description(
      "on the standby machine, as PostgreSQL's OS user: build a streaming standby of the primary in an empty folder (replication slot, pg_basebackup -R with application_name, pg_ctl start) and wait until the primary sees it streaming",
    )
    .requiredOption('--primary <url>', "the primary's DSN for a role with REPLICATION (or a superuser), postgres://user:password@host:port/postgres")
    .requiredOption('--data-dir <dir>', "the standby's data folder: new or empty")
    .option('--name <name>', "the standby's application_name and slot name (what synchronous_standby_names lists)", DEFAULT_STANDBY_NAME)
    .option('--port <port>', 'the port the standby listens on', '5433')
    .option('--timeout <seconds>', 'how long to wait for it to stream', '120')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
Then, on the primary: lnbackup postgres primary --dsn <superuser dsn> --standby-name <name> --apply
The standby's primary_conninfo (in <data-dir>/postgresql.auto.conf, readable by PostgreSQL's OS user
only) holds the password of --primary: the standby needs it to reconnect.
Exit code 0: the standby streams. 1: it could not be built or did not stream (the message says
why). 2: usage error.`,
    )
    .action((o: StandbyFlags) =>
      run(o, async () => {
        const port = Number(o.port);
        if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--port must be a port number, not ${o.port}`);
        const step = stepPrinter(o.json);
        const bar = progressBar('pg_basebackup', !o.json);
        const r = await asUsage(() =>
          setupStandby({
            primaryDsn: o.primary,
            dataDir: o.dataDir,
            name: o.name,
            port,
            timeoutMs: parseSeconds(o.timeout, '--timeout') * 1000,
            onProgress: (e) => ('step' in e ? step(e.step) : bar.update(e.copiedKb * 1024, e.totalKb * 1024)),
          }).catch((err: unknown) => {
            bar.done();
            if (err instanceof StandbySetupError && /^standby name/.test(err.message)) throw new UsageError(err.message);
            throw err;
          }),
        );
        bar.done();
        emit(o, { ok: true, ...r }, () => [
          `standby ${r.name} streams from the primary (${r.syncState ?? 'sync state not visible to this role'}); data ${r.dataDir}, port ${r.port}, slot ${r.slot}${r.slotCreated ? ' (created)' : ' (reused)'}, log ${r.logFile}`,
          `copied in ${(r.copyMs / 1000).toFixed(1)} s, streaming ${(r.totalMs / 1000).toFixed(1)} s after the start`,
          r.syncState === 'sync' || r.syncState === 'quorum'
            ? 'commits wait for it already'
            : `next, on the primary: lnbackup postgres primary --dsn <superuser dsn> --standby-name ${r.name} --apply`,
        ]);
        return 0;
      }),
    );

  postgres
    .command('primary')
    .description(
      "print the primary's settings for synchronous commits to the named standby (synchronous_standby_names, synchronous_commit = on, wal_level, max_wal_senders) and, with --apply, apply them (ALTER SYSTEM, reload) once that standby streams",
    )
    .requiredOption('--dsn <url>', "the primary's DSN for a superuser, postgres://postgres:password@host:port/postgres")
    .option('--standby-name <name>', "the standby's application_name", DEFAULT_STANDBY_NAME)
    .option('--apply', 'apply the settings (refused while the standby is not streaming: every commit of the node would wait)')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
Without --apply nothing changes: the statements are printed. --apply refuses while the standby is
not streaming (set it up first: lnbackup postgres standby), and refuses settings that need a
restart (wal_level, max_wal_senders), printing the statements to run before the restart. With
nothing to change and the standby not streaming, it says the node's commits are waiting now.
Afterwards, check the node's own DSN: lnbackup postgres check --dsn <the node's wallet DSN>.
Exit code 0: printed, or applied (or nothing to apply) and the standby is sync. 3: --apply
refused, nothing changed. 1: an error. 2: usage error.`,
    )
    .action((o: PrimaryFlags) =>
      run(o, async () => {
        if (!o.apply) {
          const plan = await asUsage(() => planPrimary(o.dsn, o.standbyName));
          emit(o, { ok: true, applied: false, ...plan }, () => [
            ...planLines(plan),
            ...(plan.changes.length > 0 ? ['run again with --apply to apply them'] : []),
          ]);
          return 0;
        }
        try {
          const r = await asUsage(() => applyPrimary(o.dsn, o.standbyName, stepPrinter(o.json)));
          emit(o, { ok: true, ...r }, () => [
            ...planLines(r),
            `applied: standby ${r.standbyName} is ${r.syncState}; check the node's own DSN with lnbackup postgres check --dsn <wallet DSN>`,
          ]);
          return 0;
        } catch (err) {
          if (!(err instanceof ApplyRefused)) throw err;
          if (o.json) emit(o, { ok: false, applied: false, refused: err.message }, () => []);
          else process.stderr.write(`lnbackup: ${err.message}\n`);
          return EXIT_CHECK_FAILED;
        }
      }),
    );
}
