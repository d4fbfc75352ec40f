// The metrics of the plugin (`metrics` in lnbackup.json, off by default), in a prom-client
// registry: the db_write hook's latency, observed once its answer is written; and, read from the
// plugin's status at each scrape, the newest data_version and record, the vault's size, how long
// the node has been waiting for its destinations, compactions, and each destination's durable
// record, lag and state. Nothing here runs inside a hook's answer.
import client from 'prom-client';
import type { MetricsSource } from './endpoint.js';
import { SnapshotRegistry } from './snapshotRegistry.js';

export interface PluginMetricsDestination {
  readonly name: string;
  readonly kind: string;
  readonly state: string;
  readonly durableSeq: bigint;
  readonly lagRecords: number;
}

/** What the plugin says of itself at a scrape (null: not known yet, e.g. before the first call). */
export interface PluginMetricsSnapshot {
  readonly dataVersion: number | null;
  readonly lastSeq: bigint | null;
  readonly generation: number | null;
  readonly vaultBytes: number | null;
  readonly stalledSeconds: number;
  readonly compactions: number;
  readonly destinations: readonly PluginMetricsDestination[];
  /** A PostgreSQL node: 1 while its commits are zero-loss, 0 otherwise; null on a sqlite node. */
  readonly postgresZeroLoss: number | null;
}

/** From 50 µs to 30 s: a hook is normally well under a millisecond, a stall lasts seconds. */
const HOOK_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30];

export class PluginMetrics implements MetricsSource {
  private readonly metrics: SnapshotRegistry<PluginMetricsSnapshot>;
  private readonly hook: client.Histogram;
  readonly contentType: string;

  constructor(snapshot: () => PluginMetricsSnapshot) {
    const m = (this.metrics = new SnapshotRegistry('lnbackup_plugin_', snapshot));
    this.contentType = m.contentType;
    this.hook = new client.Histogram({
      name: 'lnbackup_hook_seconds',
      help: 'db_write hook: from the call arriving to the answer written',
      buckets: HOOK_BUCKETS,
      registers: [m.registry],
    });
    m.gauge('lnbackup_data_version', "The node's newest data_version held in the vault", (x) => x.dataVersion);
    m.gauge('lnbackup_last_record_seq', 'The newest record in the vault', (x) => (x.lastSeq === null ? null : Number(x.lastSeq)));
    m.gauge('lnbackup_generation', "The vault's newest generation", (x) => x.generation);
    m.gauge('lnbackup_vault_bytes', "The vault's records and page packs", (x) => x.vaultBytes);
    // Labelled so that a sqlite node exports no sample at all (an unlabelled gauge always shows 0).
    m.labelled(
      'lnbackup_postgres_zero_loss',
      "A PostgreSQL node: 1 while every commit waits for a standby's flush, 0 when not (absent on a sqlite node): alert on 0",
      ['wallet'],
      (x) => (x.postgresZeroLoss === null ? [] : [[{ wallet: 'postgres' }, x.postgresZeroLoss]]),
    );
    m.gauge(
      'lnbackup_stalled_seconds',
      'How long the current db_write call has waited for its destinations (0: none waits): alert when it grows',
      (x) => x.stalledSeconds,
    );
    m.total('lnbackup_compactions_total', 'Compactions finished since the plugin started', (x) => x.compactions);
    const perDestination = (name: string, help: string, read: (d: PluginMetricsDestination) => number): void =>
      m.labelled(name, help, ['destination', 'kind'], (x) => x.destinations.map((d) => [{ destination: d.name, kind: d.kind }, read(d)] as const));
    perDestination('lnbackup_destination_durable_seq', 'The newest record durable at the destination', (d) => Number(d.durableSeq));
    perDestination(
      'lnbackup_destination_lag_records',
      'Records handed to the destination and not durable there yet: alert when it stays above 0',
      (d) => d.lagRecords,
    );
    perDestination('lnbackup_destination_up', '1 when the destination takes records (ok, catching-up), 0 when stalled or failed', (d) =>
      d.state === 'ok' || d.state === 'catching-up' ? 1 : 0,
    );
  }

  /** A db_write answer was written `seconds` after its call arrived. */
  hookAnswered(seconds: number): void {
    this.hook.observe(seconds);
  }

  render(): Promise<string> {
    return this.metrics.render();
  }
}
