// `lnbackup postgres check|standby|primary`: for nodes whose wallet is in PostgreSQL. `check` says
// whether the node's commits are zero-loss (exit 0), not (3, with every reason and its fix), or
// cannot be checked (1); `standby` builds a synchronous standby from an empty folder; `primary`
// prints, and with --apply applies, the primary's settings for synchronous commits. A DSN's
// password never appears in what these print.
import type { Command } from 'commander';
import { checkPostgres, type CheckResult } from '../postgres/check.js';
import { DsnError } from '../postgres/dsn.js';
import { describeEffect, type Reason } from '../postgres/verdict.js';
import type { StandbyRow } from '../postgres/replicationState.js';
import { EXIT_CHECK_FAILED, emit, UsageError } from './output.js';
import { jsonOption, run } from './runner.js';

interface CheckFlags {
  dsn: string;
  timeout: string;
  json?: boolean;
}

/** A DSN the user gave that is not one is a usage error (exit 2). */
async function asUsage<T>(body: () => Promise<T>): Promise<T> {
  try {
    return await body();
  } catch (err) {
    if (err instanceof DsnError) throw new UsageError(err.message);
    throw err;
  }
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
    lines.push(`  ${slot.name}  ${slot.type}  ${slot.active ? 'active' : 'INACTIVE'}${slot.retainedBytes === null ? '' : `  keeps ${(slot.retainedBytes / 1024 / 1024).toFixed(1)} MiB of WAL`}${slot.walStatus ? `  (${slot.walStatus})` : ''}`);
  }
  lines.push(...r.warnings.flatMap((x) => reasonLines('warning', x)));
  lines.push(`checked in ${r.durationMs} ms`);
  return lines;
}

export function registerPostgresCommand(program: Command): void {
  const postgres = program
    .command('postgres')
    .description("for nodes whose wallet is in PostgreSQL (--wallet=postgres://…): check that commits are zero-loss, set up a synchronous standby, set the primary's settings")
    .addHelpText(
      'after',
      `
Zero-loss means every commit waits until at least one standby has flushed it to disk:
synchronous_commit 'on' or 'remote_apply', and a standby streaming as sync/quorum that matches
synchronous_standby_names. See docs/POSTGRES.md.`,
    );

  postgres
    .command('check')
    .description("say whether the node's commits are zero-loss: connects with the node's own wallet DSN (so per-role and per-database settings count) and lists every reason they are not, with the fix")
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
}
