// Section 3: where lnbackup's hook time goes.
//
// In-process: one LnbackupPlugin on a vault of its own gets every call of the trace in order, as
// JSON-RPC text, exactly like src/cln/main.ts hands it over (JSON.parse, then handle). Timers are
// put around Journal.record, RecordSealer.seal, VaultWriter.append (the write) and VaultWriter.sync
// (the fdatasync) for the duration of the profile, so one call's time splits, in the same call, into
//   parse          JSON.parse of the request
//   plugin logic   handle minus Journal.record (params check, retry wrapper, the durability policy's
//                  bookkeeping and the promises of the async handle, latency window, reply)
//   seal           nonce, XChaCha20-Poly1305, header, SHA-256 chain hash
//   write          the segment write (pwrite)
//   fdatasync      VaultWriter.sync
//   journal other  Journal.record minus the three above (supersede decision, encodeWrites, tail)
// Interleaved with each call, so each sees the same disk weather:
//   bare           write + fdatasync of the very same sealed bytes to a plain file opened for append
//   baseline       JSON.parse + JSON.stringify(params) + write + fsync, what bench/baselinePlugin does
//
// Through the simulator: a plugin that answers at once (the stdio round-trip floor), and the real
// LnbackupPlugin with a timer inside (bench/probePlugin.ts), which splits the hook latency into time
// inside the plugin process and transport.
import fs from 'node:fs';
import path from 'node:path';
import { LnbackupPlugin } from '../src/cln/plugin.js';
import type { JsonRpcRequest } from '../src/cln/pluginProtocol.js';
import { Journal } from '../src/journal/journal.js';
import { runSimulatorUntilDone } from '../src/simulator/runner.js';
import { RecordSealer, type SealedRecord } from '../src/vault/sealer.js';
import { VaultWriter } from '../src/vault/writer.js';
import { makeNodeDir, makeVaultNode, progress, PROBE_PLUGIN, simulatorWait, type TraceInfo } from './setup.js';
import { dist, round3, type Dist } from './stats.js';

export const STEPS = ['parse', 'logic', 'seal', 'write', 'fdatasync', 'other', 'record', 'total', 'bare', 'baseline'] as const;
export type Step = (typeof STEPS)[number];

export interface SimProbe {
  /** Hook latency as the simulator sees it. */
  readonly hook: Dist;
  /** Time inside the plugin process, from the request's arrival to the reply written. */
  readonly inPlugin: Dist;
  readonly txPerSec: number;
}

export interface ProfileSection {
  readonly calls: number;
  readonly steps: Record<Step, Dist>;
  readonly nullPlugin: SimProbe;
  readonly lnbackupProbe: SimProbe;
}

const CONTINUE_REPLY = '"result":{"result":"continue"}';

type Timed = 'record' | 'seal' | 'append' | 'sync';

/** Wraps prototype methods with accumulating timers; returns a function that puts them back. */
function instrument(acc: Record<Timed, number>, onAppend: (r: SealedRecord) => void): () => void {
  const undo: (() => void)[] = [];
  const wrap = (proto: object, key: string, slot: Timed, before?: (args: unknown[]) => void): void => {
    const target = proto as Record<string, (...args: unknown[]) => unknown>;
    const original = target[key];
    target[key] = function (this: unknown, ...args: unknown[]): unknown {
      before?.(args);
      const t = performance.now();
      try {
        return original.apply(this, args);
      } finally {
        acc[slot] += performance.now() - t;
      }
    };
    undo.push(() => {
      target[key] = original;
    });
  };
  wrap(Journal.prototype, 'record', 'record');
  wrap(RecordSealer.prototype, 'seal', 'seal');
  wrap(VaultWriter.prototype, 'append', 'append', (args) => onAppend(args[0] as SealedRecord));
  wrap(VaultWriter.prototype, 'sync', 'sync');
  return () => undo.reverse().forEach((f) => f());
}

export async function profileInProcess(trace: TraceInfo, workDir: string): Promise<Record<Step, Dist>> {
  const node = makeVaultNode(workDir, 'profile');
  let lastReply = '';
  const plugin = new LnbackupPlugin(node.networkDir, { send: (text) => void (lastReply = text) });
  const bareFd = fs.openSync(path.join(node.dir, 'bare.bin'), 'a');
  const baseFd = fs.openSync(path.join(node.dir, 'baseline.log'), 'a');
  const n = trace.calls.length;
  const samples = Object.fromEntries(STEPS.map((s) => [s, new Float64Array(n)])) as Record<Step, Float64Array>;
  const acc: Record<Timed, number> = { record: 0, seal: 0, append: 0, sync: 0 };
  let sealed: SealedRecord | null = null;
  const uninstrument = instrument(acc, (r) => {
    sealed = r;
  });
  try {
    // The first db_write opens the node's backup (config, keys, vault lock, destinations): its
    // samples are left out of the figures below.
    for (let i = 0; i < n; i++) {
      const c = trace.calls[i];
      const text = JSON.stringify({
        jsonrpc: '2.0',
        id: `cln:db_write#${i + 1}`,
        method: 'db_write',
        params: { data_version: c.dataVersion, writes: c.writes },
      });
      acc.record = acc.seal = acc.append = acc.sync = 0;
      sealed = null;

      const t0 = performance.now();
      const req = JSON.parse(text) as JsonRpcRequest;
      const t1 = performance.now();
      await plugin.handle(req);
      const t2 = performance.now();
      if (!lastReply.includes(CONTINUE_REPLY)) throw new Error(`the plugin did not answer continue to call ${i}: ${lastReply}`);
      const record = sealed as SealedRecord | null;
      if (!record) throw new Error(`call ${i} appended no record`);
      samples.parse[i] = t1 - t0;
      samples.total[i] = t2 - t0;
      samples.record[i] = acc.record;
      samples.logic[i] = t2 - t1 - acc.record;
      samples.seal[i] = acc.seal;
      samples.write[i] = acc.append;
      samples.fdatasync[i] = acc.sync;
      samples.other[i] = acc.record - acc.seal - acc.append - acc.sync;

      let t = performance.now();
      fs.writeSync(bareFd, record.bytes);
      fs.fdatasyncSync(bareFd);
      samples.bare[i] = performance.now() - t;

      t = performance.now();
      const base = JSON.parse(text) as JsonRpcRequest;
      fs.writeSync(baseFd, JSON.stringify(base.params) + '\n');
      fs.fsyncSync(baseFd);
      samples.baseline[i] = performance.now() - t;
    }
  } finally {
    uninstrument();
    await plugin.close();
    fs.closeSync(bareFd);
    fs.closeSync(baseFd);
    fs.rmSync(node.dir, { recursive: true, force: true });
  }
  return Object.fromEntries(STEPS.map((s) => [s, dist(samples[s].subarray(1))])) as Record<Step, Dist>;
}

async function simProbe(mode: 'null' | 'lnbackup', trace: TraceInfo, workDir: string): Promise<SimProbe> {
  const node = mode === 'lnbackup' ? makeVaultNode(workDir, 'probe-lnbackup') : makeNodeDir(workDir, 'probe-null');
  const out = path.join(node.dir, 'probe.json');
  try {
    const run = await runSimulatorUntilDone({
      lightningDir: node.lightningDir,
      traces: [trace.path],
      plugin: PROBE_PLUGIN,
      env: { ...process.env, BENCH_PROBE_MODE: mode, BENCH_PROBE_OUT: out },
      progressEvery: 1_000_000,
      wait: simulatorWait.mode,
      maxLifetimes: 1,
    });
    const s = run.stats;
    const probe = JSON.parse(fs.readFileSync(out, 'utf8')) as { inPlugin: Dist };
    return {
      hook: { n: s.hooks, p50Ms: s.p50Ms, p99Ms: s.p99Ms, meanMs: s.meanMs, maxMs: s.maxMs },
      inPlugin: probe.inPlugin,
      txPerSec: s.txPerSec,
    };
  } finally {
    fs.rmSync(node.dir, { recursive: true, force: true });
  }
}

export async function runProfileSection(trace: TraceInfo, workDir: string): Promise<ProfileSection> {
  progress(`profile: ${trace.calls.length} calls in-process (the plugin with timers, bare write+fdatasync, baseline logic)...`);
  const steps = await profileInProcess(trace, workDir);
  progress('profile: stdio floor (a plugin that answers at once) through the simulator...');
  const nullPlugin = await simProbe('null', trace, workDir);
  progress('profile: lnbackup with a timer inside the plugin, through the simulator...');
  const lnbackupProbe = await simProbe('lnbackup', trace, workDir);
  return { calls: trace.calls.length, steps, nullPlugin, lnbackupProbe };
}

/** Mean ms per call: the in-process parts add up to `total` exactly. */
export function meanBreakdown(p: ProfileSection): Record<'parse' | 'logic' | 'seal' | 'other' | 'write' | 'fdatasync' | 'total', number> {
  const m = (s: Step): number => round3(p.steps[s].meanMs);
  return { parse: m('parse'), logic: m('logic'), seal: m('seal'), other: m('other'), write: m('write'), fdatasync: m('fdatasync'), total: m('total') };
}
