// The verdict on a server's replication state: zero-loss when every commit of the node's session
// waits until at least one standby has flushed its WAL to disk (synchronous_commit on or
// remote_apply, and enough standbys streaming as sync/quorum for synchronous_standby_names);
// otherwise not zero-loss, with each reason, the exact setting or command that fixes it, and what
// the node is living through meanwhile (commits waiting on the primary, or running unprotected).
// Warnings (an inactive slot filling the disk) do not change the verdict.
// Settings: https://www.postgresql.org/docs/15/runtime-config-replication.html and
// https://www.postgresql.org/docs/15/runtime-config-wal.html#GUC-SYNCHRONOUS-COMMIT
import type { ReplicationState, StandbyRow } from './replicationState.js';

export type ReasonCode =
  | 'not-primary'
  | 'wal-level-minimal'
  | 'no-wal-senders'
  | 'commit-local'
  | 'commit-remote-write'
  | 'role-override'
  | 'database-override'
  | 'role-database-override'
  | 'client-override'
  | 'no-synchronous-standby-names'
  | 'standbys-hidden'
  | 'standby-disconnected'
  | 'standby-async'
  | 'standby-catching-up'
  | 'too-few-sync-standbys'
  | 'inactive-slot'
  | 'lost-slot';

export interface Reason {
  code: ReasonCode;
  /** What is wrong, in one sentence. */
  problem: string;
  /** The exact setting, statement or command that fixes it. */
  fix: string;
}

/** What the node lives through while not zero-loss. */
export type Effect = 'commits-wait' | 'unprotected' | 'unknown';

export interface Verdict {
  zeroLoss: boolean;
  reasons: Reason[];
  warnings: Reason[];
  /** null when zero-loss. */
  effect: Effect | null;
}

export interface StandbyNames {
  method: 'first' | 'any';
  count: number;
  names: string[];
}

/** synchronous_standby_names parsed: `[FIRST] n (a, b)`, `ANY n (a, b)` or `a, b` (FIRST 1); null when empty. */
export function parseStandbyNames(value: string): StandbyNames | null {
  const text = value.trim();
  if (text === '') return null;
  const m = /^(?:(first|any)\s+)?(\d+)\s*\((.*)\)$/is.exec(text);
  const list = (m ? m[3] : text)
    .split(',')
    .map((n) => n.trim().replace(/^"(.*)"$/, '$1'))
    .filter((n) => n.length > 0);
  return { method: m?.[1]?.toLowerCase() === 'any' ? 'any' : 'first', count: m ? Number(m[2]) : 1, names: list };
}

const sqlLiteral = (s: string): string => `'${s.replace(/'/g, "''")}'`;
const sqlIdent = (s: string): string => `"${s.replace(/"/g, '""')}"`;
const RELOAD = 'SELECT pg_reload_conf();';
const DURABLE_COMMITS = new Set(['on', 'remote_apply']);
const WAITING_COMMITS = new Set(['on', 'remote_apply', 'remote_write']);

/** Does a standby's application_name match an entry of synchronous_standby_names (case-insensitive, * = any)? */
function named(names: StandbyNames, standby: StandbyRow): boolean {
  return names.names.some((n) => n === '*' || n.toLowerCase() === (standby.name ?? '').toLowerCase());
}

function commitReason(state: ReplicationState): Reason | null {
  const { value, source } = state.settings.synchronous_commit;
  if (DURABLE_COMMITS.has(value)) return null;
  const what =
    value === 'remote_write'
      ? 'synchronous_commit = remote_write: a commit waits only until the standby has the WAL in its OS cache, so a power cut of both machines loses acknowledged commits'
      : `synchronous_commit = ${value}: a commit waits for no standby at all`;
  const role = sqlIdent(state.user);
  const db = sqlIdent(state.database);
  switch (source) {
    case 'user':
      return {
        code: 'role-override',
        problem: `${what} (set for role ${state.user} by ALTER ROLE, which overrides the server's setting)`,
        fix: `ALTER ROLE ${role} RESET synchronous_commit;`,
      };
    case 'database':
      return {
        code: 'database-override',
        problem: `${what} (set for database ${state.database} by ALTER DATABASE, which overrides the server's setting)`,
        fix: `ALTER DATABASE ${db} RESET synchronous_commit;`,
      };
    case 'database user':
      return {
        code: 'role-database-override',
        problem: `${what} (set for role ${state.user} in database ${state.database} by ALTER ROLE … IN DATABASE)`,
        fix: `ALTER ROLE ${role} IN DATABASE ${db} RESET synchronous_commit;`,
      };
    case 'client':
      return {
        code: 'client-override',
        problem: `${what} (asked for by the connection itself: the DSN's options or PGOPTIONS)`,
        fix: "remove synchronous_commit from the DSN's options parameter (and from PGOPTIONS in lightningd's environment)",
      };
    case 'command line':
      return {
        code: value === 'remote_write' ? 'commit-remote-write' : 'commit-local',
        problem: `${what} (given on postgres's command line)`,
        fix: "remove -c synchronous_commit=… from the primary's command line (its service file), then restart it",
      };
    default:
      return {
        code: value === 'remote_write' ? 'commit-remote-write' : 'commit-local',
        problem: what,
        fix: `ALTER SYSTEM SET synchronous_commit = on; ${RELOAD}`,
      };
  }
}

/** The standbys a commit waits for: streaming, and sync (FIRST) or quorum (ANY). */
function syncStandbys(state: ReplicationState): StandbyRow[] {
  return state.standbys.filter((s) => s.state === 'streaming' && (s.syncState === 'sync' || s.syncState === 'quorum'));
}

function standbyReasons(state: ReplicationState, names: StandbyNames): Reason[] {
  const wanted = `synchronous_standby_names = ${sqlLiteral(state.settings.synchronous_standby_names.value)}`;
  // With synchronous_commit local/off nothing waits (commitReason names that); else commits stall.
  const waits = WAITING_COMMITS.has(state.settings.synchronous_commit.value);
  const visible = state.standbys.filter((s) => s.state !== null);
  const sync = syncStandbys(state);
  if (sync.length >= names.count) return [];
  const reasons: Reason[] = [];
  if (visible.length === 0 && state.standbys.length === 0) {
    reasons.push({
      code: 'standby-disconnected',
      problem: `no standby is connected${waits ? `, so with ${wanted} every commit waits until one is: the node is stalled` : ": no standby holds the node's commits"}`,
      fix: `start the standby named ${names.names.join(' or ')} (pg_ctl start on its machine) and check its primary_conninfo and the primary's pg_hba.conf; \`lnbackup postgres standby\` sets one up`,
    });
  }
  for (const s of visible) {
    if (s.state !== 'streaming') {
      reasons.push({
        code: 'standby-catching-up',
        problem: `standby ${s.name} is ${s.state}, not streaming: it is not yet synchronous`,
        fix: 'wait until it streams (it catches up on its own); if it stays so, read its log',
      });
    } else if (!named(names, s) || s.syncState === 'async') {
      reasons.push({
        code: 'standby-async',
        problem: `standby ${s.name} is connected but async: its application_name is not in ${wanted}, so no commit waits for it`,
        fix: `ALTER SYSTEM SET synchronous_standby_names = ${sqlLiteral(s.name ?? '')}; ${RELOAD} (or set application_name=${names.names[0]} in the standby's primary_conninfo)`,
      });
    }
  }
  if (sync.length > 0) {
    reasons.push({
      code: 'too-few-sync-standbys',
      problem: `${wanted} asks for ${names.count} synchronous standbys and ${sync.length} ${sync.length === 1 ? 'is' : 'are'} streaming${waits ? ': commits wait' : ''}`,
      fix: `bring up the missing standbys, or lower the number: ALTER SYSTEM SET synchronous_standby_names = ${sqlLiteral(`${names.method.toUpperCase()} ${sync.length} (${names.names.join(', ')})`)}; ${RELOAD}`,
    });
  }
  return reasons;
}

function slotWarnings(state: ReplicationState): Reason[] {
  const out: Reason[] = [];
  for (const slot of state.slots) {
    const held = slot.retainedBytes === null ? '' : ` and keeps ${(slot.retainedBytes / 1024 / 1024).toFixed(1)} MiB of WAL on the primary`;
    if (slot.walStatus === 'lost') {
      out.push({
        code: 'lost-slot',
        problem: `replication slot ${slot.name} has lost WAL its standby needs: that standby can never catch up`,
        fix: `rebuild that standby (\`lnbackup postgres standby\`), after SELECT pg_drop_replication_slot(${sqlLiteral(slot.name)});`,
      });
    } else if (!slot.active) {
      out.push({
        code: 'inactive-slot',
        problem: `replication slot ${slot.name} is inactive${held}: the primary's disk fills while no standby uses it`,
        fix: `start the standby that uses slot ${slot.name}, or if it is gone for good: SELECT pg_drop_replication_slot(${sqlLiteral(slot.name)});`,
      });
    }
  }
  return out;
}

/** Judges a state read from the node's own session. */
export function judge(state: ReplicationState): Verdict {
  if (state.inRecovery) {
    const reason: Reason = {
      code: 'not-primary',
      problem: 'this server is a standby (in recovery), not the primary the node writes to',
      fix: "give the primary's DSN (the node's --wallet); after a failover the promoted standby is the primary",
    };
    return { zeroLoss: false, reasons: [reason], warnings: [], effect: 'unknown' };
  }
  const reasons: Reason[] = [];
  const { settings } = state;
  if (settings.wal_level.value === 'minimal') {
    reasons.push({
      code: 'wal-level-minimal',
      problem: 'wal_level = minimal: no standby can replicate this server',
      fix: 'ALTER SYSTEM SET wal_level = replica; then restart PostgreSQL',
    });
  }
  if (Number(settings.max_wal_senders.value) === 0) {
    reasons.push({
      code: 'no-wal-senders',
      problem: 'max_wal_senders = 0: no standby can connect',
      fix: 'ALTER SYSTEM SET max_wal_senders = 10; then restart PostgreSQL',
    });
  }
  const commit = commitReason(state);
  if (commit) reasons.push(commit);
  const names = parseStandbyNames(settings.synchronous_standby_names.value);
  const hidden = state.standbys.some((s) => s.state === null);
  if (!names) {
    const candidate = state.standbys.find((s) => s.state === 'streaming' && s.name)?.name ?? 'lightningd';
    reasons.push({
      code: 'no-synchronous-standby-names',
      problem: 'synchronous_standby_names is empty: every commit is asynchronous, no standby is waited for',
      fix: `ALTER SYSTEM SET synchronous_standby_names = ${sqlLiteral(candidate)}; ${RELOAD} (\`lnbackup postgres primary --apply\` does it)`,
    });
  } else if (hidden) {
    reasons.push({
      code: 'standbys-hidden',
      problem: `role ${state.user} may not see the details of pg_stat_replication (state, sync_state and lags read NULL), so the standbys cannot be verified`,
      fix: `GRANT pg_monitor TO ${sqlIdent(state.user)};  (as a superuser on the primary; pg_monitor includes pg_read_all_stats)`,
    });
  } else {
    reasons.push(...standbyReasons(state, names));
  }
  const warnings = slotWarnings(state);
  if (reasons.length === 0) return { zeroLoss: true, reasons, warnings, effect: null };
  return { zeroLoss: false, reasons, warnings, effect: effectOf(state, names, hidden) };
}

function effectOf(state: ReplicationState, names: StandbyNames | null, hidden: boolean): Effect {
  if (hidden) return 'unknown';
  if (!names || !WAITING_COMMITS.has(state.settings.synchronous_commit.value)) return 'unprotected';
  return syncStandbys(state).length < names.count ? 'commits-wait' : 'unprotected';
}

/** One sentence on what the node lives through. */
export function describeEffect(effect: Effect): string {
  switch (effect) {
    case 'commits-wait':
      return 'every commit of the node waits on the primary until a synchronous standby is back: the node is stalled (nothing is lost while it waits)';
    case 'unprotected':
      return "the node's commits go through without a standby holding them on disk: a crash of the primary can lose acknowledged commits";
    case 'unknown':
      return 'what commits wait for cannot be told from this connection';
  }
}
