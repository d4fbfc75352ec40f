// `lnbackup init`: set up a node (lightningd stopped): create or reopen its vault, take the first
// snapshot, upload it to the servers named, and write the plugin's configuration (initNode.ts).
import type { Command } from 'commander';
import { formatPolicy, parsePolicy } from '../destinations/policy.js';
import { parseRemoteUrl } from '../destinations/remoteUrl.js';
import { pushVault, type PushResult } from '../destinations/transfer.js';
import { asUsage, checkDestinations, parseLocalVaultMode, parseStallLimit } from './destinationCommands.js';
import { prepareNode } from './initNode.js';
import { keyFileOption } from './keyOptions.js';
import { emit } from './output.js';
import { formatBytes, progressBar } from './progress.js';
import { retentionFromFlags, retentionOptions, type RetentionFlags } from './retentionCommand.js';
import { jsonOption, run } from './runner.js';

interface InitFlags extends RetentionFlags {
  lightningDir: string;
  network: string;
  vault: string;
  keyFile?: string;
  nodeId?: string;
  force?: boolean;
  json?: boolean;
  remote: string[];
  replica: string[];
  policy: string;
  stallLimit: string;
  localVault: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function registerInitCommand(program: Command): void {
  retentionOptions(
    program
      .command('init')
      .description('set up a node (lightningd stopped): create or reopen its vault, take the first snapshot, write the plugin configuration')
      .requiredOption('--lightning-dir <dir>', "lightningd's base directory (e.g. ~/.lightning)")
      .requiredOption('--network <net>', 'bitcoin, testnet, signet or regtest (the subdirectory holding hsm_secret and the database)')
      .requiredOption('--vault <path>', 'the vault directory (put it on another disk)')
      .addOption(keyFileOption)
      .option('--node-id <id>', 'the node id, with --key-file (from `lightning-cli getinfo`)')
      .option('--force', 'replace an existing lnbackup configuration of this node')
      .option('--remote <url>', 'an lnbackup server that must also hold every record (repeatable): lnbackup://<server key>@host:port', collect, [])
      .option('--replica <file>', 'a live sqlite replica kept as a hot standby (repeatable)', collect, [])
      .option('--policy <policy>', "'all' (default: every destination durable before lightningd commits) or 'quorum=K'", 'all')
      .option('--stall-limit <seconds>', "stop lightningd once a transaction has waited this long for its destinations (default 'none': wait)", 'none')
      .option(
        '--local-vault <mode>',
        "'durable' (default) or 'cache' (with --remote: the servers hold the backup, the local vault only feeds them)",
        'durable',
      ),
  )
    .addOption(jsonOption())
    .action((o: InitFlags) =>
      run(o, async () => {
        const destinations = {
          remotes: o.remote.map((u) => asUsage(() => parseRemoteUrl(u).url)),
          replicas: o.replica,
          policy: formatPolicy(asUsage(() => parsePolicy(o.policy))),
          stallLimitSeconds: parseStallLimit(o.stallLimit),
          localVault: parseLocalVaultMode(o.localVault),
        };
        checkDestinations(destinations);
        const bar = progressBar('snapshot', !o.json);
        const prepared = prepareNode({ ...o, destinations, retention: retentionFromFlags(o), onProgress: bar.update });
        bar.done();
        const r = prepared.result;
        const pushed: ({ url: string } & PushResult)[] = [];
        for (const url of destinations.remotes) {
          const up = progressBar(`upload to ${url.slice(0, 24)}…`, !o.json);
          pushed.push({ url, ...(await pushVault({ vaultDir: r.vault, url, keys: prepared.keys, onProgress: up.update })) });
          up.done();
        }
        prepared.commit();
        for (const w of r.warnings) process.stderr.write(`lnbackup: warning: ${w}\n`);
        emit(o, { ok: true, ...r, pushed }, () => [
          `node id:     ${r.nodeId ?? '(unknown: key file without node id)'}`,
          `vault:       ${r.vault} (${r.vaultCreated ? 'created' : 'reopened'}, id ${r.vaultId})`,
          `snapshot:    generation ${r.generation} at data_version ${r.dataVersion} (${r.dbBytes === 0 ? 'no database yet: the backup starts from the schema migrations' : formatBytes(r.dbBytes)})`,
          ...pushed.map((p) => `server:      ${p.url} holds the vault (${p.records} records uploaded)`),
          ...(destinations.replicas.length ? destinations.replicas.map((f) => `replica:     ${f} (built from the vault when lightningd starts)`) : []),
          `policy:      ${destinations.policy}`,
          `config:      ${r.config}`,
          '',
          "Now add this line to lightningd's config file and start lightningd:",
          `  plugin=${r.plugin}`,
        ]);
      }),
    );
}
