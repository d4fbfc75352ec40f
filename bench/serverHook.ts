// An `lnbackup server` as a child process, for the sections that put a server on loopback: started
// as the operator would (`lnbackup server --data <dir> --listen 127.0.0.1:0 --json --open`), its
// first stdout line read for its URL and key, its log kept in a file, stopped with SIGTERM (it
// answers what it received, then exits). Its CPU time is read from /proc/<pid>/stat (user +
// system, all threads), so nothing in the server has to report on itself.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The `lnbackup` executable (dist/src/cli/main.js). */
export const LNBACKUP_CLI = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

export interface ServerProcess {
  readonly pid: number;
  readonly url: string;
  readonly publicKey: string;
  readonly host: string;
  readonly port: number;
  readonly dataDir: string;
  readonly logFile: string;
  /** User + system CPU time of the server process so far (ms), from /proc; null where there is no /proc. */
  cpuMs(): number | null;
  /** Resident memory (bytes), from /proc; null where there is no /proc. */
  rssBytes(): number | null;
  /** SIGTERM, then waits for the exit (SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface StartServerOptions {
  readonly dataDir: string;
  /** Extra arguments for node itself (e.g. --cpu-prof --cpu-prof-dir D). */
  readonly nodeArgs?: readonly string[];
  /** Extra `lnbackup server` options. */
  readonly serverArgs?: readonly string[];
  readonly startTimeoutMs?: number;
}

let clockTicks: number | null = null;

/** Clock ticks per second of /proc/<pid>/stat's times (getconf CLK_TCK, almost always 100). */
function ticksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** utime + stime of a process (every thread) in ms, or null if it cannot be read. */
export function procCpuMs(pid: number): number | null {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return ((utime + stime) * 1000) / ticksPerSecond();
}

export function procRssBytes(pid: number): number | null {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

function tail(file: string, bytes = 4000): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.slice(-bytes);
  } catch {
    return '';
  }
}

export async function startServerProcess(o: StartServerOptions): Promise<ServerProcess> {
  fs.mkdirSync(o.dataDir, { recursive: true });
  const logFile = path.join(path.dirname(o.dataDir), `${path.basename(o.dataDir)}.log`);
  const log = fs.openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    child = spawn(
      process.execPath,
      [...(o.nodeArgs ?? []), LNBACKUP_CLI, 'server', '--data', o.dataDir, '--listen', '127.0.0.1:0', '--json', '--open', ...(o.serverArgs ?? [])],
      { stdio: ['ignore', 'pipe', log] },
    );
  } finally {
    fs.closeSync(log);
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`could not start ${LNBACKUP_CLI} server`);
  const lines = readline.createInterface({ input: child.stdout! });
  const timeoutMs = o.startTimeoutMs ?? 30_000;
  let first: { ok?: boolean; url?: string; publicKey?: string; listen?: string };
  try {
    first = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`lnbackup server printed nothing within ${timeoutMs} ms`)), timeoutMs);
      lines.once('line', (line) => {
        clearTimeout(timer);
        try {
          resolve(JSON.parse(line) as typeof first);
        } catch {
          reject(new Error(`lnbackup server's first line is not JSON: ${line.slice(0, 200)}`));
        }
      });
      void exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`lnbackup server exited (${signal ?? code}) before it was ready`));
      });
    });
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw new Error(`${(err as Error).message}; its log (${logFile}):\n${tail(logFile)}`);
  }
  // Keep reading stdout so the server never blocks on a full pipe.
  lines.on('line', () => {});
  const m = /^(.*):(\d+)$/.exec(first.listen ?? '');
  if (!first.ok || !first.url || !first.publicKey || !m) {
    child.kill('SIGKILL');
    await exited;
    throw new Error(`lnbackup server's ready line lacks ok/url/publicKey/listen: ${JSON.stringify(first)}`);
  }
  const host = m[1].replace(/^\[(.*)\]$/, '$1');
  return {
    pid,
    url: first.url,
    publicKey: first.publicKey,
    host,
    port: Number(m[2]),
    dataDir: o.dataDir,
    logFile,
    cpuMs: () => procCpuMs(pid),
    rssBytes: () => procRssBytes(pid),
    stop: async (graceMs = 20_000) => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
