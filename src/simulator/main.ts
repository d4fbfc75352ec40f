// The simulated lightningd as a process of its own, so tests can kill -9 it like the real one.
// It runs one lifetime over a chain of traces against <lightning-dir>/<network>/lightningd.sqlite3.
//
//   node dist/src/simulator/main.js --lightning-dir D [--network regtest] --trace FILE[@FROM-TO] [--trace ...]
//     (--plugin PATH | --no-plugin) [--pre-init K] [--until-version V] [--kill-self-at ENTRY:POINT]
//     [--kill-plugin-at ENTRY] [--hook-timeout MS] [--progress-every N] [--wait spin|idle]
//     [--wallet DSN] [--linger MS]
//   --wait spin: wait for each answer as lightningd does, busy-polling the plugin's pipe (one core spins)
//   --wallet: what listconfigs reports as the node's wallet on <lightning-dir>/<network>/lightning-rpc
//   --linger: stay up MS after the last call (RPC served, the plugin running) before shutting down
//
// ENTRY is a 0-based index into the chained traces' entries (marks included); POINT is one of
// before-hook, after-ack, after-commit. A PATH ending in .js runs under this node.
//
// stdout carries one JSON event per line:
//   {"event":"resumed","dataVersion":V,"entry":I,"preInit":K}     where this lifetime starts
//   {"event":"plugin-started","pid":N}
//   {"event":"plugin-log","level":"info","message":"..."}
//   {"event":"committed","dataVersion":N,"entry":I}    every Nth with --progress-every; the last always
//   {"event":"crash","cause":"superseded"|"kill-self","entry":I,"point":P,"dataVersion":N}
//                                                     then the process SIGKILLs itself
//   {"event":"aborted","reason":"...","dataVersion":N,"entry":I,"lastCommitted":M}   exit code 2
//   {"event":"done","dataVersion":N,"stats":{...}}                                   exit code 0
// Exit code 1 (message on stderr) for a usage or setup error. The plugin's stderr passes through.
import path from 'node:path';
import { parseCliArgs, UsageError } from './cliArgs.js';
import type { SimulatorEvent } from './events.js';
import { SimulatedLightningd } from './lightningd.js';
import { pluginCommandFor } from './pluginProcess.js';
import { loadTraceChain, parseSegmentSpec } from './trace.js';

/** Prints events, throttling `committed` lines but never hiding the last one. */
function eventPrinter(progressEvery: number): (event: SimulatorEvent) => void {
  let unprinted: SimulatorEvent | null = null;
  let commits = 0;
  const print = (event: SimulatorEvent): void => {
    // Synchronous on pipes and files: nothing is lost when the process SIGKILLs itself next.
    process.stdout.write(JSON.stringify(event) + '\n');
  };
  return (event) => {
    if (event.event === 'committed') {
      unprinted = ++commits % progressEvery === 0 ? null : event;
      if (!unprinted) print(event);
      return;
    }
    if (event.event !== 'plugin-log' && unprinted) {
      print(unprinted);
      unprinted = null;
    }
    print(event);
  };
}

async function main(): Promise<number> {
  const opts = parseCliArgs(process.argv.slice(2));
  const network = opts.network ?? 'regtest';
  const sim = new SimulatedLightningd({
    networkDir: path.resolve(opts.lightningDir, network),
    network,
    entries: loadTraceChain(opts.traces.map(parseSegmentSpec)),
    plugin: opts.plugin === null ? null : pluginCommandFor(opts.plugin),
    preInit: opts.preInit,
    untilVersion: opts.untilVersion,
    killSelfAt: opts.killSelfAt,
    killPluginAt: opts.killPluginAt,
    hookTimeoutMs: opts.hookTimeoutMs,
    crashMode: 'kill-process',
    pluginStderr: 'inherit',
    wait: opts.wait,
    walletDsn: opts.walletDsn,
    lingerMs: opts.lingerMs,
    onEvent: eventPrinter(Math.max(1, opts.progressEvery ?? 1)),
  });
  const outcome = await sim.run();
  return outcome.kind === 'done' ? 0 : 2;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    const usage = err instanceof UsageError ? '\nusage: see the comment at the top of src/simulator/main.ts' : '';
    process.stderr.write(`lnbackup simulator: ${err instanceof Error ? err.message : String(err)}${usage}\n`);
    process.exit(1);
  },
);
