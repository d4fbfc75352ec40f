// `lnbackup postgres check`: connects as the node does (its wallet DSN: same role, same database),
// reads the replication state and judges it (verdict.ts). The result carries the verdict, every
// reason with its fix, the standbys with their lags, the slots and the settings, and how long the
// check took; the DSN only ever appears redacted.
import { connectDsn, type ConnectOptions } from './connect.js';
import { redactDsn, scrubSecret } from './dsn.js';
import { readReplicationState, type ReplicationState, type Setting, type SettingName, type SlotRow, type StandbyRow } from './replicationState.js';
import { judge, type Effect, type Reason } from './verdict.js';

export interface CheckResult {
  /** The DSN with its password redacted. */
  dsn: string;
  verdict: 'zero-loss' | 'not-zero-loss';
  primary: boolean;
  reasons: Reason[];
  warnings: Reason[];
  /** What the node lives through when not zero-loss; null when zero-loss. */
  effect: Effect | null;
  user: string;
  database: string;
  serverVersion: string;
  settings: Record<SettingName, Setting>;
  standbys: StandbyRow[];
  slots: SlotRow[];
  durationMs: number;
}

/** Checks the server at `dsn`; throws PostgresUnreachable (exit 1) or DsnError when it cannot. */
export async function checkPostgres(dsn: string, options: ConnectOptions = {}): Promise<CheckResult> {
  const started = performance.now();
  const client = await connectDsn(dsn, { applicationName: 'lnbackup-check', ...options });
  let state: ReplicationState;
  try {
    state = await readReplicationState(client);
  } catch (err) {
    throw new Error(
      `connected to ${redactDsn(dsn)} but reading its replication state failed: ${scrubSecret(err instanceof Error ? err.message : String(err), dsn)}`,
    );
  } finally {
    await client.end().catch(() => undefined);
  }
  const verdict = judge(state);
  return {
    dsn: redactDsn(dsn),
    verdict: verdict.zeroLoss ? 'zero-loss' : 'not-zero-loss',
    primary: !state.inRecovery,
    reasons: verdict.reasons,
    warnings: verdict.warnings,
    effect: verdict.effect,
    user: state.user,
    database: state.database,
    serverVersion: state.serverVersion,
    settings: state.settings,
    standbys: state.standbys,
    slots: state.slots,
    durationMs: Math.round((performance.now() - started) * 10) / 10,
  };
}
