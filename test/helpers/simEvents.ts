// Reading the simulated lightningd's events in tests: the events of one kind, and the messages
// the plugin logged over one or more lifetimes.
import type { SimulatorEvent } from '../../src/simulator/events.js';

/** The events of one kind, typed as that kind. */
export function ofKind<K extends SimulatorEvent['event']>(events: readonly SimulatorEvent[], kind: K): Extract<SimulatorEvent, { event: K }>[] {
  return events.filter((e): e is Extract<SimulatorEvent, { event: K }> => e.event === kind);
}

/** The messages of every plugin-log event of the lifetimes, in order. */
export function pluginLogs(lifetimes: readonly { readonly events: readonly SimulatorEvent[] }[]): string[] {
  return ofKind(
    lifetimes.flatMap((l) => l.events),
    'plugin-log',
  ).map((e) => e.message);
}
