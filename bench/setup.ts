// Paths and fixtures shared by the benchmark's sections: where the trace, the plugins and the
// work directory are, and how a node directory with an lnbackup vault is set up (as src/cli/demo.ts
// does: <dir>/node/regtest with a random 32-byte hsm_secret, then initNode).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { initNode, PLUGIN_PATH } from '../src/cli/initNode.js';
import { loadKeys } from '../src/cli/keyOptions.js';
import type { VaultKeys } from '../src/vault/keys.js';
import { loadTraceChain, type CallEntry } from '../src/simulator/trace.js';

/** The repository root (this file runs from dist/bench/). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const DEFAULT_TRACE = path.resolve(REPO_ROOT, '../shared/traces/cln-v26.06-node1.jsonl.gz');
export const LNBACKUP_PLUGIN = PLUGIN_PATH;
export const BASELINE_PLUGIN = fileURLToPath(new URL('./baselinePlugin.js', import.meta.url));
export const PROBE_PLUGIN = fileURLToPath(new URL('./probePlugin.js', import.meta.url));
export const NETWORK = 'regtest';

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

/** Reports progress on stderr (stdout carries only the table or the JSON). */
export function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}
