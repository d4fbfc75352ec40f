// The node's own secp256k1 private key from its hsm_secret, so the minimal peer connects *as the
// node* (its BOLT #8 static key is the node id). hsmd's derivation (hsmd/libhsmd.c, node_key):
// HKDF-SHA256(salt = u32 counter little-endian from 0, ikm = the first 32 bytes of secret_data,
// info "nodeid"), the counter raised until the result is a valid key. The result is checked
// against src/keys' node id, which derives the same public key independently.
import crypto from 'node:crypto';
import { nodeIdFromHsmSecret } from '../../keys/hsmSecret.js';
import { publicKeyOf } from '../../transport/keys.js';

const NODE_ID_INFO = Buffer.from('nodeid', 'utf8');

/** The node's private key for the secret `parseHsmSecret` returned (32 or 64 bytes). */
export function nodePrivateKey(hsmSecret: Buffer): Buffer {
  const expected = nodeIdFromHsmSecret(hsmSecret);
  const salt = Buffer.alloc(4);
  for (let counter = 0; counter < 1024; counter++) {
    salt.writeUInt32LE(counter);
    const key = Buffer.from(crypto.hkdfSync('sha256', hsmSecret.subarray(0, 32), salt, NODE_ID_INFO, 32));
    let id: string;
    try {
      id = publicKeyOf(key).toString('hex');
    } catch {
      continue; // zero or not below the curve order: hsmd tries the next salt
    }
    if (id !== expected) throw new Error('the node key derived here does not match the node id: the derivations disagree');
    return key;
  }
  throw new Error('could not derive a valid node key');
}
