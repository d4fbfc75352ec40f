// The key options shared by the commands that open a vault: --hsm-secret or --key-file.
import { Option } from 'commander';
import { keyFileIsPrivate } from '../keys/keySource.js';
import { loadRootKey, type KeyOrigin } from '../keys/rootKey.js';
import { vaultKeysFromRoot, type VaultKeys } from '../vault/keys.js';
import { UsageError } from './output.js';

export interface KeyFlags {
  hsmSecret?: string;
  keyFile?: string;
}

export const hsmSecretOption = new Option('--hsm-secret <file>', "the node's hsm_secret (the vault key is derived from it)");
export const keyFileOption = new Option(
  '--key-file <file>',
  'a key file instead: the output of `lightning-cli makesecret string=lnbackup` (for an encrypted hsm_secret)',
);

export function keyOrigin(flags: KeyFlags): KeyOrigin | null {
  if (flags.hsmSecret && flags.keyFile) throw new UsageError('give either --hsm-secret or --key-file, not both');
  if (flags.hsmSecret) return { hsmSecret: flags.hsmSecret };
  if (flags.keyFile) return { keyFile: flags.keyFile };
  return null;
}

export interface LoadedKeys {
  readonly keys: VaultKeys;
  readonly nodeId: string | null;
  readonly warnings: string[];
}

export function loadKeys(origin: KeyOrigin): LoadedKeys {
  const warnings: string[] = [];
  if ('keyFile' in origin && !keyFileIsPrivate(origin.keyFile)) {
    warnings.push(`key file ${origin.keyFile} is readable by other users; chmod 600 it`);
  }
  const root = loadRootKey(origin);
  const keys = vaultKeysFromRoot(root.key);
  root.key.fill(0);
  return { keys, nodeId: root.nodeId, warnings };
}

export function requireKeys(flags: KeyFlags): LoadedKeys {
  const origin = keyOrigin(flags);
  if (!origin) throw new UsageError('this command needs the vault key: pass --hsm-secret <file> or --key-file <file>');
  return loadKeys(origin);
}
