// The vault keys of a configured node: its root key (from hsm_secret or a key file, as
// lnbackup.json says), checked against the node id the configuration was written for.
import { loadRootKey } from '../../keys/rootKey.js';
import { vaultKeysFromRoot, type VaultKeys } from '../../vault/keys.js';
import { configPath, resolveIn, type PluginConfig } from '../config.js';

export function loadNodeKeys(networkDir: string, c: PluginConfig): VaultKeys {
  const keyOrigin = 'hsmSecret' in c.key ? { hsmSecret: resolveIn(networkDir, c.key.hsmSecret) } : { keyFile: resolveIn(networkDir, c.key.keyFile) };
  const root = loadRootKey(keyOrigin);
  if (c.nodeId && root.nodeId && root.nodeId !== c.nodeId) {
    throw new Error(`this node's hsm_secret gives node id ${root.nodeId}, but ${configPath(networkDir)} was written for ${c.nodeId}`);
  }
  const keys = vaultKeysFromRoot(root.key);
  root.key.fill(0);
  return keys;
}
