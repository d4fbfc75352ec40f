// `lnbackup destination list|add|remove|set|key`: a node's destinations besides its local vault
// (lnbackup servers, live sqlite replicas) and its durability policy, kept in lnbackup.json.
// Changes are made with lightningd stopped (the plugin reads the file at start); a server is
// added only once it holds the whole vault.
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { configPath, readConfig, writeConfig, destinationSettings, type DestinationSettings, type PluginConfig, type LocalVaultMode } from '../cln/config.js';
import { loadNodeKeys } from '../cln/backup/nodeKeys.js';
import { STATUS_FILE } from '../cln/statusFile.js';
import { formatPolicy, parsePolicy } from '../destinations/policy.js';
import { parseRemoteUrl } from '../destinations/remoteUrl.js';
import { pushVault } from '../destinations/transfer.js';
import { privateKeyFromSeed, publicKeyOf } from '../transport/keys.js';
import { refuseIfLightningdRuns } from './initNode.js';
import { hsmSecretOption, keyFileOption, keyOrigin, loadKeys, type KeyFlags } from './keyOptions.js';
import { emit, UsageError } from './output.js';
import { formatBytes, progressBar } from './progress.js';
import { jsonOption, run } from './runner.js';

interface NodeFlags {
  lightningDir: string;
  network: string;
  json?: boolean;
}

interface Located {
  readonly networkDir: string;
  readonly config: PluginConfig;
}

function locate(o: NodeFlags): Located {
  const networkDir = path.resolve(o.lightningDir, o.network);
  return { networkDir, config: readConfig(networkDir) };
}

/** Runs a parser of user input, turning its error into a usage error (exit code 2). */
export function asUsage<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

export function parseStallLimit(v: string): number | null {
  if (v === 'none') return null;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > 7 * 24 * 3600) throw new UsageError(`--stall-limit takes seconds (1..604800) or 'none', not '${v}'`);
  return n;
}

export function parseLocalVaultMode(v: string): LocalVaultMode {
  if (v !== 'durable' && v !== 'cache') throw new UsageError(`--local-vault takes 'durable' or 'cache', not '${v}'`);
  return v;
}

/** Checks that destinations can satisfy their policy (and that something holds the backup). */
export function checkDestinations(d: DestinationSettings): void {
  const spec = parsePolicy(d.policy);
  const count = (d.localVault === 'durable' ? 1 : 0) + d.remotes.length + d.replicas.length;
  if (d.localVault === 'cache' && d.remotes.length === 0) {
    throw new UsageError('--local-vault cache needs at least one --remote: with no server, the local vault is the backup');
  }
  if (spec.kind === 'quorum' && spec.k > count) {
    throw new UsageError(`policy quorum=${spec.k} needs ${spec.k} destinations, but ${count} are configured`);
  }
}

function node(cmd: Command): Command {
  return cmd
    .requiredOption('--lightning-dir <dir>', "lightningd's base directory (e.g. ~/.lightning)")
    .requiredOption('--network <net>', 'bitcoin, testnet, signet or regtest')
    .addOption(jsonOption());
}

function describe(c: PluginConfig): Record<string, unknown> {
  const d = destinationSettings(c);
  return { vault: c.vault, localVault: d.localVault, remotes: d.remotes, replicas: d.replicas, policy: d.policy, stallLimitSeconds: d.stallLimitSeconds };
}

function describeLines(c: PluginConfig): string[] {
  const d = destinationSettings(c);
  return [
    `local vault: ${c.vault} (${d.localVault === 'durable' ? 'a destination' : 'cache only: the servers hold the backup'})`,
    ...d.remotes.map((r) => `server:      ${r}`),
    ...d.replicas.map((r) => `replica:     ${r}`),
    `policy:      ${d.policy}; stall limit ${d.stallLimitSeconds === null ? 'none (wait forever)' : `${d.stallLimitSeconds} s`}`,
  ];
}

export function registerDestinationCommands(program: Command): void {
  const dest = program
    .command('destination')
    .description("a node's destinations besides its local vault (lnbackup servers, live replicas) and its durability policy");

  node(dest.command('list').description('show the destinations, the policy and (if the plugin runs) their live state')).action((o: NodeFlags) =>
    run(o, () => {
      const { networkDir, config } = locate(o);
      const statusPath = path.join(networkDir, STATUS_FILE);
      const live = fs.existsSync(statusPath)
        ? (JSON.parse(fs.readFileSync(statusPath, 'utf8')) as {
            updatedAt?: string;
            destinations?: { name: string; state: string; durableSeq: string; lagRecords: number; lastError: string | null }[];
          })
        : null;
      emit(o, { ok: true, ...describe(config), live }, () => [
        ...describeLines(config),
        ...(live?.destinations
          ? [
              `live state (${statusPath}, ${live.updatedAt ?? '?'}):`,
              ...live.destinations.map(
                (s) => `  ${s.name}: ${s.state}, durable through record ${s.durableSeq}, lag ${s.lagRecords}${s.lastError ? ` (${s.lastError})` : ''}`,
              ),
            ]
          : ['live state:  none (the plugin has not run since lnbackup init)']),
      ]);
    }),
  );

  node(dest.command('add').description('add an lnbackup server (after uploading the whole vault to it) or a live replica; lightningd stopped'))
    .option('--remote <url>', 'lnbackup://<server public key>@<host>:<port>')
    .option('--replica <file>', 'a sqlite file kept as a hot standby (built from the vault at the next start)')
    .action((o: NodeFlags & { remote?: string; replica?: string }) =>
      run(o, async () => {
        if (!o.remote === !o.replica) throw new UsageError('give one of --remote <url> or --replica <file>');
        refuseIfLightningdRuns(o.lightningDir, o.network);
        const { networkDir, config } = locate(o);
        const d = destinationSettings(config);
        let next: PluginConfig;
        let pushed = null;
        if (o.remote) {
          const url = asUsage(() => parseRemoteUrl(o.remote as string).url);
          if (d.remotes.includes(url)) throw new UsageError(`${url} is already a destination`);
          const bar = progressBar('upload', !o.json);
          pushed = await pushVault({ vaultDir: config.vault, url, keys: loadNodeKeys(networkDir, config), onProgress: bar.update });
          bar.done();
          next = { ...config, remotes: [...d.remotes, url] };
        } else {
          const file = path.resolve(o.replica as string);
          if (d.replicas.includes(file)) throw new UsageError(`${file} is already a replica`);
          next = { ...config, replicas: [...d.replicas, file] };
        }
        checkDestinations(destinationSettings(next));
        writeConfig(networkDir, next);
        emit(o, { ok: true, ...describe(next), pushed }, () => [
          ...(pushed ? [`uploaded ${pushed.records} records (${formatBytes(pushed.bytes)}) to ${o.remote}`] : []),
          ...describeLines(next),
          'Start lightningd to use it.',
        ]);
      }),
    );

  node(dest.command('remove').description('remove a server or a replica (lightningd stopped); their data is left where it is'))
    .option('--remote <url>', 'the server to remove')
    .option('--replica <file>', 'the replica to remove')
    .action((o: NodeFlags & { remote?: string; replica?: string }) =>
      run(o, () => {
        if (!o.remote === !o.replica) throw new UsageError('give one of --remote <url> or --replica <file>');
        refuseIfLightningdRuns(o.lightningDir, o.network);
        const { networkDir, config } = locate(o);
        const d = destinationSettings(config);
        const next: PluginConfig = o.remote
          ? { ...config, remotes: d.remotes.filter((r) => r !== asUsage(() => parseRemoteUrl(o.remote as string).url)) }
          : { ...config, replicas: d.replicas.filter((r) => r !== path.resolve(o.replica as string)) };
        if (destinationSettings(next).remotes.length + destinationSettings(next).replicas.length === d.remotes.length + d.replicas.length) {
          throw new UsageError(`${o.remote ?? o.replica} is not a destination of this node`);
        }
        checkDestinations(destinationSettings(next));
        writeConfig(networkDir, next);
        emit(o, { ok: true, ...describe(next) }, () => describeLines(next));
      }),
    );

  node(dest.command('set').description('change the durability policy, the stall limit or the local vault mode (lightningd stopped)'))
    .option('--policy <policy>', "'all' (every destination durable before lightningd commits) or 'quorum=K'")
    .option('--stall-limit <seconds>', "stop lightningd once a transaction has waited this long for its destinations ('none': wait forever)")
    .option('--local-vault <mode>', "'durable' (the local vault is a destination) or 'cache' (it only feeds the servers)")
    .action((o: NodeFlags & { policy?: string; stallLimit?: string; localVault?: string }) =>
      run(o, () => {
        refuseIfLightningdRuns(o.lightningDir, o.network);
        const { networkDir, config } = locate(o);
        const next: PluginConfig = {
          ...config,
          ...(o.policy !== undefined ? { policy: formatPolicy(asUsage(() => parsePolicy(o.policy as string))) } : {}),
          ...(o.stallLimit !== undefined ? { stallLimitSeconds: parseStallLimit(o.stallLimit) } : {}),
          ...(o.localVault !== undefined ? { localVault: parseLocalVaultMode(o.localVault) } : {}),
        };
        checkDestinations(destinationSettings(next));
        writeConfig(networkDir, next);
        emit(o, { ok: true, ...describe(next) }, () => describeLines(next));
      }),
    );

  dest
    .command('key')
    .description(
      "this node's public key towards servers, for a server's --allow list; " +
        'needs only the seed: from --hsm-secret or --key-file, or from a lightning dir with or without lnbackup.json',
    )
    .option('--lightning-dir <dir>', "lightningd's base directory (e.g. ~/.lightning): its lnbackup.json, else <network>/hsm_secret")
    .option('--network <net>', 'bitcoin, testnet, signet or regtest (with --lightning-dir)')
    .addOption(hsmSecretOption)
    .addOption(keyFileOption)
    .addOption(jsonOption())
    .action((o: Partial<NodeFlags> & KeyFlags & { json?: boolean }) =>
      run(o, () => {
        const publicKey = publicKeyOf(privateKeyFromSeed(nodeTransportSeed(o))).toString('hex');
        emit(o, { ok: true, publicKey }, () => [publicKey]);
      }),
    );
}

/** The node's transport seed from the flags of `destination key`: a key given directly, else the lightning dir's. */
function nodeTransportSeed(o: Partial<NodeFlags> & KeyFlags): Buffer {
  const direct = keyOrigin(o);
  if (direct !== null) {
    if (o.lightningDir !== undefined) throw new UsageError('give either --hsm-secret/--key-file or --lightning-dir, not both');
    return loadKeys(direct).keys.transport;
  }
  if (o.lightningDir === undefined || o.network === undefined) {
    throw new UsageError('say whose key: --hsm-secret <file> (or --key-file <file>), or --lightning-dir <dir> --network <net>');
  }
  const networkDir = path.resolve(o.lightningDir, o.network);
  if (fs.existsSync(configPath(networkDir))) return loadNodeKeys(networkDir, readConfig(networkDir)).transport;
  // No lnbackup.json yet (before `init`, e.g. to have a server allow the key first): the node's own hsm_secret.
  return loadKeys({ hsmSecret: path.join(networkDir, 'hsm_secret') }).keys.transport;
}
