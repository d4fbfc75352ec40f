// `lnbackup postgres primary`: the primary's settings for synchronous commits to a named standby —
// synchronous_standby_names listing it, synchronous_commit = on, wal_level at least replica,
// max_wal_senders above 0 — as a plan of ALTER SYSTEM statements, and applying it (ALTER SYSTEM,
// pg_reload_conf(), then waiting until the standby is sync). Applying is refused while no standby
// of that name streams: every commit of the node would wait from that moment on.
// https://www.postgresql.org/docs/15/sql-altersystem.html
import type pg from 'pg';
import { connectDsn } from './connect.js';
import { scrubSecret } from './dsn.js';
import { parseStandbyNames } from './verdict.js';

export interface SettingChange {
  name: string;
  current: string;
  wanted: string;
  /** Takes effect only after a restart of the primary (wal_level, max_wal_senders). */
  needsRestart: boolean;
  statement: string;
}

export interface PrimaryPlan {
  standbyName: string;
  changes: SettingChange[];
  /** The standby as pg_stat_replication shows it (null: not connected). */
  standby: { state: string | null; syncState: string | null } | null;
  /** Every statement to run, in order (ending with the reload when anything changes). */
  statements: string[];
}

export interface ApplyResult extends PrimaryPlan {
  applied: boolean;
  /** The standby's sync_state after the reload. */
  syncState: string | null;
}

/** --apply was refused (exit code 3): nothing was changed. */
export class ApplyRefused extends Error {
  override name = 'ApplyRefused';
}

const literal = (s: string): string => `'${s.replace(/'/g, "''")}'`;

async function readPlan(client: pg.Client, standbyName: string): Promise<PrimaryPlan> {
  const rec = await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
  if (rec.rows[0].r) throw new ApplyRefused('--dsn names a standby (in recovery): give the primary the node writes to');
  // The values this session started with (reset_val: not changed by SET; a superuser's session
  // rarely has per-role settings, and `check` with the node's DSN sees the node's own).
  const { rows } = await client.query<{ name: string; reset_val: string }>(
    "SELECT name, reset_val FROM pg_settings WHERE name IN ('synchronous_standby_names', 'synchronous_commit', 'wal_level', 'max_wal_senders')",
  );
  const value = (n: string): string => rows.find((r) => r.name === n)?.reset_val ?? '';
  const changes: SettingChange[] = [];
  const add = (name: string, wanted: string, needsRestart: boolean): void => {
    changes.push({ name, current: value(name), wanted, needsRestart, statement: `ALTER SYSTEM SET ${name} = ${literal(wanted)};` });
  };
  const names = parseStandbyNames(value('synchronous_standby_names'));
  if (!names || !names.names.some((n) => n.toLowerCase() === standbyName.toLowerCase())) add('synchronous_standby_names', standbyName, false);
  if (!['on', 'remote_apply'].includes(value('synchronous_commit'))) add('synchronous_commit', 'on', false);
  if (value('wal_level') === 'minimal') add('wal_level', 'replica', true);
  if (Number(value('max_wal_senders')) === 0) add('max_wal_senders', '10', true);
  const standby = await client.query<{ state: string | null; sync_state: string | null }>(
    'SELECT state, sync_state FROM pg_stat_replication WHERE application_name = $1',
    [standbyName],
  );
  const statements = changes.map((c) => c.statement);
  if (changes.some((c) => !c.needsRestart)) statements.push('SELECT pg_reload_conf();');
  return {
    standbyName,
    changes,
    standby: standby.rows[0] ? { state: standby.rows[0].state, syncState: standby.rows[0].sync_state } : null,
    statements,
  };
}

/** The plan, changing nothing. */
export async function planPrimary(dsn: string, standbyName: string): Promise<PrimaryPlan> {
  const client = await connectDsn(dsn, { applicationName: 'lnbackup-primary' });
  try {
    return await readPlan(client, standbyName);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Applies the plan; refuses (ApplyRefused) while the standby is not streaming. */
export async function applyPrimary(
  dsn: string,
  standbyName: string,
  onStep: (line: string) => void = () => undefined,
  timeoutMs = 60_000,
): Promise<ApplyResult> {
  const client = await connectDsn(dsn, { applicationName: 'lnbackup-primary' });
  try {
    const plan = await readPlan(client, standbyName);
    if (plan.standby?.state !== 'streaming' && plan.changes.length === 0) {
      throw new ApplyRefused(
        `nothing to apply: the primary already makes every commit wait for standby ${standbyName}, which ${plan.standby ? 'is not streaming' : 'is not connected'}, so the node's commits are waiting now. Start that standby (or set one up: lnbackup postgres standby --primary … --name ${standbyName})`,
      );
    }
    if (plan.standby?.state !== 'streaming') {
      const seen = plan.standby ? `is ${plan.standby.state ?? 'connected (its state hidden from this role)'}, not streaming` : 'is not connected';
      throw new ApplyRefused(
        `refusing to apply: standby ${standbyName} ${seen}, and with synchronous_standby_names naming it every commit of the node would wait (the node would stall) until it streams. Set the standby up first (lnbackup postgres standby --primary … --name ${standbyName}), then run this again`,
      );
    }
    if (plan.changes.some((c) => c.needsRestart)) {
      throw new ApplyRefused(
        `refusing to apply: ${plan.changes
          .filter((c) => c.needsRestart)
          .map((c) => c.name)
          .join(' and ')} need a restart of the primary; set them first (${plan.changes
          .filter((c) => c.needsRestart)
          .map((c) => c.statement)
          .join(' ')}) and restart it`,
      );
    }
    for (const statement of plan.statements) {
      onStep(`running ${statement}`);
      try {
        await client.query(statement);
      } catch (err) {
        const message = scrubSecret(err instanceof Error ? err.message : String(err), dsn);
        throw new Error(
          `${statement} failed: ${message}${/permission denied|must be superuser/i.test(message) ? ' (ALTER SYSTEM needs a superuser, or GRANT ALTER SYSTEM ON PARAMETER … on PostgreSQL 15)' : ''}`,
        );
      }
    }
    onStep(`waiting for standby ${standbyName} to become sync`);
    const deadline = Date.now() + timeoutMs;
    let syncState: string | null = plan.standby.syncState;
    while (syncState !== 'sync' && syncState !== 'quorum') {
      if (Date.now() > deadline)
        throw new Error(
          `the settings are applied but standby ${standbyName} is still ${syncState ?? 'gone'} after ${timeoutMs / 1000} s: see lnbackup postgres check`,
        );
      await new Promise((r) => setTimeout(r, 100));
      const { rows } = await client.query<{ sync_state: string | null }>('SELECT sync_state FROM pg_stat_replication WHERE application_name = $1', [
        standbyName,
      ]);
      syncState = rows[0]?.sync_state ?? null;
    }
    return { ...plan, applied: true, syncState };
  } finally {
    await client.end().catch(() => undefined);
  }
}
