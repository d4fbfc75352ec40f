// Where lnbackup's root key comes from: derived from the node's hsm_secret, or read from a key file holding `lightning-cli makesecret string=lnbackup` output.
import { KeyError, VAULT_KEY_INFO, makesecret, nodeIdFromHsmSecret, readHsmSecret } from './hsmSecret.js';
import { readBoundedFile, statKeyMaterialFile } from './boundedRead.js';

export interface RootKey {
  /** 32 bytes, equal to `lightning-cli makesecret string=lnbackup`. */
  key: Buffer;
  /** The node id (66 lowercase hex), or null when it cannot be known (a key file without one). */
  nodeId: string | null;
}

/** The root key and node id derived from an hsm_secret file. */
export function rootKeyFromHsmSecret(filePath: string): RootKey {
  const secret = readHsmSecret(filePath);
  try {
    return {
      key: makesecret(secret, Buffer.from(VAULT_KEY_INFO, 'utf8')),
      nodeId: nodeIdFromHsmSecret(secret),
    };
  } finally {
    secret.fill(0);
  }
}

const KEY_FILE_FORMATS =
  'expected 64 hex characters, or the JSON that `lightning-cli makesecret string=lnbackup` prints ({"secret": "<64 hex>"}, optionally with "node_id")';

function keyFromHex(hex: string, filePath: string, where: string): Buffer {
  if (!/^[0-9a-fA-F]*$/.test(hex)) {
    throw new KeyError(`key file ${filePath}: ${where} is not hexadecimal; ${KEY_FILE_FORMATS}`);
  }
  if (hex.length !== 64) {
    throw new KeyError(`key file ${filePath}: ${where} has ${hex.length} hex characters, not 64; ${KEY_FILE_FORMATS}`);
  }
  return Buffer.from(hex, 'hex');
}

/**
 * Reads the root key from a key file (at most 4 KiB): either 64 hex characters (surrounding whitespace ignored)
 * or makesecret's JSON output, whose optional "node_id" becomes the returned nodeId.
 */
export function rootKeyFromKeyFile(filePath: string): RootKey {
  const raw = readBoundedFile(filePath, 'key file');
  const text = raw.toString('utf8').trim();
  raw.fill(0);
  if (text.length === 0) {
    throw new KeyError(`key file ${filePath} is empty; ${KEY_FILE_FORMATS}`);
  }
  if (text.startsWith('{') || text.startsWith('[')) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      // JSON.parse's message quotes the input, so it must not be passed on.
      throw new KeyError(`key file ${filePath} looks like JSON but is not valid JSON; ${KEY_FILE_FORMATS}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new KeyError(`key file ${filePath} is JSON but not an object; ${KEY_FILE_FORMATS}`);
    }
    const obj = parsed as Record<string, unknown>;
    if (typeof obj.secret !== 'string') {
      throw new KeyError(`key file ${filePath} is JSON without a "secret" string; ${KEY_FILE_FORMATS}`);
    }
    const key = keyFromHex(obj.secret, filePath, 'its "secret"');
    let nodeId: string | null = null;
    if (obj.node_id !== undefined) {
      if (typeof obj.node_id !== 'string' || !/^0[23][0-9a-fA-F]{64}$/.test(obj.node_id)) {
        throw new KeyError(`key file ${filePath}: "node_id" is not a node id (66 hex characters starting with 02 or 03); fix or remove it`);
      }
      nodeId = obj.node_id.toLowerCase();
    }
    return { key, nodeId };
  }
  return { key: keyFromHex(text, filePath, 'its content'), nodeId: null };
}

/** True when no one but the owner can read or write the key file (mode & 0o077 === 0), so the CLI can warn otherwise. */
export function keyFileIsPrivate(filePath: string): boolean {
  return (statKeyMaterialFile(filePath, 'key file').mode & 0o077) === 0;
}
