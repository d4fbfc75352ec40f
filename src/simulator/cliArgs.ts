// The simulator's command-line flags, both ways: parsed by main.ts, produced by runner.ts.
import { parseArgs } from 'node:util';
import { KILL_POINTS, type KillPoint } from './events.js';
import type { WaitMode } from './pluginProcess.js';

export interface SimulatorCliOptions {
  lightningDir: string;
  /** Default 'regtest'. */
  network?: string;
  /** Trace segments in order, each `FILE[@FROM-TO]`. */
  traces: string[];
  /** The plugin's path (a `.js` file runs under node), or null for --no-plugin. */
  plugin: string | null;
  preInit?: number;
  untilVersion?: number;
  killSelfAt?: { entry: number; point: KillPoint };
  killPluginAt?: number;
  hookTimeoutMs?: number;
  /** Print every Nth `committed` event (the last one is always printed). */
  progressEvery?: number;
  /** How to wait for the plugin's answers (default 'idle'; 'spin' as lightningd). */
  wait?: WaitMode;
  /** The `wallet` that listconfigs reports (a postgres:// DSN for a PostgreSQL node). */
  walletDsn?: string;
  /** Stay up this long after the last call before the clean shutdown. */
  lingerMs?: number;
}

export class UsageError extends Error {}

function count(flag: string, text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text)) throw new UsageError(`--${flag} needs a non-negative integer, got ${JSON.stringify(text)}`);
  return Number(text);
}

function killPoint(text: string | undefined): { entry: number; point: KillPoint } | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+):(.+)$/.exec(text);
  if (!m || !KILL_POINTS.includes(m[2] as KillPoint)) {
    throw new UsageError(`--kill-self-at needs ENTRY:POINT with POINT one of ${KILL_POINTS.join(', ')}`);
  }
  return { entry: Number(m[1]), point: m[2] as KillPoint };
}

export function parseCliArgs(argv: string[]): SimulatorCliOptions {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        'lightning-dir': { type: 'string' },
        network: { type: 'string' },
        trace: { type: 'string', multiple: true },
        plugin: { type: 'string' },
        'no-plugin': { type: 'boolean' },
        'pre-init': { type: 'string' },
        'until-version': { type: 'string' },
        'kill-self-at': { type: 'string' },
        'kill-plugin-at': { type: 'string' },
        'hook-timeout': { type: 'string' },
        'progress-every': { type: 'string' },
        wait: { type: 'string' },
        wallet: { type: 'string' },
        linger: { type: 'string' },
      },
    }));
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const lightningDir = values['lightning-dir'];
  if (lightningDir === undefined) throw new UsageError('--lightning-dir is required');
  if (!values.trace?.length) throw new UsageError('at least one --trace is required');
  if ((values.plugin === undefined) === (values['no-plugin'] !== true)) {
    throw new UsageError('give exactly one of --plugin PATH and --no-plugin');
  }
  const wait = values.wait;
  if (wait !== undefined && wait !== 'spin' && wait !== 'idle')
    throw new UsageError(`--wait takes 'spin' (as lightningd) or 'idle', not ${JSON.stringify(wait)}`);
  return {
    lightningDir,
    network: values.network,
    traces: values.trace,
    plugin: values.plugin ?? null,
    preInit: count('pre-init', values['pre-init']),
    untilVersion: count('until-version', values['until-version']),
    killSelfAt: killPoint(values['kill-self-at']),
    killPluginAt: count('kill-plugin-at', values['kill-plugin-at']),
    hookTimeoutMs: count('hook-timeout', values['hook-timeout']),
    progressEvery: count('progress-every', values['progress-every']),
    wait,
    walletDsn: values.wallet,
    lingerMs: count('linger', values.linger),
  };
}

export function toCliArgs(o: SimulatorCliOptions): string[] {
  const args = ['--lightning-dir', o.lightningDir];
  if (o.network !== undefined) args.push('--network', o.network);
  for (const t of o.traces) args.push('--trace', t);
  args.push(...(o.plugin === null ? ['--no-plugin'] : ['--plugin', o.plugin]));
  const numbers: [string, number | undefined][] = [
    ['--pre-init', o.preInit],
    ['--until-version', o.untilVersion],
    ['--kill-plugin-at', o.killPluginAt],
    ['--hook-timeout', o.hookTimeoutMs],
    ['--progress-every', o.progressEvery],
    ['--linger', o.lingerMs],
  ];
  for (const [flag, n] of numbers) if (n !== undefined) args.push(flag, String(n));
  if (o.killSelfAt) args.push('--kill-self-at', `${o.killSelfAt.entry}:${o.killSelfAt.point}`);
  if (o.wait !== undefined) args.push('--wait', o.wait);
  if (o.walletDsn !== undefined) args.push('--wallet', o.walletDsn);
  return args;
}
