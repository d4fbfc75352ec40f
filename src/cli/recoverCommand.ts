// `lnbackup recover`: recovery from the seed and the addresses of a few Lightning peers
// (src/peerstorage/recover.ts): what each peer held, the beacon (servers, vault, high-water mark,
// channels), the restore from a server that reaches the mark, and Core Lightning's channel backup.
// Exit codes: 0 restored (or, without --to, something usable found), 3 every server copy that
// answered was refused by the high-water check, 1 nothing restored otherwise.
import type { Command } from 'commander';
import { parsePeerAddress } from '../peerstorage/recovery/collectBlobs.js';
import { recoverFromPeers, type RecoverResult } from '../peerstorage/recover.js';
import { EXIT_CHECK_FAILED, EXIT_FAILURE, emit, UsageError } from './output.js';
import { formatBytes, progressBar } from './progress.js';
import { jsonOption, run } from './runner.js';

interface RecoverFlags {
  hsmSecret: string;
  peer: string[];
  to?: string;
  emergencyRecover?: string;
  force?: boolean;
  wait: string;
  timeout: string;
  json?: boolean;
}

function parseSeconds(flag: string, v: string): number {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v) || n <= 0 || n > 600) throw new UsageError(`${flag} takes seconds (0 < s <= 600), not '${v}'`);
  return Math.round(n * 1000);
}

function exitCode(r: RecoverResult, wantedDatabase: boolean): number {
  if (r.restored) return 0;
  if (!wantedDatabase) return r.mode === 'none' ? EXIT_FAILURE : 0;
  if (r.servers.length > 0 && r.servers.every((s) => s.outcome === 'refused' || s.outcome === 'failed') && r.servers.some((s) => s.outcome === 'refused'))
    return EXIT_CHECK_FAILED;
  return EXIT_FAILURE;
}

function whatNext(r: RecoverResult, o: RecoverFlags): string[] {
  if (r.restored) return ['', `Start lightningd on ${r.restored.to}.`];
  const lines: string[] = [''];
  if (r.mode === 'none')
    lines.push(
      'No peer handed back a beacon or a channel backup of this node: check the peer addresses (node id, host, port) and that these peers had channels with it.',
    );
  if (r.mode === 'alongside')
    lines.push(
      "The peers hold only Core Lightning's channel backup (lnbackup's peer-storage mode is 'alongside'): restore with lnbackup restore --from <server URL> if you have it written down, or recover the channels with Core Lightning's emergency.recover.",
    );
  if (r.mode === 'lnbackup' && o.to)
    lines.push(
      'No server copy that reaches the high-water mark could be restored: the database would be older than what the peers saw. Try another server, or fall back to the channel backup.',
    );
  if (r.channels.length > 0 && !r.emergencyRecover)
    lines.push(
      'Write the channel backup for Core Lightning with --emergency-recover <lightning-dir>/<network>/emergency.recover, start lightningd and run `lightning-cli emergencyrecover` (or give the records to `lightning-cli recoverchannel`).',
    );
  if (r.emergencyRecover)
    lines.push(
      `Core Lightning's channel backup is in ${r.emergencyRecover}: start lightningd and run \`lightning-cli emergencyrecover\` to recover the channels' funds.`,
    );
  return lines;
}

export function registerRecoverCommand(program: Command): void {
  program
    .command('recover')
    .description(
      "recover from the seed alone: connect to the node's Lightning peers as the node, take back the beacon (or Core Lightning's channel backup) they hold, and restore the database from the servers it names, refusing a copy older than the beacon's high-water mark",
    )
    .requiredOption('--hsm-secret <file>', "the node's hsm_secret (its node key, vault key and channel-backup key come from it)")
    .option(
      '--peer <id@host:port>',
      'a peer that had a channel with the node (repeatable): <node id>@<host>:<port>, e.g. 02ab…@203.0.113.5:9735',
      (v: string, prev: string[]) => [...prev, v],
      [],
    )
    .option('--to <file>', 'the database to write (e.g. <lightning-dir>/<network>/lightningd.sqlite3); without it, only report what the peers hold')
    .option('--emergency-recover <file>', "also write the channel backup as Core Lightning's emergency.recover (for `lightning-cli emergencyrecover`)")
    .option('--force', 'replace an existing --to or --emergency-recover file (stop lightningd first)')
    .option('--wait <seconds>', "how long to wait for each peer's peer_storage_retrieval after init", '5')
    .option('--timeout <seconds>', 'how long each peer may take to connect and send init', '10')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
Example:
  lnbackup recover --hsm-secret hsm_secret \\
    --peer 02ab…@203.0.113.5:9735 --peer 03cd…@198.51.100.7:9735 --peer 02ef…@192.0.2.9:9735 \\
    --to ~/.lightning/bitcoin/lightningd.sqlite3 --emergency-recover ~/.lightning/bitcoin/emergency.recover

It never sends a channel message: it exchanges init, takes what the peer holds, and leaves.
Exit codes: 0 restored (without --to: a beacon or channel backup was found), 1 nothing restored
(no beacon, servers unreachable; the channel backup is still reported), 2 usage error,
3 a server copy was refused because it ends before the beacon's high-water mark.`,
    )
    .action((o: RecoverFlags) =>
      run(o, async () => {
        if (o.peer.length === 0) throw new UsageError('give at least one --peer <node id>@<host>:<port>: the peers that had channels with the node');
        const peers = o.peer.map((p) => {
          try {
            return parsePeerAddress(p);
          } catch (err) {
            throw new UsageError(err instanceof Error ? err.message : String(err));
          }
        });
        const timeoutMs = parseSeconds('--timeout', o.timeout);
        const terminal = !o.json && process.stderr.isTTY;
        let restoreBar: ReturnType<typeof progressBar> | null = null;
        const r = await recoverFromPeers({
          hsmSecretFile: o.hsmSecret,
          peers,
          to: o.to,
          force: o.force,
          emergencyRecoverTo: o.emergencyRecover,
          retrievalWaitMs: parseSeconds('--wait', o.wait),
          handshakeTimeoutMs: timeoutMs,
          initTimeoutMs: timeoutMs,
          onStep: terminal ? (line) => process.stderr.write(`${line}\n`) : undefined,
          onDownloadProgress: (server) => {
            const bar = progressBar(`download ${server.slice(0, 24)}…`, !o.json);
            return (done, total) => {
              bar.update(done, total);
              if (done >= total) bar.done();
            };
          },
          onRestoreProgress: (done, total) => {
            restoreBar ??= progressBar('restore', !o.json);
            restoreBar.update(done, total);
            if (done >= total) restoreBar.done();
          },
        });
        emit(o, { ok: r.restored !== null || (!o.to && r.mode !== 'none'), ...r }, () => [
          `node id:     ${r.nodeId}`,
          ...r.peers.map((p) => `peer:        ${p.peer}: ${p.held}${p.detail ? ` (${p.detail})` : ''}`),
          ...(r.beacon
            ? [
                `beacon:      counter ${r.beacon.counter}, ${r.beacon.from === 'whole' ? 'whole' : `rebuilt from shards ${r.beacon.from.join(', ')}`}, made ${r.beacon.createdAt}`,
                ...r.beacon.servers.map((s) => `server:      ${s.url} (vault ${s.vaultId})`),
                `high water:  generation ${r.beacon.highWater.generation}, record ${r.beacon.highWater.sequence}, data_version ${r.beacon.highWater.dataVersion}, ${r.beacon.highWater.time}`,
              ]
            : [`beacon:      none (mode: ${r.mode})`]),
          `channels:    ${r.channels.length}${r.channelBackupTime ? ` (backup of ${r.channelBackupTime})` : ''}`,
          ...r.channels.map((c) => `  ${c.channelId} with ${c.peerId}, funding ${c.funding}, ${c.sats} sat`),
          ...r.servers.map((s) => `${s.outcome.padEnd(12)} ${s.url}${s.message ? `: ${s.message}` : ''}`),
          ...(r.restored
            ? [
                `restored:    ${r.restored.to} (${formatBytes(r.restored.dbBytes)}) from ${r.restored.server}`,
                `version:     ${r.restored.version}${r.restored.inFlight ? ` (the last transaction is the in-flight one; committed for sure: ${r.restored.committedVersion})` : ' (committed)'}`,
                `checks:      integrity_check ${r.restored.integrityCheck}, foreign_key_check ok`,
              ]
            : []),
          ...(r.emergencyRecover ? [`channel backup: ${r.emergencyRecover}`] : []),
          ...whatNext(r, o),
        ]);
        return exitCode(r, o.to !== undefined);
      }),
    );
}
