// Recovery from the seed alone (issue 12, item 5): connect to the given peers as the node, collect
// what they hold for it, rebuild the newest beacon (whole, or from k of its n shards), and restore
// the database from the servers the beacon names, refusing any server copy that does not reach the
// beacon's high-water mark (naming the server and both points). Peers that hold Core Lightning's
// own channel backup instead (alongside mode) give the channels, and an emergency.recover file for
// Core Lightning's own recovery. The channel records are reported and can be written whatever
// happens to the servers.
import fs from 'node:fs';
import path from 'node:path';
import { downloadDir } from '../destinations/transfer.js';
import { parseRemoteUrl } from '../destinations/remoteUrl.js';
import { makesecret, nodeIdFromHsmSecret, readHsmSecret, VAULT_KEY_INFO } from '../keys/hsmSecret.js';
import { restoreDatabase, type RestoreResult } from '../restore/rebuild.js';
import { repairVaultInMemory } from '../vault/redundancy/protectedRead.js';
import { vaultKeysFromRoot } from '../vault/keys.js';
import { writeFileAtomic } from '../util/durableFs.js';
import { recoverBeacon, type RecoveredBeacon } from './beacon/beacon.js';
import { BeaconError } from './beacon/beaconError.js';
import { openBlob, type OpenedBlob } from './beacon/sealedBlob.js';
import { beaconKeyFromRoot } from './beacon/beaconKey.js';
import { channelBackupKey, openChannelBackup, sealChannelBackup } from './channelBackup/emergencyRecover.js';
import { decodeScbChannel, type ScbChannel, type StaticChanBackup } from './channelBackup/scbRecords.js';
import type { PeerAddress } from './peer/lightningPeer.js';
import { nodePrivateKey } from './peer/nodeKey.js';
import { collectBlobs, type CollectOptions, type PeerCollection } from './recovery/collectBlobs.js';
import { checkReachesHighWater, describeMark, describePoint, type CopyPoint } from './recovery/highWater.js';

export interface RecoverOptions extends Omit<CollectOptions, 'onPeer'> {
  readonly hsmSecretFile: string;
  readonly peers: readonly PeerAddress[];
  /** The database to write; without it nothing is restored (what the peers hold is only reported). */
  readonly to?: string;
  readonly force?: boolean;
  /** Write the channel backup here as Core Lightning's emergency.recover. */
  readonly emergencyRecoverTo?: string;
  /** One line per step, for a terminal. */
  readonly onStep?: (line: string) => void;
  readonly onDownloadProgress?: (server: string) => (done: number, total: number) => void;
  readonly onRestoreProgress?: (done: number, total: number) => void;
}

export type PeerHeld = 'beacon' | 'shard' | 'channel-backup' | 'nothing' | 'refused' | 'unreachable';

export interface PeerReport {
  readonly peer: string;
  readonly held: PeerHeld;
  readonly detail: string | null;
}

export interface ChannelReport {
  readonly channelId: string;
  readonly peerId: string;
  readonly funding: string;
  readonly sats: string;
}

export interface ServerReport {
  readonly url: string;
  readonly vaultId: string;
  readonly outcome: 'restored' | 'refused' | 'failed';
  /** For a refusal: behind (rolled back or cut), diverged, or key-mismatch. */
  readonly reason: string | null;
  readonly copy: CopyPoint | null;
  readonly message: string | null;
}

export interface RecoverResult {
  readonly nodeId: string;
  /** What the peers held: lnbackup's beacon, Core Lightning's channel backup (alongside), or nothing usable. */
  readonly mode: 'lnbackup' | 'alongside' | 'none';
  readonly peers: readonly PeerReport[];
  readonly beacon: {
    readonly counter: bigint;
    readonly from: 'whole' | readonly number[];
    readonly createdAt: string;
    readonly servers: readonly { readonly url: string; readonly vaultId: string }[];
    readonly highWater: {
      readonly generation: number;
      readonly sequence: bigint;
      readonly recordHash: string;
      readonly dataVersion: number;
      readonly time: string;
    };
  } | null;
  readonly channelBackupTime: string | null;
  readonly channels: readonly ChannelReport[];
  readonly servers: readonly ServerReport[];
  readonly restored: (RestoreResult & { readonly server: string }) | null;
  readonly emergencyRecover: string | null;
}

function channelReport(c: ScbChannel): ChannelReport {
  return {
    channelId: c.channelId.toString('hex'),
    peerId: c.peerId.toString('hex'),
    funding: `${Buffer.from(c.fundingTxid).reverse().toString('hex')}:${c.fundingOutnum}`,
    sats: c.fundingSats.toString(),
  };
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The Core Lightning channel backups among the blobs that are not beacons, newest first. */
function newestChannelBackup(
  scbKey: Buffer,
  collected: readonly PeerCollection[],
  notBeacons: ReadonlySet<number>,
): { index: number; backup: StaticChanBackup }[] {
  const found: { index: number; backup: StaticChanBackup }[] = [];
  for (const i of notBeacons) {
    try {
      found.push({ index: i, backup: openChannelBackup(scbKey, collected[i].blob as Buffer) });
    } catch {
      // Neither a beacon nor our channel backup: reported as refused.
    }
  }
  return found.sort((a, b) => b.backup.timestamp - a.backup.timestamp);
}

/** Restores from one server the beacon names, or says why not. */
async function restoreFromServer(
  o: RecoverOptions,
  keys: ReturnType<typeof vaultKeysFromRoot>,
  beacon: RecoveredBeacon,
  server: RecoveredBeacon['content']['servers'][number],
): Promise<{ report: ServerReport; restored: RestoreResult | null }> {
  const vaultId = server.vaultId.toString('hex');
  const base = { url: server.url, vaultId };
  try {
    if (!parseRemoteUrl(server.url).publicKey.equals(server.pinnedKey)) {
      return {
        report: {
          ...base,
          outcome: 'refused',
          reason: 'key-mismatch',
          copy: null,
          message: `the beacon pins key ${server.pinnedKey.toString('hex')} for ${server.url}, whose URL names another key`,
        },
        restored: null,
      };
    }
    const mark = beacon.content.highWater;
    return await downloadDir({ url: server.url, keys, vaultId, onProgress: o.onDownloadProgress?.(server.url) }, async (dir) => {
      const verdict = checkReachesHighWater(dir, keys, mark);
      if (!verdict.ok) {
        const what = verdict.reason === 'behind' ? 'ends before' : 'does not hold the record of';
        const message = `${server.url}'s copy of vault ${vaultId} ${what} the beacon's high-water mark: the copy ends at ${describePoint(verdict.copy)}, the mark is ${describeMark(mark)}; it rolled back or lost records the node made durable, so it is refused`;
        return { report: { ...base, outcome: 'refused' as const, reason: verdict.reason, copy: verdict.copy, message }, restored: null };
      }
      const repair = await repairVaultInMemory(dir);
      const restored = restoreDatabase({ vaultDir: dir, keys, to: o.to as string, force: o.force, onProgress: o.onRestoreProgress, repair });
      return { report: { ...base, outcome: 'restored' as const, reason: null, copy: verdict.copy, message: null }, restored };
    });
  } catch (err) {
    return { report: { ...base, outcome: 'failed', reason: null, copy: null, message: messageOf(err) }, restored: null };
  }
}

/** Writes the channel records as Core Lightning's emergency.recover (never over a file without `force`). */
function writeEmergencyRecover(file: string, bytes: Buffer, force: boolean | undefined): string {
  const to = path.resolve(file);
  if (fs.existsSync(to) && !force) throw new Error(`${to} already exists; pass --force to replace it`);
  writeFileAtomic(to, bytes, 0o400);
  return to;
}

export async function recoverFromPeers(o: RecoverOptions): Promise<RecoverResult> {
  const step = o.onStep ?? (() => undefined);
  if (o.peers.length === 0) throw new Error('give at least one peer (--peer <node id>@<host>:<port>)');
  if (o.to && fs.existsSync(o.to) && !o.force) throw new Error(`${path.resolve(o.to)} already exists; pass --force to replace it (stop lightningd first)`);
  const secret = readHsmSecret(o.hsmSecretFile);
  const nodeId = nodeIdFromHsmSecret(secret);
  const nodeKey = nodePrivateKey(secret);
  const root = makesecret(secret, Buffer.from(VAULT_KEY_INFO, 'utf8'));
  const scbKey = channelBackupKey(secret);
  secret.fill(0);
  const keys = vaultKeysFromRoot(root);
  const beaconKey = beaconKeyFromRoot(root);
  root.fill(0);

  step(`node ${nodeId}: asking ${o.peers.length} peer(s) for what they hold`);
  const collected = await collectBlobs(nodeKey, o.peers, {
    ...o,
    onPeer: (p) => step(`  ${p.peer}: ${p.error ? `failed: ${p.error}` : p.blob ? `a blob of ${p.blob.length} bytes` : 'holds nothing for us'}`),
  });
  nodeKey.fill(0);
  const withBlob = collected.map((c, i) => ({ c, i })).filter(({ c }) => c.blob !== null);
  const blobs = withBlob.map(({ c }) => c.blob as Buffer);

  let beacon: RecoveredBeacon | null = null;
  let beaconError: BeaconError | null = null;
  try {
    beacon = await recoverBeacon(beaconKey, blobs, -1n, Buffer.from(nodeId, 'hex'));
  } catch (err) {
    if (!(err instanceof BeaconError)) throw err;
    beaconError = err;
  }
  // Each blob on its own: what it is (a whole beacon or a shard, its counter), or why it is refused;
  // then the refusals only the rebuild finds (a content that does not decode, another node id).
  const refusal = new Map<number, BeaconError>();
  const opened = new Map<number, OpenedBlob>();
  for (const { c, i } of withBlob) {
    try {
      opened.set(i, openBlob(beaconKey, c.blob as Buffer, -1n));
    } catch (err) {
      if (!(err instanceof BeaconError)) throw err;
      refusal.set(i, err);
    }
  }
  for (const r of beacon?.refused ?? []) refusal.set(withBlob[r.blob].i, r.error);
  // A refused blob may be Core Lightning's channel backup (whatever the size check said): its MAC decides.
  const backups = newestChannelBackup(scbKey, collected, new Set(refusal.keys()));
  const clnBackupAt = new Set(backups.map((b) => b.index));

  const peers: PeerReport[] = collected.map((c, i) => {
    if (c.error) return { peer: c.peer, held: 'unreachable', detail: c.error };
    if (!c.blob) return { peer: c.peer, held: 'nothing', detail: null };
    if (clnBackupAt.has(i)) return { peer: c.peer, held: 'channel-backup', detail: "Core Lightning's channel backup (chanbackup)" };
    const refused = refusal.get(i);
    if (refused) return { peer: c.peer, held: 'refused', detail: refused.message };
    const blob = opened.get(i) as OpenedBlob;
    const unused = beacon === null ? ` (${beaconError?.message ?? 'not used'})` : blob.counter !== beacon.counter ? ', older than the one used' : '';
    return { peer: c.peer, held: blob.kind === 'shard' ? 'shard' : 'beacon', detail: `counter ${blob.counter}${unused}` };
  });

  let channels: ChannelReport[] = [];
  let channelBackupTime: string | null = null;
  let emergencyBytes: Buffer | null = null;
  if (beacon) {
    const records = beacon.content.channelBackup;
    channels = records.map((r) => channelReport(decodeScbChannel(r)));
    channelBackupTime = new Date(beacon.content.createdMs).toISOString();
    emergencyBytes = sealChannelBackup(scbKey, records, Math.floor(beacon.content.createdMs / 1000));
    const m = beacon.content.highWater;
    step(
      `beacon ${beacon.counter} (${beacon.from === 'whole' ? 'whole' : `rebuilt from shards ${beacon.from.join(', ')}`}): ${beacon.content.servers.length} server(s), high-water mark ${describeMark(m)}, ${channels.length} channel(s)`,
    );
  } else if (backups.length > 0) {
    const newest = backups[0];
    channels = newest.backup.channels.map(channelReport);
    channelBackupTime = new Date(newest.backup.timestamp * 1000).toISOString();
    emergencyBytes = collected[newest.index].blob;
    step(
      `no lnbackup beacon; Core Lightning's channel backup of ${channelBackupTime}: ${channels.length} channel(s) (alongside mode: the database cannot be found from the seed alone)`,
    );
  } else {
    step(`no peer handed back anything usable${beaconError ? ` (${beaconError.message})` : ''}`);
  }
  const emergencyRecover = o.emergencyRecoverTo && emergencyBytes ? writeEmergencyRecover(o.emergencyRecoverTo, emergencyBytes, o.force) : null;
  if (emergencyRecover) step(`channel backup written to ${emergencyRecover} (Core Lightning's emergency.recover format)`);

  const servers: ServerReport[] = [];
  let restored: RecoverResult['restored'] = null;
  if (beacon && o.to) {
    for (const server of beacon.content.servers) {
      step(`restoring from ${server.url} (vault ${server.vaultId.toString('hex')})`);
      const r = await restoreFromServer(o, keys, beacon, server);
      servers.push(r.report);
      if (r.report.message) step(`  ${r.report.outcome}: ${r.report.message}`);
      if (r.restored) {
        restored = { ...r.restored, server: server.url };
        break;
      }
    }
  }

  const m = beacon?.content.highWater;
  return {
    nodeId,
    mode: beacon ? 'lnbackup' : backups.length > 0 ? 'alongside' : 'none',
    peers,
    beacon:
      beacon && m
        ? {
            counter: beacon.counter,
            from: beacon.from,
            createdAt: new Date(beacon.content.createdMs).toISOString(),
            servers: beacon.content.servers.map((s) => ({ url: s.url, vaultId: s.vaultId.toString('hex') })),
            highWater: {
              generation: m.generation,
              sequence: m.sequence,
              recordHash: m.recordHash.toString('hex'),
              dataVersion: m.dataVersion,
              time: new Date(m.timeMs).toISOString(),
            },
          }
        : null,
    channelBackupTime,
    channels,
    servers,
    restored,
    emergencyRecover,
  };
}
