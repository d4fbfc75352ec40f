// Section 4: server capacity. For each N, ONE `lnbackup server` child process (embedded file
// storage, in a fresh data folder) and N simulated nodes, split over two load-generator child
// processes (bench/loadClient.ts), so the server process is measured alone. Each node has its own
// transport key, BOLT #8 connection and vault, and sends a steady `rate` records per second, of the
// sizes of the trace's db_write calls (framed records, or really sealed ones with `seal`). The nodes connect first (staggered:
// handshakes are CPU heavy); the rate starts once all are connected; after a warm-up, a measured
// window: records acknowledged per second, ack latency (Append sent → Ack received), and the
// server's CPU time (utime + stime from /proc/<pid>/stat, before and after the window) per 1,000
// records acknowledged in it.
import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeWrites } from '../src/journal/payloads.js';
import { readStatusFile } from '../src/server/statusFile.js';
import type { LoadConfig, LoadReady, LoadReport, LoadResult, LoadStart } from './loadClient.js';
import { startServerProcess, type ServerProcess } from './serverHook.js';
import { machineLoadSince, progress, sampleMachine, type MachineLoad, type TraceInfo } from './setup.js';
import { dist, round2, type Dist } from './stats.js';

export const LOAD_CLIENT = fileURLToPath(new URL('./loadClient.js', import.meta.url));
export const DEFAULT_CAPACITY_NODES: readonly number[] = [10, 100, 500];
export const CAPACITY_RATE = 20;
/** The target: this many nodes at CAPACITY_RATE with p99 ack latency under this. */
export const CAPACITY_TARGET = { nodes: 500, p99Ms: 50 } as const;
const LOAD_PROCESSES = 2;

export interface CapacityOptions {
  readonly nodes: readonly number[];
  readonly windowMs: number;
  readonly warmupMs: number;
  readonly rate: number;
  /** Write a V8 CPU profile of each server process into this folder. */
  readonly serverCpuProfDir: string | null;
  /** Seal every record for real in the load generators (default: valid header, random body). */
  readonly seal: boolean;
}

export interface CapacityRun {
  readonly nodes: number;
  /** Records per second asked for (nodes × rate). */
  readonly offeredPerSec: number;
  readonly ackedPerSec: number;
  /** MB/s of records acknowledged in the window. */
  readonly ackedMBPerSec: number;
  /** Ack latency of the records sent in the window. */
  readonly ack: Dist;
  readonly sentInWindow: number;
  readonly ackedInWindow: number;
  /** Records sent in the window with no ack when the load generators stopped waiting. */
  readonly unacked: number;
  /** Sends that waited because the server's maxPendingAppends records were unacknowledged. */
  readonly heldBack: number;
  readonly errors: Record<string, number>;
  readonly firstError: string | null;
  readonly lostConnections: number;
  /** The server's CPU time in the window (ms), per 1,000 records acknowledged, and as a share of one core. */
  readonly serverCpuMs: number | null;
  readonly serverCpuMsPer1000: number | null;
  readonly serverCpuPercent: number | null;
  readonly serverRssMB: number | null;
  /** The load generators' CPU in the window (share of one core, both processes), event-loop delay and send lateness (worst of the two). */
  readonly clientCpuPercent: number;
  readonly clientLoopDelayP99Ms: number;
  readonly clientSendLagP99Ms: number;
  /** The whole machine in the window: CPU in use (cores), of which by processes other than this server and its load generators; pressure stalls. */
  readonly machine: MachineLoad & { readonly otherCores: number | null };
  /** Connecting every node (both processes in parallel): wall time, and per node connect → VaultState. */
  readonly setupMs: number;
  readonly connect: Dist;
  /** The server's group commit over the whole run (from its status file): rounds, records per round. */
  readonly storeRounds: number | null;
  readonly recordsPerRound: number | null;
  readonly maxRoundMs: number | null;
  readonly cpuProfile: string | null;
}

export interface CapacitySection {
  readonly rate: number;
  readonly windowMs: number;
  readonly warmupMs: number;
  /** Records really sealed (true) or framed: valid header, random body of the same size (false). */
  readonly sealed: boolean;
  /** Mean sealed record size (bytes) of the sizes used. */
  readonly meanRecordBytes: number;
  readonly runs: CapacityRun[];
  readonly target: { readonly nodes: number; readonly rate: number; readonly p99Ms: number; readonly met: boolean | null; readonly why: string };
}

/** Sealed size of a record = header 44 + body prefix 52 + payload + tag 16. */
const RECORD_OVERHEAD = 44 + 52 + 16;

function payloadSizes(trace: TraceInfo): number[] {
  return trace.calls.map((c) => encodeWrites(c.writes).length);
}

interface LoadChild {
  readonly child: ChildProcess;
  next<T extends LoadReport['type']>(type: T): Promise<Extract<LoadReport, { type: T }>>;
  readonly exited: Promise<number | null>;
}

function forkLoadClient(): LoadChild {
  const child = fork(LOAD_CLIENT, [], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'advanced' });
  const queue: LoadReport[] = [];
  let waiter: ((r: LoadReport) => void) | null = null;
  let gone: Error | null = null;
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  child.on('message', (r: LoadReport) => {
    if (waiter) {
      const w = waiter;
      waiter = null;
      w(r);
    } else queue.push(r);
  });
  void exited.then((code) => {
    gone = new Error(`a load generator exited (code ${code}) before it reported`);
    if (waiter) waiter({ type: 'error', message: gone.message });
  });
  const next = async <T extends LoadReport['type']>(type: T): Promise<Extract<LoadReport, { type: T }>> => {
    const r: LoadReport = queue.shift() ?? (gone ? { type: 'error', message: gone.message } : await new Promise<LoadReport>((resolve) => (waiter = resolve)));
    if (r.type === 'error') throw new Error(`load generator: ${r.message}`);
    if (r.type !== type) throw new Error(`load generator: expected '${type}', got '${r.type}'`);
    return r as Extract<LoadReport, { type: T }>;
  };
  return { child, next, exited };
}

const sleepUntil = (epochMs: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, epochMs - Date.now())));

async function runOne(n: number, sizes: number[], workDir: string, o: CapacityOptions): Promise<CapacityRun> {
  const dir = fs.mkdtempSync(path.join(workDir, `capacity-${n}-`));
  const profDir = o.serverCpuProfDir ? path.resolve(o.serverCpuProfDir, `server-${n}-nodes`) : null;
  const server: ServerProcess = await startServerProcess({
    dataDir: path.join(dir, 'server'),
    nodeArgs: profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [],
    // Every simulated node connects from 127.0.0.1.
    serverArgs: ['--max-connections-per-ip', String(n + 16)],
  });
  const children: LoadChild[] = [];
  try {
    progress(`capacity: ${n} nodes against one server (pid ${server.pid}, ${server.url.replace(/^lnbackup:\/\/[0-9a-f]+@/, '')}): connecting...`);
    const setupStarted = Date.now();
    let first = 0;
    const readies: Promise<LoadReady>[] = [];
    for (let p = 0; p < LOAD_PROCESSES; p++) {
      const count = Math.floor(n / LOAD_PROCESSES) + (p < n % LOAD_PROCESSES ? 1 : 0);
      if (count === 0) continue;
      const c = forkLoadClient();
      children.push(c);
      const config: LoadConfig = {
        type: 'config',
        host: server.host,
        port: server.port,
        serverKey: server.publicKey,
        nodes: count,
        firstIndex: first,
        totalNodes: n,
        rate: o.rate,
        payloadSizes: sizes,
        seal: o.seal,
        workDir: path.join(dir, `load-${p}`),
        maxConcurrentConnects: 4,
        connectIntervalMs: 2,
      };
      first += count;
      c.child.send(config);
      readies.push(c.next('ready'));
    }
    const ready = await Promise.all(readies);
    const setupMs = Date.now() - setupStarted;
    progress(
      `capacity: ${n} nodes connected in ${(setupMs / 1000).toFixed(1)} s; ${o.rate} records/s each, ${o.warmupMs / 1000} s warm-up, ${o.windowMs / 1000} s window...`,
    );

    const start: LoadStart = { type: 'start', startAt: Date.now() + 300, warmupMs: o.warmupMs, windowMs: o.windowMs, drainMs: 10_000 };
    const results = children.map((c) => c.next('result'));
    for (const c of children) c.child.send(start);
    await sleepUntil(start.startAt + o.warmupMs);
    const cpu0 = server.cpuMs();
    const machine0 = sampleMachine();
    await sleepUntil(start.startAt + o.warmupMs + o.windowMs);
    const cpu1 = server.cpuMs();
    const machine = machineLoadSince(machine0);
    const rss = server.rssBytes();
    const done: LoadResult[] = await Promise.all(results);
    await Promise.all(children.map((c) => c.exited));

    // Group-commit figures from the status file (written at most once a second; wait for a fresh one).
    await new Promise((resolve) => setTimeout(resolve, 1200));
    let storeRounds: number | null = null;
    let storeRecords: number | null = null;
    let maxRoundMs: number | null = null;
    try {
      const sc = readStatusFile(server.dataDir).status.storeCounters;
      if (sc) {
        storeRounds = sc.rounds;
        storeRecords = sc.records;
        maxRoundMs = sc.maxRoundMs;
      }
    } catch {
      // figures stay null
    }

    const latencies: number[] = [];
    for (const r of done) for (const v of r.latenciesMs) latencies.push(v);
    const sum = (f: (r: LoadResult) => number): number => done.reduce((a, r) => a + f(r), 0);
    const errors: Record<string, number> = {};
    for (const r of done) for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
    const acked = sum((r) => r.ackedInWindow);
    const windowS = o.windowMs / 1000;
    const serverCpuMs = cpu0 !== null && cpu1 !== null ? cpu1 - cpu0 : null;
    const connectMs = ready.flatMap((r) => r.connectMs);
    return {
      nodes: n,
      offeredPerSec: n * o.rate,
      ackedPerSec: round2(acked / windowS),
      ackedMBPerSec: round2(sum((r) => r.ackedBytesInWindow) / 1e6 / windowS),
      ack: dist(latencies),
      sentInWindow: sum((r) => r.sentInWindow),
      ackedInWindow: acked,
      unacked: sum((r) => r.unacked),
      heldBack: sum((r) => r.heldBack),
      errors,
      firstError: done.find((r) => r.firstError !== null)?.firstError ?? null,
      lostConnections: sum((r) => r.lostConnections),
      serverCpuMs,
      serverCpuMsPer1000: serverCpuMs !== null && acked > 0 ? round2((serverCpuMs * 1000) / acked) : null,
      serverCpuPercent: serverCpuMs !== null ? round2((serverCpuMs / o.windowMs) * 100) : null,
      serverRssMB: rss === null ? null : round2(rss / 1e6),
      clientCpuPercent: round2((sum((r) => r.cpuMsInWindow) / o.windowMs) * 100),
      clientLoopDelayP99Ms: Math.max(...done.map((r) => r.loopDelayP99Ms)),
      clientSendLagP99Ms: Math.max(...done.map((r) => r.sendLagP99Ms)),
      machine: {
        ...machine,
        otherCores: serverCpuMs === null ? null : round2(Math.max(0, machine.busyCores - (serverCpuMs + sum((r) => r.cpuMsInWindow)) / o.windowMs)),
      },
      setupMs,
      connect: dist(connectMs),
      storeRounds,
      recordsPerRound: storeRounds && storeRecords !== null ? round2(storeRecords / storeRounds) : null,
      maxRoundMs,
      cpuProfile: profDir,
    };
  } finally {
    for (const c of children) if (c.child.exitCode === null) c.child.kill('SIGKILL');
    const exit = await server.stop();
    if (exit.code !== 0) progress(`capacity: the server exited with ${exit.signal ?? exit.code}; its log: ${server.logFile}`);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function runCapacitySection(trace: TraceInfo, workDir: string, o: CapacityOptions): Promise<CapacitySection> {
  const sizes = payloadSizes(trace);
  const meanRecordBytes = Math.round(sizes.reduce((a, b) => a + b, 0) / sizes.length + RECORD_OVERHEAD);
  progress(
    `capacity: ${os.cpus().length} cpus shared by the server and ${LOAD_PROCESSES} load generators; record sizes from the trace (mean ${meanRecordBytes} bytes)`,
  );
  const runs: CapacityRun[] = [];
  for (const n of o.nodes) {
    const r = await runOne(n, sizes, workDir, o);
    runs.push(r);
    progress(
      `  ${n} nodes: ${r.ackedPerSec} acked/s of ${r.offeredPerSec} offered, ack p50 ${r.ack.p50Ms} ms, p99 ${r.ack.p99Ms} ms, max ${r.ack.maxMs} ms; ` +
        `server CPU ${r.serverCpuMsPer1000 ?? '?'} ms per 1,000 records (${r.serverCpuPercent ?? '?'}% of a core)`,
    );
  }
  const at = runs.find((r) => r.nodes === CAPACITY_TARGET.nodes) ?? null;
  let met: boolean | null = null;
  let why = `no run with ${CAPACITY_TARGET.nodes} nodes`;
  if (at) {
    const problems: string[] = [];
    if (at.ack.p99Ms >= CAPACITY_TARGET.p99Ms) problems.push(`p99 ${at.ack.p99Ms} ms`);
    if (at.ackedPerSec < at.offeredPerSec * 0.98) problems.push(`${at.ackedPerSec} acked/s of ${at.offeredPerSec} offered`);
    if (at.unacked > 0) problems.push(`${at.unacked} records never acknowledged`);
    const errorCount = Object.values(at.errors).reduce((a, b) => a + b, 0);
    if (errorCount > 0) problems.push(`${errorCount} errors (${Object.keys(at.errors).join(', ')})`);
    met = problems.length === 0;
    why = met ? `p99 ${at.ack.p99Ms} ms, ${at.ackedPerSec} acked/s` : problems.join(', ');
  }
  return {
    rate: o.rate,
    windowMs: o.windowMs,
    warmupMs: o.warmupMs,
    sealed: o.seal,
    meanRecordBytes,
    runs,
    target: { nodes: CAPACITY_TARGET.nodes, rate: CAPACITY_RATE, p99Ms: CAPACITY_TARGET.p99Ms, met: o.rate === CAPACITY_RATE ? met : null, why },
  };
}
