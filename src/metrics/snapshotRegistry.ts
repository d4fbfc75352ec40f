// A prom-client registry whose gauges and counters are read from one snapshot of the process's
// state per scrape (the server's status, the plugin's status): render() takes the snapshot once,
// then every metric's collect reads it. Histograms and event counters are registered on `registry`
// by the owner and observed as things happen. The process's own metrics come with `prefix`.
import client from 'prom-client';
import type { MetricsSource } from './endpoint.js';

export class SnapshotRegistry<S> implements MetricsSource {
  readonly registry = new client.Registry();
  readonly contentType = this.registry.contentType;
  /** The snapshot of the scrape under way (prom-client calls each collect in turn). */
  private current: S | null = null;

  constructor(
    prefix: string,
    private readonly take: () => S | Promise<S>,
  ) {
    client.collectDefaultMetrics({ register: this.registry, prefix });
  }

  /** A gauge with the snapshot's value (null: no sample). */
  gauge(name: string, help: string, value: (s: S) => number | null): void {
    const current = (): S | null => this.current;
    new client.Gauge({
      name,
      help,
      registers: [this.registry],
      collect() {
        const s = current();
        const v = s === null ? null : value(s);
        if (v !== null) this.set(v);
      },
    });
  }

  /** A counter whose total is kept elsewhere and read from the snapshot. */
  total(name: string, help: string, value: (s: S) => number): void {
    const current = (): S | null => this.current;
    new client.Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        const s = current();
        if (s === null) return;
        this.reset();
        this.inc(value(s));
      },
    });
  }

  /** A gauge with one sample per label set the snapshot lists (none listed: no sample at all). */
  labelled<L extends string>(name: string, help: string, labelNames: readonly L[], samples: (s: S) => Iterable<readonly [Record<L, string>, number]>): void {
    const current = (): S | null => this.current;
    new client.Gauge({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        const s = current();
        if (s === null) return;
        this.reset();
        for (const [labels, v] of samples(s)) this.set(labels, v);
      },
    });
  }

  async render(): Promise<string> {
    this.current = await this.take();
    try {
      return await this.registry.metrics();
    } finally {
      this.current = null;
    }
  }
}
