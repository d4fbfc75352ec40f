// A simulated Lightning peer, run as a real child process (`node simPeerProcess.js --data D
// --channel-peer <node id> ...`): it listens on 127.0.0.1, speaks BOLT #8 + BOLT #1 through the
// same minimal peer as `lnbackup recover` (src/peerstorage/peer/), and keeps its peers' blobs by
// the provider's rules (src/peerstorage/provider/peerBlobStore.ts): a slot only for the node ids
// given with --channel-peer (it "has a channel" with them), replace on every `peer_storage` (7),
// the cooldown, and on every connection, after init, its `peer_storage_retrieval` (9) with the
// newest blob held, then a `channel_reestablish` (136), as a real Core Lightning node sends. Blobs
// are committed to <data>/<peer id>.blob (atomically), so a restart gives them back. Its first
// stdout line is {"nodeId","port"}. SIGTERM commits what is held and exits 0, or 3 when a peer
// ever sent it a channel message (BOLT #2 types 32..255), which `recover` must never do.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeFileAtomicAsync } from '../../../src/util/durableFs.js';
import { PeerBlobStore, type LoadedSlot } from '../../../src/peerstorage/provider/peerBlobStore.js';
import { LightningPeer } from '../../../src/peerstorage/peer/lightningPeer.js';
import { NoiseSocket } from '../../../src/peerstorage/peer/noiseSocket.js';
import { generatePrivateKey, publicKeyOf } from '../../../src/transport/keys.js';

const { values } = parseArgs({
  options: {
    data: { type: 'string' },
    'channel-peer': { type: 'string', multiple: true, default: [] },
    key: { type: 'string' },
    port: { type: 'string', default: '0' },
    'cooldown-ms': { type: 'string', default: '60000' },
  },
});
if (!values.data) throw new Error('--data <dir> is required');
const dataDir = values.data;
fs.mkdirSync(dataDir, { recursive: true });
const keyFile = path.join(dataDir, 'node.key');
const key = values.key ? Buffer.from(values.key, 'hex') : fs.existsSync(keyFile) ? fs.readFileSync(keyFile) : generatePrivateKey();
fs.writeFileSync(keyFile, key, { mode: 0o600 });
const nodeId = publicKeyOf(key).toString('hex');

const blobFile = (peerId: string): string => path.join(dataDir, `${peerId}.blob`);
const loaded: LoadedSlot[] = values['channel-peer'].map((peerId) => ({
  peerId,
  blob: fs.existsSync(blobFile(peerId)) ? fs.readFileSync(blobFile(peerId)) : Buffer.alloc(0),
  openChannels: 1,
  closedAtHeight: null,
}));
const store = new PeerBlobStore(
  async (peerId, blob) => {
    if (blob === null) fs.rmSync(blobFile(peerId), { force: true });
    else await writeFileAtomicAsync(blobFile(peerId), blob);
  },
  { cooldownMs: Number(values['cooldown-ms']) },
  loaded,
);

const IDLE_TIMEOUT_MS = 30_000;
/** The blob this peer asks its channel peers to keep (its own type 7). */
const ownBlob = crypto.randomBytes(300);
/** Channel message types any peer sent us (none is allowed from lnbackup). */
const channelMessages = new Set<number>();

async function serve(socket: net.Socket): Promise<void> {
  const noise = await NoiseSocket.accept(socket, key);
  const peer = await LightningPeer.accepted(noise);
  const peerId = noise.remotePublicKey.toString('hex');
  const channelPeer = values['channel-peer'].includes(peerId);
  // The recorded order: init, its own type 7 (a channel peer keeps ours), its type 9, channel_reestablish.
  if (channelPeer) peer.send({ kind: 'peer_storage', blob: ownBlob });
  const held = store.retrieve(peerId);
  if (held) peer.send({ kind: 'peer_storage_retrieval', blob: held });
  if (channelPeer) peer.send({ kind: 'unknown', type: 136, payload: crypto.randomBytes(32 + 8 + 8 + 32 + 33) });
  for (;;) {
    const m = await peer.next(IDLE_TIMEOUT_MS, 'message');
    if (m?.kind === 'peer_storage') store.receive(peerId, m.blob);
    for (const type of peer.notes.ignoredTypes) {
      if (type >= 32 && type <= 255 && !channelMessages.has(type)) {
        channelMessages.add(type);
        process.stderr.write(`simPeer: ${peerId} sent a channel message (type ${type})\n`);
      }
    }
  }
}

const server = net.createServer((socket) => {
  serve(socket).catch((err: unknown) => {
    process.stderr.write(`simPeer: ${err instanceof Error ? err.message : String(err)}\n`);
    socket.destroy();
  });
});
server.listen(Number(values.port), '127.0.0.1', () => {
  const { port } = server.address() as net.AddressInfo;
  process.stdout.write(JSON.stringify({ nodeId, port }) + '\n');
});
process.on('SIGTERM', () => {
  server.close();
  void store.stop().then(() => process.exit(channelMessages.size > 0 ? 3 : 0));
});
