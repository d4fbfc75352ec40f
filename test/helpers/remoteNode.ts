// Nodes backed up to lnbackup servers, for the remote and destination-command tests: the `lnbackup`
// command run as a real child process without blocking the test's event loop (a simulator may be
// streaming events meanwhile), a node set up with `lnbackup init --remote ...`, a server on a port
// chosen in advance (so that a restart finds it at the same address), the server's and the
// plugin's status files, and polling with a generous deadline.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { until } from './waiting.js';
import { loadKeys } from '../../src/cli/keyOptions.js';
import { privateKeyFromSeed, publicKeyOf } from '../../src/transport/keys.js';
import type { VaultKeys } from '../../src/vault/keys.js';
import { cliEntry } from './paths.js';
import { startServer, type ServerHandle, type StartOptions } from './serverProcess.js';
import { makeTestNode, type TestNode } from './testNode.js';

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** stdout parsed as one JSON object (null when it is not exactly one). */
  readonly json: Record<string, unknown> | null;
}

/** Runs `lnbackup ...args` as a child process (asynchronously); kills it after `timeoutMs`. */
export function cli(args: readonly string[], timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliEntry, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal) stderr += `\n[lnbackup ${args.slice(0, 2).join(' ')} ended by ${signal}]`;
      let json: Record<string, unknown> | null = null;
      try {
        const v = JSON.parse(stdout) as unknown;
        json = typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
      } catch {
        json = null;
      }
      resolve({ code, stdout, stderr, json });
    });
  });
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * `lnbackup server` on a fixed port of 127.0.0.1 (a free one by default): its restart() listens on
 * the same port and data folder, so nodes configured with its URL find it again.
 */
export async function startServerAt(options: StartOptions & { port?: number } = {}): Promise<ServerHandle> {
  const port = options.port ?? (await freePort());
  return startServer({ ...options, args: [...(options.args ?? []), '--listen', `127.0.0.1:${port}`] });
}

/** The node's lnbackup transport public key (what `lnbackup destination key` prints), derived here independently. */
export function transportKeyOf(keys: VaultKeys): string {
  return publicKeyOf(privateKeyFromSeed(keys.transport)).toString('hex');
}

export interface RemoteNode extends TestNode {
  readonly keys: VaultKeys;
  readonly nodeId: string | null;
  readonly transportKey: string;
  /** What `lnbackup init --json` printed. */
  readonly init: Record<string, unknown>;
}

export interface RemoteNodeOptions {
  readonly remotes?: readonly string[];
  readonly replicas?: readonly string[];
  readonly policy?: string;
  readonly stallLimit?: string;
  readonly localVault?: 'durable' | 'cache';
}

/** The `--lightning-dir D --network regtest` pair of a node's commands. */
export function nodeArgs(node: TestNode): string[] {
  return ['--lightning-dir', node.lightningDir, '--network', 'regtest'];
}

/** A fresh test node set up by the real `lnbackup init` (child process) with these destinations. */
export async function makeRemoteNode(prefix: string, o: RemoteNodeOptions = {}): Promise<RemoteNode> {
  const node = makeTestNode(prefix);
  const args = ['init', ...nodeArgs(node), '--vault', node.vault, '--json'];
  for (const r of o.remotes ?? []) args.push('--remote', r);
  for (const r of o.replicas ?? []) args.push('--replica', r);
  if (o.policy) args.push('--policy', o.policy);
  if (o.stallLimit) args.push('--stall-limit', o.stallLimit);
  if (o.localVault) args.push('--local-vault', o.localVault);
  const r = await cli(args);
  if (r.code !== 0 || r.json?.ok !== true) throw new Error(`lnbackup init failed (${r.code}): ${r.stderr}${r.stdout}`);
  const { keys, nodeId } = loadKeys({ hsmSecret: node.hsmSecretPath });
  return { ...node, keys, nodeId, transportKey: transportKeyOf(keys), init: r.json };
}

export interface ServerVaultJson {
  readonly vaultId: string;
  readonly firstSeq: string;
  readonly lastSeq: string;
  readonly bytes: number;
}

export interface ServerClientJson {
  readonly publicKey: string;
  readonly connected: boolean;
  readonly records: number;
  readonly vaults: readonly ServerVaultJson[];
}

export interface ServerStatusJson {
  readonly ok: boolean;
  readonly running: boolean;
  readonly url: string;
  readonly storage: { readonly kind: string; readonly location: string };
  readonly clients: readonly ServerClientJson[];
}

/** `lnbackup server status --data D --json`, parsed (null when it printed no JSON). */
export async function serverStatus(dataDir: string): Promise<{ code: number | null; status: ServerStatusJson | null; stderr: string }> {
  const r = await cli(['server', 'status', '--data', dataDir, '--json']);
  return { code: r.code, status: r.json as ServerStatusJson | null, stderr: r.stderr };
}

/** The server's copy of this node's vault, from `lnbackup server status` (undefined when not shown). */
export async function serverVaultOf(server: ServerHandle, transportKey: string): Promise<ServerVaultJson | undefined> {
  const { status } = await serverStatus(server.dataDir);
  return status?.clients.find((c) => c.publicKey === transportKey)?.vaults[0];
}

export interface PluginDestinationJson {
  readonly name: string;
  readonly kind: string;
  readonly state: string;
  readonly durableSeq: string;
  readonly lagRecords: number;
  readonly lastError: string | null;
}

export interface PluginStatusJson {
  readonly updatedAt: string;
  readonly policy?: string;
  readonly localVault?: string;
  readonly destinations?: readonly PluginDestinationJson[];
  readonly lastError: string | null;
  readonly [more: string]: unknown;
}

/** The plugin's lnbackup-status.json in the node's network folder (null when absent). */
export function pluginStatus(node: TestNode): PluginStatusJson | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(node.networkDir, 'lnbackup-status.json'), 'utf8')) as PluginStatusJson;
  } catch {
    return null;
  }
}

export { until };
