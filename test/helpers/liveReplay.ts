// A simulated lightningd replaying traces through the real plugin, lifetime after lifetime, while
// the test watches it live: every `committed` event is timestamped on arrival, so a test can ask
// "what had the node committed at this instant" and "when did it commit next". A lifetime that
// ends in one of the trace's scripted deaths (a superseded call: acked, never committed) is
// followed by the next one once its plugin has exited, as an operator restarting lightningd would.
import type { ChildProcess } from 'node:child_process';
import { PLUGIN_PATH } from '../../src/cli/initNode.js';
import { spawnSimulator, type SimulatorExit } from '../../src/simulator/runner.js';
import type { SimulatorEvent } from '../../src/simulator/events.js';
import { findProcesses, reapLeftovers } from './torture.js';

export interface Commit {
  readonly dataVersion: number;
  /** Date.now() when the event arrived. */
  readonly at: number;
}

export interface LiveReplayOptions {
  readonly lightningDir: string;
  readonly networkDir: string;
  readonly traces: readonly string[];
  /** A hook call unanswered this long aborts the lifetime (and so fails the replay). */
  readonly hookTimeoutMs?: number;
  /** How long a dead lifetime's plugin may take to exit before it is killed (and counted). */
  readonly pluginExitMs?: number;
  readonly onEvent?: (event: SimulatorEvent) => void;
}

interface CommitWaiter {
  readonly after: number;
  readonly resolve: (c: Commit | null) => void;
}

export class LiveReplay {
  /** The highest data_version committed so far (0 before the first commit). */
  committed = 0;
  commits = 0;
  lastCommit: Commit | null = null;
  readonly lifetimes: SimulatorExit[] = [];
  /** What the plugin logged (all lifetimes), in order. */
  readonly pluginLogs: { readonly level: string; readonly message: string }[] = [];
  /** Plugins of dead lifetimes that were still alive after pluginExitMs and had to be killed. */
  lingeringPlugins = 0;
  /** Set once the trace is done (or the replay failed). */
  finished = false;
  finalVersion: number | null = null;
  /** Resolves with the final data_version; rejects when a lifetime aborts or ends unexpectedly. */
  readonly done: Promise<number>;
  private readonly waiters = new Set<CommitWaiter>();
  private current: ChildProcess | null = null;
  private aborted = false;

  constructor(private readonly o: LiveReplayOptions) {
    this.done = this.run().finally(() => {
      this.finished = true;
      for (const w of this.waiters) w.resolve(null);
      this.waiters.clear();
    });
    this.done.catch(() => undefined);
  }

  /** The first commit that arrives after the instant `after` (ms); null when the replay ends first. */
  nextCommitAfter(after: number): Promise<Commit | null> {
    const last = this.lastCommit;
    if (last !== null && last.at > after) return Promise.resolve(last);
    if (this.finished) return Promise.resolve(null);
    return new Promise((resolve) => this.waiters.add({ after, resolve }));
  }

  private commit(dataVersion: number): void {
    const c: Commit = { dataVersion, at: Date.now() };
    this.commits++;
    if (dataVersion > this.committed) this.committed = dataVersion;
    this.lastCommit = c;
    for (const w of this.waiters) {
      if (c.at > w.after) {
        this.waiters.delete(w);
        w.resolve(c);
      }
    }
  }

  private async run(): Promise<number> {
    for (;;) {
      if (this.aborted) throw new Error('the replay was aborted');
      if (this.lifetimes.length >= 200) throw new Error(`the replay still was not done after ${this.lifetimes.length} lifetimes`);
      const sim = spawnSimulator({
        lightningDir: this.o.lightningDir,
        traces: [...this.o.traces],
        plugin: PLUGIN_PATH,
        hookTimeoutMs: this.o.hookTimeoutMs ?? 120_000,
        onEvent: (e) => {
          if (e.event === 'committed') this.commit(e.dataVersion);
          else if (e.event === 'plugin-log') this.pluginLogs.push({ level: e.level, message: e.message });
          this.o.onEvent?.(e);
        },
      });
      this.current = sim.child;
      const exit = await sim.exit;
      this.current = null;
      this.lifetimes.push(exit);
      const done = exit.events.find((e) => e.event === 'done');
      if (exit.code === 0 && done?.event === 'done') {
        this.finalVersion = done.dataVersion;
        return done.dataVersion;
      }
      const aborted = exit.events.find((e) => e.event === 'aborted');
      if (aborted?.event === 'aborted') {
        throw new Error(`lifetime ${this.lifetimes.length} aborted at data_version ${aborted.dataVersion}: ${aborted.reason}\n${exit.stderr.slice(-4000)}`);
      }
      const crash = exit.events.find((e) => e.event === 'crash');
      if (exit.signal !== 'SIGKILL' || crash?.event !== 'crash' || crash.cause !== 'superseded') {
        throw new Error(`lifetime ${this.lifetimes.length} ended unexpectedly (code ${exit.code}, signal ${exit.signal}):\n${exit.stderr.slice(-4000)}`);
      }
      // The dead lightningd's plugin sees EOF and exits (it may first wait a little for a server).
      this.lingeringPlugins += (await reapLeftovers(PLUGIN_PATH, this.o.networkDir, this.o.pluginExitMs ?? 15_000)).length;
    }
  }

  /** After a failed test: SIGKILLs the running lifetime (by its pid) and its plugin, and waits for the end. */
  async abort(): Promise<void> {
    if (this.finished) return;
    this.aborted = true;
    this.current?.kill('SIGKILL');
    for (const pid of findProcesses(PLUGIN_PATH, this.o.networkDir)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
    await this.done.catch(() => undefined);
  }
}
