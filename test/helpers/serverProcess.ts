// `lnbackup server` as a real child process for the tests: started on 127.0.0.1 with port 0 and
// --json, its one JSON line read for the URL, key and port; stopped with SIGTERM (resolving to its
// exit code) or killed with SIGKILL, and restarted on the same data folder.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cliEntry, tempDir } from './paths.js';

let base: string | null = null;
/** One temporary folder (removed at exit) holding every server's data folder. */
function baseDir(): string {
  base ??= tempDir('servers');
  return base;
}

export interface ServerHandle {
  readonly url: string;
  readonly publicKey: string;
  readonly port: number;
  readonly pid: number;
  readonly dataDir: string;
  readonly child: ChildProcess;
  /** Everything the server wrote to stderr so far (its event log). */
  stderr(): string;
  /** SIGTERM; resolves to the exit code (null if it died of a signal). */
  stop(): Promise<number | null>;
  /** SIGKILL, at once; `exited` tells when it is gone. */
  kill9(): void;
  readonly exited: Promise<number | null>;
  /** Starts a new server on the same data folder and arguments (after this one has exited). */
  restart(): Promise<ServerHandle>;
}

export interface StartOptions {
  readonly dataDir?: string;
  /** Extra arguments; --open is added unless `open` is false. */
  readonly args?: readonly string[];
  readonly open?: boolean;
  readonly startTimeoutMs?: number;
}

/** Servers still running when the test process ends are killed, so none outlives a failed test. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

export async function startServer(options: StartOptions = {}): Promise<ServerHandle> {
  const dataDir = options.dataDir ?? fs.mkdtempSync(path.join(baseDir(), 'data-'));
  const args = [
    cliEntry,
    'server',
    '--data',
    dataDir,
    '--listen',
    '127.0.0.1:0',
    '--json',
    ...(options.open === false ? [] : ['--open']),
    ...(options.args ?? []),
  ];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  running.add(child);
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  const line = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the server did not start within ${options.startTimeoutMs ?? 30_000} ms; stderr: ${stderr}`));
    }, options.startTimeoutMs ?? 30_000);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      const nl = stdout.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(stdout.slice(0, nl));
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the server exited with code ${code} before it started; stdout: ${stdout} stderr: ${stderr}`));
    });
  });
  const info = JSON.parse(line) as { ok: boolean; url: string; publicKey: string; listen: string };
  if (!info.ok) throw new Error(`the server did not start: ${line}`);
  const port = Number(/:(\d+)$/.exec(info.listen)![1]);
  const handle: ServerHandle = {
    url: info.url,
    publicKey: info.publicKey,
    port,
    pid: child.pid!,
    dataDir,
    child,
    stderr: () => stderr,
    exited,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      return exited;
    },
    kill9: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    },
    restart: async () => {
      await exited;
      return startServer({ ...options, dataDir });
    },
  };
  return handle;
}
