// Step one of recovery from the seed: connect to each given peer as the node (all at once, each
// under its own timeouts), take the blob it hands back in `peer_storage_retrieval`, and leave.
// A peer that cannot be reached, refuses us or holds nothing is reported, never fatal here.
import { isValidPublicKey } from '../../transport/keys.js';
import { LightningPeer, type PeerAddress, type PeerOptions } from '../peer/lightningPeer.js';

export interface PeerCollection {
  readonly peer: string;
  /** The blob the peer holds for us, or null (see `error`, or it holds none). */
  readonly blob: Buffer | null;
  readonly error: string | null;
  readonly warnings: readonly string[];
}

export interface CollectOptions extends PeerOptions {
  /** How long to wait after init for the peer's retrieval (default 5 s). */
  readonly retrievalWaitMs?: number;
  readonly onPeer?: (result: PeerCollection) => void;
}

export const DEFAULT_RETRIEVAL_WAIT_MS = 5000;

/** `<node id>@<host>:<port>` (node id 66 hex digits; IPv6 hosts in brackets). */
export function parsePeerAddress(text: string): PeerAddress {
  const m = /^([0-9a-fA-F]{66})@(\[[0-9a-fA-F:.]+\]|[^:@\s[\]]+):(\d{1,5})$/.exec(text);
  if (!m) throw new Error(`a peer is <node id>@<host>:<port> (the node id 66 hex digits), not ${JSON.stringify(text.slice(0, 200))}`);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new Error(`peer ${text}: port ${port} is not 1..65535`);
  const nodeId = Buffer.from(m[1], 'hex');
  if (!isValidPublicKey(nodeId)) throw new Error(`peer ${text}: ${m[1]} is not a node id (a compressed secp256k1 public key, prefix 02 or 03, on the curve)`);
  return { nodeId, host: m[2].replace(/^\[|\]$/g, ''), port };
}

export function formatPeerAddress(p: PeerAddress): string {
  return `${p.nodeId.toString('hex')}@${p.host.includes(':') ? `[${p.host}]` : p.host}:${p.port}`;
}

async function collectOne(nodeKey: Buffer, address: PeerAddress, options: CollectOptions): Promise<PeerCollection> {
  const peer = formatPeerAddress(address);
  let connection: LightningPeer | null = null;
  try {
    connection = await LightningPeer.connect(nodeKey, address, options);
    const blob = await connection.retrieval(options.retrievalWaitMs ?? DEFAULT_RETRIEVAL_WAIT_MS);
    return { peer, blob, error: null, warnings: connection.notes.warnings };
  } catch (err) {
    return { peer, blob: null, error: err instanceof Error ? err.message : String(err), warnings: connection?.notes.warnings ?? [] };
  } finally {
    await connection?.close();
  }
}

/** What each peer holds for the node whose key is `nodeKey`, in the order the peers were given. */
export function collectBlobs(nodeKey: Buffer, peers: readonly PeerAddress[], options: CollectOptions = {}): Promise<PeerCollection[]> {
  return Promise.all(
    peers.map(async (p) => {
      const r = await collectOne(nodeKey, p, options);
      options.onPeer?.(r);
      return r;
    }),
  );
}
