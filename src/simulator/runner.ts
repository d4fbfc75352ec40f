// Runs the simulated lightningd as a child process (main.js): spawnSimulator starts one lifetime and
// parses its event lines; runSimulatorUntilDone restarts it after every crash (the superseded calls'
// scripted deaths, injected kills) until the trace is done, like an operator restarting lightningd.
import { spawn, type ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { processAlive } from '../util/processAlive.js';
import { toCliArgs, type SimulatorCliOptions } from './cliArgs.js';
import type { SimulatorEvent } from './events.js';
import type { HookStatsSummary } from './hookStats.js';
import type { ProcessUsage } from './processUsage.js';

const MAIN = fileURLToPath(new URL('./main.js', import.meta.url));
const STDERR_KEEP = 64 * 1024;

export interface SpawnSimulatorOptions extends SimulatorCliOptions {
  /** Called for each event line as it arrives. */
  onEvent?: (event: SimulatorEvent) => void;
  /** Environment of the simulator (and so of the plugin); default this process's. */
  env?: NodeJS.ProcessEnv;
}

export interface SimulatorExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  events: SimulatorEvent[];
  /** The tail of the simulator's (and the plugin's) stderr. */
  stderr: string;
}

export interface SpawnedSimulator {
  child: ChildProcess;
  /** The events so far, in order. */
  events: SimulatorEvent[];
  /** The first event (already seen or to come) matching `test`; rejects if the process exits first. */
  waitFor(test: (event: SimulatorEvent) => boolean): Promise<SimulatorEvent>;
  exit: Promise<SimulatorExit>;
}

export function spawnSimulator(opts: SpawnSimulatorOptions): SpawnedSimulator {
  const child = spawn(process.execPath, [MAIN, ...toCliArgs(opts)], {
    env: opts.env ?? process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const events: SimulatorEvent[] = [];
  const waiters = new Set<{ test: (e: SimulatorEvent) => boolean; resolve: (e: SimulatorEvent) => void }>();
  let stderr = '';
  const keep = (text: string): void => {
    stderr = (stderr + text).slice(-STDERR_KEEP);
  };
  child.stderr.on('data', (chunk: Buffer) => keep(chunk.toString('utf8')));
  const lines = readline.createInterface({ input: child.stdout });
  lines.on('line', (line) => {
    let event: SimulatorEvent;
    try {
      event = JSON.parse(line) as SimulatorEvent;
    } catch {
      return keep(`[stdout, not an event] ${line}\n`);
    }
    events.push(event);
    opts.onEvent?.(event);
    for (const w of waiters) {
      if (w.test(event)) {
        waiters.delete(w);
        w.resolve(event);
      }
    }
  });
  const linesClosed = new Promise<void>((resolve) => lines.on('close', resolve));
  const exit = new Promise<SimulatorExit>((resolve) => {
    child.on('close', (code, signal) => {
      void linesClosed.then(() => resolve({ code, signal, events, stderr }));
    });
  });
  const waitFor = (test: (event: SimulatorEvent) => boolean): Promise<SimulatorEvent> => {
    const seen = events.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = { test, resolve };
      waiters.add(waiter);
      void exit.then((e) => {
        if (waiters.delete(waiter)) reject(new Error(`the simulator exited (${e.signal ?? e.code}) first: ${e.stderr}`));
      });
    });
  };
  return { child, events, waitFor, exit };
}

export class SimulatorAbortedError extends Error {
  constructor(
    readonly event: Extract<SimulatorEvent, { event: 'aborted' }>,
    readonly lifetimes: SimulatorExit[],
  ) {
    super(`the simulated lightningd aborted at data_version ${event.dataVersion}: ${event.reason}`);
  }
}

export interface SimulatorRunResult {
  /** The data_version the last lifetime ended at. */
  dataVersion: number;
  /** The last lifetime's statistics. */
  stats: HookStatsSummary;
  /** The last lifetime's plugin: its CPU time over the calls, and its threads (null: unknown). */
  plugin: ProcessUsage | null;
  /** Every lifetime's exit, in order (all but the last died by SIGKILL). */
  lifetimes: SimulatorExit[];
}

/** A dead lightningd's plugin sees EOF and exits; the next lifetime starts once it has. */
async function waitForPluginExit(exit: SimulatorExit, timeoutMs: number): Promise<void> {
  const started = exit.events.find((e) => e.event === 'plugin-started');
  if (started?.event !== 'plugin-started') return;
  const deadline = Date.now() + timeoutMs;
  while (processAlive(started.pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
}

/**
 * Runs lifetimes until the trace (or untilVersion) is done, restarting after each SIGKILL. Injected
 * crashes (killSelfAt, killPluginAt) apply to the first lifetime only. Throws SimulatorAbortedError
 * when a lifetime aborts.
 */
export async function runSimulatorUntilDone(opts: SpawnSimulatorOptions & { maxLifetimes?: number }): Promise<SimulatorRunResult> {
  const lifetimes: SimulatorExit[] = [];
  let run: SpawnSimulatorOptions = opts;
  for (;;) {
    if (lifetimes.length === (opts.maxLifetimes ?? 1000)) {
      throw new Error(`the simulator still had not finished after ${lifetimes.length} lifetimes`);
    }
    const exit = await spawnSimulator(run).exit;
    lifetimes.push(exit);
    const done = exit.events.find((e) => e.event === 'done');
    if (exit.code === 0 && done?.event === 'done') return { dataVersion: done.dataVersion, stats: done.stats, plugin: done.plugin, lifetimes };
    const aborted = exit.events.find((e) => e.event === 'aborted');
    if (aborted?.event === 'aborted') throw new SimulatorAbortedError(aborted, lifetimes);
    if (exit.signal !== 'SIGKILL') {
      throw new Error(`the simulator failed (${exit.signal ?? `exit code ${exit.code}`}): ${exit.stderr}`);
    }
    await waitForPluginExit(exit, 10_000);
    run = { ...opts, killSelfAt: undefined, killPluginAt: undefined };
  }
}
