// Loads the root key from whichever source the configuration or the command line names.
import { rootKeyFromHsmSecret, rootKeyFromKeyFile, type RootKey } from './keySource.js';

export type KeyOrigin = { readonly hsmSecret: string } | { readonly keyFile: string };

export function loadRootKey(origin: KeyOrigin): RootKey {
  return 'hsmSecret' in origin ? rootKeyFromHsmSecret(origin.hsmSecret) : rootKeyFromKeyFile(origin.keyFile);
}
