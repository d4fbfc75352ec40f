// The metrics of `lnbackup server --metrics host:port`, in a prom-client registry: what the status
// file says (clients, vaults, bytes, appends, rounds, scrub results), read from the running server's
// status() at each scrape, and what only a stream of events can say (ack latency, commit latency
// and round sizes, refusals by reason), observed through the narrow ServerObserver the server calls.
// Names follow Prometheus's conventions: lnbackup_server_*, seconds and bytes, _total for counters.
import client from 'prom-client';
import type { ServerStatus } from '../server/statusFile.js';
import type { MetricsSource } from './endpoint.js';
import { SnapshotRegistry } from './snapshotRegistry.js';

/** What the server tells the metrics as it happens; each call is a few array operations. */
export interface ServerObserver {
  /** A group-commit round ended: `records` records made durable (or failed) in `seconds`, write and fsync or commit. */
  roundCommitted(records: number, seconds: number, ok: boolean): void;
  /** An append was acknowledged `seconds` after it arrived. */
  acknowledged(seconds: number): void;
  /** A connection or a request was refused; `reason` is a short fixed word (full, not-allowed, quota, too-busy, ...). */
  refused(reason: string): void;
}

export const NO_OBSERVER: ServerObserver = { roundCommitted: () => {}, acknowledged: () => {}, refused: () => {} };

/** Latencies from 100 µs to 10 s. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];
const ROUND_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

export class ServerMetrics implements ServerObserver, MetricsSource {
  private readonly metrics: SnapshotRegistry<ServerStatus>;
  readonly contentType: string;
  private readonly ackLatency: client.Histogram;
  private readonly roundLatency: client.Histogram<'result'>;
  private readonly roundSize: client.Histogram;
  private readonly refusals: client.Counter<'reason'>;

  constructor(readStatus: () => Promise<ServerStatus>) {
    const m = (this.metrics = new SnapshotRegistry('lnbackup_server_', readStatus));
    this.contentType = m.contentType;
    const r = m.registry;
    this.ackLatency = new client.Histogram({
      name: 'lnbackup_server_ack_latency_seconds',
      help: 'From an append arriving to its acknowledgement (durable)',
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
    this.roundLatency = new client.Histogram({
      name: 'lnbackup_server_commit_seconds',
      help: 'One group-commit round: write and fsync (files) or commit (PostgreSQL)',
      labelNames: ['result'],
      buckets: LATENCY_BUCKETS,
      registers: [r],
    });
    this.roundSize = new client.Histogram({
      name: 'lnbackup_server_commit_round_records',
      help: 'Records made durable together in one group-commit round',
      buckets: ROUND_SIZE_BUCKETS,
      registers: [r],
    });
    this.refusals = new client.Counter({
      name: 'lnbackup_server_refusals_total',
      help: 'Connections and requests refused, by reason',
      labelNames: ['reason'],
      registers: [r],
    });
    const sum = (st: ServerStatus, of: (c: ServerStatus['clients'][number]) => number): number => st.clients.reduce((n, c) => n + of(c), 0);
    m.gauge('lnbackup_server_connections', 'Open connections (handshaking included)', (st) => st.connections);
    m.gauge('lnbackup_server_handshaking', 'Connections whose transport handshake is not finished', (st) => st.handshaking);
    m.gauge('lnbackup_server_clients', 'Client keys known to the server (with a vault or connected)', (st) => st.clients.length);
    m.gauge('lnbackup_server_clients_connected', 'Clients with at least one open connection', (st) => st.clients.filter((c) => c.connected).length);
    m.gauge('lnbackup_server_vaults', 'Vaults stored', (st) => sum(st, (c) => c.vaults.length));
    m.gauge('lnbackup_server_stored_bytes', 'Bytes stored for all clients (records and page packs)', (st) => sum(st, (c) => c.totalBytes));
    m.gauge('lnbackup_server_pending_appends', 'Appends accepted and not yet durable', (st) => sum(st, (c) => c.pendingAppends));
    m.gauge('lnbackup_server_memory_held_bytes', 'What all connections hold now against the memory budget', (st) => st.memory.heldBytes);
    m.gauge('lnbackup_server_memory_limit_bytes', 'The memory budget (--memory-budget)', (st) => st.memory.limitBytes);
    m.total('lnbackup_server_memory_refusals_total', 'Messages refused because the memory budget was spent (TooBusy)', (st) => st.memory.refusals);
    m.total('lnbackup_server_appends_total', 'Appends made durable and acknowledged', (st) => st.appendCounters.appends);
    m.total('lnbackup_server_records_total', 'Records made durable and acknowledged', (st) => st.appendCounters.records);
    m.total('lnbackup_server_appended_bytes_total', 'Bytes of records made durable', (st) => st.appendCounters.bytes);
    m.total('lnbackup_server_commit_rounds_total', 'Group-commit rounds', (st) => st.storeCounters?.rounds ?? 0);
    m.total('lnbackup_server_handshake_failures_total', 'Transport handshakes that failed', (st) => st.handshakeFailures);
    m.gauge('lnbackup_server_scrub_last_finished_timestamp_seconds', 'When the last storage scrub finished (0: none yet)', (st) =>
      st.scrub?.last ? Date.parse(st.scrub.last.finishedAt) / 1000 : 0,
    );
    m.gauge(
      'lnbackup_server_scrub_damaged_files',
      'Files the last scrub left damaged (beyond repair): alert on > 0',
      (st) => st.scrub?.last?.damagedFiles ?? 0,
    );
    m.gauge('lnbackup_server_scrub_repaired_files', 'Files the last scrub repaired', (st) => st.scrub?.last?.repairedFiles ?? 0);
    m.gauge('lnbackup_server_scrub_unprotected_files', 'Files the last scrub found without parity', (st) => st.scrub?.last?.unprotectedFiles ?? 0);
  }

  /** The registry's text, with the server's status read once for this scrape. */
  render(): Promise<string> {
    return this.metrics.render();
  }

  roundCommitted(records: number, seconds: number, ok: boolean): void {
    this.roundLatency.observe({ result: ok ? 'ok' : 'failed' }, seconds);
    if (ok) this.roundSize.observe(records);
  }

  acknowledged(seconds: number): void {
    this.ackLatency.observe(seconds);
  }

  refused(reason: string): void {
    this.refusals.inc({ reason });
  }
}
