// What a PostgreSQL server says about its replication, read through one session as the node's own
// role in the node's own database (so per-role and per-database settings are the ones seen): is
// it a primary, the settings that decide what a commit waits for (with where each value comes
// from), each standby in pg_stat_replication, and each replication slot.
// Views: https://www.postgresql.org/docs/15/monitoring-stats.html#MONITORING-PG-STAT-REPLICATION-VIEW
// and https://www.postgresql.org/docs/15/view-pg-replication-slots.html
import type pg from 'pg';

export const SETTING_NAMES = ['synchronous_commit', 'synchronous_standby_names', 'wal_level', 'max_wal_senders', 'max_replication_slots'] as const;
export type SettingName = (typeof SETTING_NAMES)[number];

export interface Setting {
  value: string;
  /** pg_settings.source: default, configuration file, command line, database, user, database user, client, … */
  source: string;
}

export interface StandbyRow {
  /** null: this role may not see the row's details (no pg_read_all_stats). */
  name: string | null;
  /** startup, catchup, streaming, backup, stopping; null when hidden. */
  state: string | null;
  /** sync, quorum, potential, async; null when hidden. */
  syncState: string | null;
  clientAddr: string | null;
  sentLsn: string | null;
  flushLsn: string | null;
  /** Seconds; null when unknown (hidden, or no recent WAL to time). */
  writeLag: number | null;
  flushLag: number | null;
  replayLag: number | null;
}

export interface SlotRow {
  name: string;
  type: string;
  active: boolean;
  /** WAL the slot keeps on the primary (bytes), null when the slot has never been used. */
  retainedBytes: number | null;
  /** reserved, extended, unreserved, lost (null before first use). */
  walStatus: string | null;
}

export interface ReplicationState {
  serverVersion: string;
  inRecovery: boolean;
  user: string;
  database: string;
  superuser: boolean;
  /** Member of pg_read_all_stats (or superuser): sees every standby's details. */
  readsAllStats: boolean;
  settings: Record<SettingName, Setting>;
  standbys: StandbyRow[];
  slots: SlotRow[];
}

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** Reads the state; the slots only on a primary (a standby cannot say how much WAL they keep). */
export async function readReplicationState(client: pg.Client): Promise<ReplicationState> {
  const who = await client.query<{ in_recovery: boolean; usr: string; db: string; version: string; superuser: boolean; all_stats: boolean }>(
    `SELECT pg_is_in_recovery() AS in_recovery, current_user AS usr, current_database() AS db,
            current_setting('server_version') AS version,
            (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser,
            pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS all_stats`,
  );
  const settingRows = await client.query<{ name: SettingName; setting: string; source: string }>(
    'SELECT name, setting, source FROM pg_settings WHERE name = ANY($1)',
    [SETTING_NAMES as readonly string[]],
  );
  const settings = Object.fromEntries(settingRows.rows.map((r) => [r.name, { value: r.setting, source: r.source }])) as Record<SettingName, Setting>;
  const standbys = await client.query(
    `SELECT application_name, state, sync_state, host(client_addr) AS client_addr,
            sent_lsn::text AS sent_lsn, flush_lsn::text AS flush_lsn,
            extract(epoch FROM write_lag)::float8 AS write_lag, extract(epoch FROM flush_lag)::float8 AS flush_lag,
            extract(epoch FROM replay_lag)::float8 AS replay_lag
       FROM pg_stat_replication ORDER BY application_name`,
  );
  const inRecovery = who.rows[0].in_recovery;
  const slots = inRecovery
    ? { rows: [] }
    : await client.query(
        `SELECT slot_name, slot_type, active, wal_status,
                CASE WHEN restart_lsn IS NULL THEN NULL ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 END AS retained
           FROM pg_replication_slots ORDER BY slot_name`,
      );
  return {
    serverVersion: who.rows[0].version,
    inRecovery,
    user: who.rows[0].usr,
    database: who.rows[0].db,
    superuser: who.rows[0].superuser === true,
    readsAllStats: who.rows[0].all_stats === true,
    settings,
    standbys: standbys.rows.map((r: Record<string, unknown>) => ({
      name: (r.application_name as string | null) ?? null,
      state: (r.state as string | null) ?? null,
      syncState: (r.sync_state as string | null) ?? null,
      clientAddr: (r.client_addr as string | null) ?? null,
      sentLsn: (r.sent_lsn as string | null) ?? null,
      flushLsn: (r.flush_lsn as string | null) ?? null,
      writeLag: num(r.write_lag),
      flushLag: num(r.flush_lag),
      replayLag: num(r.replay_lag),
    })),
    slots: slots.rows.map((r: Record<string, unknown>) => ({
      name: r.slot_name as string,
      type: r.slot_type as string,
      active: r.active === true,
      retainedBytes: num(r.retained),
      walStatus: (r.wal_status as string | null) ?? null,
    })),
  };
}
