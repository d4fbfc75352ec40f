// A child process's CPU time and thread count, read from Linux's /proc (proc(5): /proc/PID/stat
// fields 14 and 15, utime and stime in clock ticks; /proc/PID/status "Threads:"). The benchmark
// compares plugins by their own CPU per call, which is far steadier than wall time on a shared
// machine. Null where /proc is not there (not Linux) or the process is gone.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';

export interface ProcessUsage {
  /** User + system CPU time so far, in milliseconds. */
  readonly cpuMs: number;
  readonly threads: number;
}

let ticksPerSecond: number | null = null;

/** sysconf(_SC_CLK_TCK), from getconf (100 on Linux in practice). */
function clockTicks(): number {
  if (ticksPerSecond === null) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' });
    const n = Number(r.stdout?.trim());
    ticksPerSecond = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return ticksPerSecond;
}

export function processUsage(pid: number): ProcessUsage | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces: count fields after its ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const threads = Number(/^Threads:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
    if (!Number.isFinite(utime) || !Number.isFinite(stime) || !Number.isFinite(threads)) return null;
    return { cpuMs: ((utime + stime) * 1000) / clockTicks(), threads };
  } catch {
    return null;
  }
}
