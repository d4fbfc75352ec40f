// What the commands that read a vault share: --vault or --from (a server, downloaded and verified
// into a temporary folder first), the key options and --json.
import type { Command } from 'commander';
import { downloadDir } from '../destinations/transfer.js';
import type { VaultKeys } from '../vault/keys.js';
import { hsmSecretOption, keyFileOption } from './keyOptions.js';
import { UsageError } from './output.js';
import { progressBar } from './progress.js';
import { jsonOption } from './runner.js';

/** A command that reads a vault: --vault or --from (a server), the key options, --json. */
export function vaultCommand(program: Command, name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option('--vault <path>', 'the vault directory')
    .option('--from <url>', 'read the vault from an lnbackup server instead (lnbackup://<server key>@host:port; needs the key)')
    .option('--vault-id <id>', "with --from: which of this node's vaults on the server (when it holds several)")
    .addOption(hsmSecretOption)
    .addOption(keyFileOption)
    .addOption(jsonOption());
}

export interface SourceFlags {
  vault?: string;
  from?: string;
  vaultId?: string;
  json?: boolean;
}

/** Runs `use` on the vault directory: the local one, or a verified download from a server. */
export async function withVaultDir<T>(o: SourceFlags, keys: VaultKeys | null, use: (dir: string) => T | Promise<T>): Promise<T> {
  if (!o.vault === !o.from) throw new UsageError('give one of --vault <path> or --from <lnbackup://…>');
  if (o.vault) return use(o.vault);
  if (!keys) throw new UsageError("--from needs the vault key (--hsm-secret or --key-file): the node's server key is derived from it");
  const bar = progressBar('download', !o.json);
  return downloadDir({ url: o.from as string, keys, vaultId: o.vaultId, onProgress: bar.update }, (dir) => {
    bar.done();
    return use(dir);
  });
}
