// Pieces of the crash torture that are not about lnbackup itself: finding / waiting for / killing
// the plugin processes a dead simulated lightningd left behind, identified by their command line
// and working directory. (Its seeded PRNG is prng.ts.)
import fs from 'node:fs';
import { processAlive } from '../../src/util/processAlive.js';
import { sleep } from './waiting.js';

/** True when `pid` is alive and its working directory is `cwd` (our plugin, even between fork and exec). */
export function aliveIn(pid: number, cwd: string): boolean {
  try {
    return processAlive(pid) && fs.readlinkSync(`/proc/${pid}/cwd`) === cwd;
  } catch {
    return false;
  }
}

/** The live processes running `script` (in their command line) with working directory `cwd`. */
export function findProcesses(script: string, cwd: string): number[] {
  const found: number[] = [];
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0');
      if (!cmdline.includes(script)) continue;
      if (fs.readlinkSync(`/proc/${name}/cwd`) !== cwd) continue;
      const pid = Number(name);
      if (processAlive(pid)) found.push(pid);
    } catch {
      // The process ended while we looked, or is not ours to inspect.
    }
  }
  return found;
}

/**
 * Waits up to `timeoutMs` for every process running `script` in `cwd` to exit, then SIGKILLs (by
 * pid) those still there. Returns the pids that had to be killed.
 */
export async function reapLeftovers(script: string, cwd: string, timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = findProcesses(script, cwd);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(10);
    left = findProcesses(script, cwd);
  }
  for (const pid of left) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone in the meantime.
    }
  }
  while (findProcesses(script, cwd).length > 0) await sleep(10);
  return left;
}
