// Starts simulated Lightning peers (simPeerProcess.js) as real child processes for the tests, and
// stops them: each is a node id, 127.0.0.1 and a port, reached exactly as a real node would be.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const entry = path.join(path.dirname(fileURLToPath(import.meta.url)), 'simPeerProcess.js');

export interface SimPeer {
  readonly nodeId: string;
  readonly port: number;
  readonly dataDir: string;
  /** `<node id>@127.0.0.1:<port>`, as `lnbackup recover --peer` takes it. */
  readonly address: string;
  stderr(): string;
  /** SIGTERM (held blobs are committed first); resolves to the exit code. */
  stop(): Promise<number | null>;
}

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

export interface SimPeerOptions {
  readonly dataDir: string;
  /** Node ids it has a channel with (it keeps a slot for each). */
  readonly channelPeers: readonly string[];
  readonly cooldownMs?: number;
}

export async function startSimPeer(o: SimPeerOptions): Promise<SimPeer> {
  fs.mkdirSync(o.dataDir, { recursive: true });
  const args = [entry, '--data', o.dataDir, '--cooldown-ms', String(o.cooldownMs ?? 60_000), ...o.channelPeers.flatMap((p) => ['--channel-peer', p])];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`the simulated peer did not start within 10 s: ${err}`)), 10_000);
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const nl = out.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(out.slice(0, nl));
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`the simulated peer exited with ${code}: ${err}`));
    });
  });
  const info = JSON.parse(line) as { nodeId: string; port: number };
  return {
    ...info,
    dataDir: o.dataDir,
    address: `${info.nodeId}@127.0.0.1:${info.port}`,
    stderr: () => err,
    stop: () => {
      child.kill('SIGTERM');
      return exited;
    },
  };
}
