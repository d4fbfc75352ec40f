// Paths and fixtures shared by the benchmark's sections: where the trace, the plugins and the
// work directory are, and how a node directory with an lnbackup vault is set up (as src/cli/demo.ts
// does: <dir>/node/regtest with a random 32-byte hsm_secret, then initNode), with or without a
// server as a remote (as `lnbackup init --remote` does: prepare, push the vault, then configure).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initNode, prepareNode, PLUGIN_PATH } from '../src/cli/initNode.js';
import { loadKeys } from '../src/cli/keyOptions.js';
import { readConfig, writeConfig, type LocalVaultMode } from '../src/cln/config.js';
import { pushVault } from '../src/destinations/transfer.js';
import type { VaultKeys } from '../src/vault/keys.js';
import { loadTraceChain, type CallEntry } from '../src/simulator/trace.js';
import type { WaitMode } from '../src/simulator/pluginProcess.js';

export { DEFAULT_TRACE } from '../src/cli/demo.js';
export const LNBACKUP_PLUGIN = PLUGIN_PATH;
export const BASELINE_PLUGIN = fileURLToPath(new URL('./baselinePlugin.js', import.meta.url));
/** The python append+fsync plugin (python3 on the PATH), run directly as lightningd would. */
export const PYTHON_PLUGIN = fileURLToPath(new URL('../../bench/appendFsyncPlugin.py', import.meta.url));
export const PROBE_PLUGIN = fileURLToPath(new URL('./probePlugin.js', import.meta.url));
export const NETWORK = 'regtest';
/**
 * How every simulated lightningd of this run waits for the plugin's answers: 'spin' (the default)
 * busy-polls as lightningd does, so the plugin competes with a spinning core; 'idle' (--wait idle)
 * waits on the event loop, as the benchmark did before.
 */
export const simulatorWait: { mode: WaitMode } = { mode: 'spin' };

export interface NodeDir {
  readonly dir: string;
  readonly lightningDir: string;
  readonly networkDir: string;
  readonly dbPath: string;
}

export function makeNodeDir(parent: string, name: string): NodeDir {
  const dir = fs.mkdtempSync(path.join(parent, `${name}-`));
  const lightningDir = path.join(dir, 'node');
  const networkDir = path.join(lightningDir, NETWORK);
  fs.mkdirSync(networkDir, { recursive: true });
  return { dir, lightningDir, networkDir, dbPath: path.join(networkDir, 'lightningd.sqlite3') };
}

export interface VaultNode extends NodeDir {
  readonly vault: string;
  readonly hsmSecret: string;
  keys(): VaultKeys;
}

/** A fresh node directory bound to a fresh vault on local disk (as `lnbackup demo` sets it up). */
export function makeVaultNode(parent: string, name: string): VaultNode {
  const node = makeNodeDir(parent, name);
  const hsmSecret = path.join(node.networkDir, 'hsm_secret');
  fs.writeFileSync(hsmSecret, crypto.randomBytes(32), { mode: 0o400 });
  const vault = path.join(node.dir, 'vault');
  initNode({ lightningDir: node.lightningDir, network: NETWORK, vault, force: true });
  return { ...node, vault, hsmSecret, keys: () => loadKeys({ hsmSecret }).keys };
}

/** A benchmark replay whose server stops acknowledging ends (the plugin answers abort) after this, instead of hanging. */
export const BENCH_STALL_LIMIT_SECONDS = 60;

/** 'default': lnbackup's retention. 'off': no compaction, every record kept (a full-history vault). */
export type CompactionMode = 'default' | 'off';
/** Compaction off: a threshold far beyond what any trace writes. */
const OFF_MIN_BYTES = 1e12;

export function setCompaction(networkDir: string, mode: CompactionMode): void {
  const config = readConfig(networkDir);
  writeConfig(networkDir, { ...config, retention: mode === 'off' ? { compactMinBytes: OFF_MIN_BYTES } : undefined });
}

/**
 * A fresh node whose configuration names one server (`url`) as a remote, policy 'all', and the
 * local vault `durable` (a destination too) or `cache` (it only feeds the server). As `lnbackup init`
 * does with a server: the vault (its first snapshot) is uploaded before the configuration is written.
 */
export async function makeRemoteVaultNode(parent: string, name: string, url: string, localVault: LocalVaultMode): Promise<VaultNode> {
  const node = makeNodeDir(parent, name);
  const hsmSecret = path.join(node.networkDir, 'hsm_secret');
  fs.writeFileSync(hsmSecret, crypto.randomBytes(32), { mode: 0o400 });
  const vault = path.join(node.dir, 'vault');
  const prepared = prepareNode({
    lightningDir: node.lightningDir,
    network: NETWORK,
    vault,
    force: true,
    destinations: { remotes: [url], replicas: [], policy: 'all', stallLimitSeconds: BENCH_STALL_LIMIT_SECONDS, localVault },
  });
  await pushVault({ vaultDir: vault, url, keys: prepared.keys });
  prepared.commit();
  return { ...node, vault, hsmSecret, keys: () => loadKeys({ hsmSecret }).keys };
}

export interface TraceInfo {
  readonly path: string;
  readonly calls: CallEntry[];
  readonly transactions: number;
  readonly statements: number;
  /** Bytes of the calls' params as JSON (what lightningd sends, without the JSON-RPC envelope). */
  readonly jsonBytes: number;
  readonly gzBytes: number;
  readonly superseded: number;
}

export function loadTrace(file: string): TraceInfo {
  const calls = loadTraceChain([{ path: file }]).filter((e): e is CallEntry => e.kind === 'call');
  let statements = 0;
  let jsonBytes = 0;
  for (const c of calls) {
    statements += c.writes.length;
    jsonBytes += Buffer.byteLength(JSON.stringify({ data_version: c.dataVersion, writes: c.writes }));
  }
  return {
    path: file,
    calls,
    transactions: calls.filter((c) => c.bumps && !c.superseded).length,
    statements,
    jsonBytes,
    gzBytes: fs.statSync(file).size,
    superseded: calls.filter((c) => c.superseded).length,
  };
}

/** Directory size in bytes (recursive). */
export function dirBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? dirBytes(p) : e.isFile() ? fs.statSync(p).size : 0;
  }
  return total;
}

/** A reading of the whole machine's CPU counters (/proc/stat) and pressure stall totals (/proc/pressure). */
export interface MachineSample {
  readonly atMs: number;
  readonly busyTicks: number;
  readonly totalTicks: number;
  readonly cpuSomeUs: number | null;
  readonly ioSomeUs: number | null;
}

/** How busy the whole machine was between a sample and now: every process, not only the benchmark's. */
export interface MachineLoad {
  /** CPU in use, in cores (user + system + irq + steal of all processes). */
  readonly busyCores: number;
  /** Share of the time some task waited for a CPU / for I/O (Linux PSI "some"), percent; null without /proc/pressure. */
  readonly cpuPressurePct: number | null;
  readonly ioPressurePct: number | null;
}

function pressureTotal(kind: 'cpu' | 'io'): number | null {
  try {
    const m = /^some .*total=(\d+)/m.exec(fs.readFileSync(`/proc/pressure/${kind}`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

export function sampleMachine(): MachineSample {
  let busyTicks = 0;
  let totalTicks = 0;
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
    busyTicks = user + nice + system + irq + softirq + (steal ?? 0);
    totalTicks = busyTicks + idle + iowait;
  } catch {
    // no /proc/stat: the load reads as 0
  }
  return { atMs: performance.now(), busyTicks, totalTicks, cpuSomeUs: pressureTotal('cpu'), ioSomeUs: pressureTotal('io') };
}

export function machineLoadSince(a: MachineSample): MachineLoad {
  const b = sampleMachine();
  const wallUs = (b.atMs - a.atMs) * 1000;
  const total = b.totalTicks - a.totalTicks;
  const pct = (x: number | null, y: number | null): number | null =>
    x === null || y === null || wallUs <= 0 ? null : Math.round(((y - x) / wallUs) * 1000) / 10;
  return {
    busyCores: total > 0 ? Math.round(((b.busyTicks - a.busyTicks) / total) * os.cpus().length * 100) / 100 : 0,
    cpuPressurePct: pct(a.cpuSomeUs, b.cpuSomeUs),
    ioPressurePct: pct(a.ioSomeUs, b.ioSomeUs),
  };
}

/** Reports progress on stderr (stdout carries only the table or the JSON). */
export function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}
