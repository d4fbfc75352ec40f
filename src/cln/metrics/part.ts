// The metrics part of lnbackup-cln: with `metrics` in lnbackup.json ("127.0.0.1:9737"; off when
// absent), a Prometheus endpoint on that address, started after `init` (src/metrics/: the
// registry, the endpoint). A scrape reads the plugin's status (src/metrics/pluginMetrics.ts maps
// it); the db_write hook's latency is observed by the router once each answer is written, never
// inside it. Only loopback addresses are accepted: the figures are the operator's, not the world's.
import fs from 'node:fs';
import { configPath, readConfig } from '../config.js';
import type { PartContext, PluginPart } from '../part.js';
import type { PluginStatus } from '../plugin.js';
import { parseMetricsAddress, startMetricsEndpoint, type MetricsEndpoint } from '../../metrics/endpoint.js';
import { PluginMetrics, type PluginMetricsSnapshot } from '../../metrics/pluginMetrics.js';

export interface MetricsPartStatus {
  /** The endpoint's URL while it serves, else null. */
  readonly url: string | null;
  readonly error: string | null;
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/;

/** What a scrape reports, from the plugin's status. */
export function snapshotOf(s: PluginStatus): PluginMetricsSnapshot {
  const open = 'generation' in s ? s : null;
  const stalledForMs = 'stalledForMs' in s ? s.stalledForMs : null;
  return {
    dataVersion: open?.version ?? null,
    lastSeq: open ? BigInt(open.lastSeq) : null,
    generation: open?.generation ?? null,
    vaultBytes: open?.vaultBytes ?? null,
    stalledSeconds: (stalledForMs ?? 0) / 1000,
    compactions: 'compaction' in s ? s.compaction.compactions : 0,
    destinations: ('destinations' in s ? s.destinations : []).map((d) => ({
      name: d.name,
      kind: d.kind,
      state: d.state,
      durableSeq: BigInt(d.durableSeq),
      lagRecords: d.lagRecords,
    })),
    postgresZeroLoss: s.postgres.watch === null ? null : s.postgres.watch.state === 'zero-loss' ? 1 : 0,
  };
}

export class MetricsPart implements PluginPart<MetricsPartStatus> {
  readonly name = 'metrics';
  private metrics: PluginMetrics | null = null;
  private endpoint: MetricsEndpoint | null = null;
  private error: string | null = null;
  private closed = false;

  constructor(
    private readonly networkDir: string,
    private readonly ctx: PartContext,
    private readonly pluginStatus: () => PluginStatus,
  ) {}

  init(): void {
    let address: string | undefined;
    try {
      address = fs.existsSync(configPath(this.networkDir)) ? readConfig(this.networkDir).metrics : undefined;
    } catch {
      return; // the backup part reports a bad configuration
    }
    if (address === undefined) return;
    this.start(address).catch((err: unknown) => {
      this.error = err instanceof Error ? err.message : String(err);
      this.ctx.log('unusual', `metrics not served: ${this.error}`);
    });
  }

  /** A db_write answer was written `seconds` after its call arrived (called by the router, after the answer). */
  hookAnswered(seconds: number): void {
    this.metrics?.hookAnswered(seconds);
  }

  status(): MetricsPartStatus {
    return { url: this.endpoint?.url ?? null, error: this.error };
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.endpoint?.close();
  }

  private async start(address: string): Promise<void> {
    const { host, port } = parseMetricsAddress(address);
    if (!LOOPBACK.test(host))
      throw new Error(`metrics address ${address} is not a loopback address (127.0.0.1 or ::1); the plugin serves its metrics on this machine only`);
    const metrics = new PluginMetrics(() => snapshotOf(this.pluginStatus()));
    this.metrics = metrics;
    const endpoint = await startMetricsEndpoint(host, port, metrics);
    if (this.closed) return endpoint.close();
    this.endpoint = endpoint;
    this.ctx.log('info', `metrics at ${endpoint.url}`);
    this.ctx.statusChanged();
  }
}
