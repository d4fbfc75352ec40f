// Reproduces Core Lightning's hsm_secret handling: parses both file formats and derives the node id and `makesecret` output exactly as hsmd does.
//
// Derivation, as in ElementsProject/lightning (common/hsm_secret.c, hsmd/libhsmd.c):
//   file (detect_hsm_secret_type):
//     32 bytes                      -> legacy plain: secret_data = the 32 bytes
//     73 bytes                      -> legacy encrypted (libsodium secretstream): refused
//     otherwise, first 32 bytes zero -> mnemonic without passphrase:
//                                      secret_data = BIP39 seed of the mnemonic text after byte 32 (64 bytes)
//     otherwise                     -> mnemonic with passphrase (first 32 bytes = sha256(seed)): refused
//   derived_secret = HKDF-SHA256(salt = none, ikm = secret_data (all 32 or 64 bytes), info = "derived secrets")
//   makesecret(info) = HKDF-SHA256(salt = none, ikm = derived_secret, info)
//   node key = HKDF-SHA256(salt = u32 counter (little-endian, from 0), ikm = first 32 bytes of secret_data,
//                          info = "nodeid"), counter incremented until it is a valid secp256k1 key.
import crypto from 'node:crypto';
import { KeyError } from './keyError.js';
import { readBoundedFile } from './boundedRead.js';

export { KeyError } from './keyError.js';

/** The makesecret info string lnbackup uses: its root key equals `lightning-cli makesecret string=lnbackup`. */
export const VAULT_KEY_INFO = 'lnbackup';

const PLAIN_LEN = 32;
const PASSPHRASE_HASH_LEN = 32;
/** crypto_secretstream_xchacha20poly1305 HEADERBYTES (24) + 32-byte secret + ABYTES (17). */
const LEGACY_ENCRYPTED_LEN = 73;
const BIP39_SEED_LEN = 64;

const ENCRYPTED_ADVICE = 'pass --key-file with the output of `lightning-cli makesecret string=lnbackup`';

function hkdf32(ikm: Buffer, salt: Buffer, info: Buffer): Buffer {
  return Buffer.from(crypto.hkdfSync('sha256', ikm, salt, info, 32));
}

/** BIP39 mnemonic-to-seed with an empty passphrase: PBKDF2-HMAC-SHA512(mnemonic, "mnemonic", 2048 rounds) -> 64 bytes. */
function bip39Seed(mnemonic: string): Buffer {
  return crypto.pbkdf2Sync(Buffer.from(mnemonic.normalize('NFKD'), 'utf8'), Buffer.from('mnemonic', 'utf8'), 2048, BIP39_SEED_LEN, 'sha512');
}

/**
 * Checks the mnemonic's shape as far as we can without the BIP39 word list:
 * 12 to 24 words (a multiple of 3) of 3 to 8 lowercase letters, separated by single spaces.
 * lightningd additionally checks every word against the English list and the checksum.
 * Returns what is wrong (never quoting a word), or null.
 */
function mnemonicShapeProblem(mnemonic: string): string | null {
  if (mnemonic.length === 0) return 'hsm_secret has no mnemonic after its first 32 bytes';
  if (!/^[a-z]+( [a-z]+)*$/.test(mnemonic)) {
    return 'hsm_secret mnemonic must be lowercase words separated by single spaces, with no newline or other characters';
  }
  const words = mnemonic.split(' ');
  if (words.length < 12 || words.length > 24 || words.length % 3 !== 0) {
    return `hsm_secret mnemonic has ${words.length} words, not 12, 15, 18, 21 or 24`;
  }
  if (words.some((w) => w.length < 3 || w.length > 8)) return 'hsm_secret mnemonic has a word that is not a BIP39 word (they are 3 to 8 letters)';
  return null;
}

/**
 * Returns the secret Core Lightning derives everything from (its `secret_data`):
 * the 32 file bytes for the legacy format, or the 64-byte BIP39 seed for the mnemonic format.
 * Throws KeyError for encrypted, passphrase-protected, truncated or unknown files.
 */
export function parseHsmSecret(file: Buffer): Buffer {
  if (file.length < PLAIN_LEN) {
    throw new KeyError(`hsm_secret is ${file.length} bytes, shorter than the 32 bytes of the smallest valid file; it is truncated or not an hsm_secret`);
  }
  if (file.length === PLAIN_LEN) {
    // lightningd would accept 32 zero bytes, but no node generates them: it is a mnemonic-format file cut short.
    if (file.equals(Buffer.alloc(PLAIN_LEN))) {
      throw new KeyError(
        'hsm_secret is 32 zero bytes: it looks like a mnemonic-format file whose mnemonic is missing (truncated); use the file lightningd runs with',
      );
    }
    return Buffer.from(file);
  }
  if (file.length === LEGACY_ENCRYPTED_LEN) {
    throw new KeyError(`hsm_secret is encrypted (legacy 73-byte format, --encrypted-hsm); ${ENCRYPTED_ADVICE}`);
  }
  const mnemonic = mnemonicAfterPrefix(file);
  if (!file.subarray(0, PASSPHRASE_HASH_LEN).equals(Buffer.alloc(PASSPHRASE_HASH_LEN))) {
    // A passphrase-protected file is the passphrase check's 32 bytes followed by the mnemonic; anything
    // else with a non-zero start is not an hsm_secret at all, and is named so (never by its content).
    // (A passphrase check is a hash: its 32 bytes are never all printable, so a text file is not one.)
    const text = looksLikeText(file);
    if (!text && mnemonicShapeProblem(mnemonic) === null) {
      throw new KeyError(`hsm_secret is encrypted (mnemonic format protected by a BIP39 passphrase); ${ENCRYPTED_ADVICE}`);
    }
    if (text && mnemonicShapeProblem(file.toString('latin1').trim()) === null) {
      throw new KeyError(
        'hsm_secret holds a mnemonic written as plain text, not the file lightningd keeps (32 zero bytes, then the words); ' +
          "pass the node's own hsm_secret, or write one from the words with `lightning-hsmtool generatehsm`",
      );
    }
    throw new KeyError(`hsm_secret is ${file.length} bytes of ${text ? 'text' : 'binary data'} and is not an hsm_secret: ${EXPECTED_FORMATS}`);
  }
  const problem = mnemonicShapeProblem(mnemonic);
  if (problem !== null) {
    throw new KeyError(
      `${problem}; the hsm_secret looks like the mnemonic format but its words are malformed; check that this is the file lightningd uses, or ${ENCRYPTED_ADVICE}`,
    );
  }
  return bip39Seed(mnemonic);
}

/** What lightningd's files look like, for refusals of files that are none of them. */
const EXPECTED_FORMATS =
  'Core Lightning writes 32 bytes (legacy), 73 bytes (legacy encrypted) or 32 bytes followed by a BIP39 mnemonic; ' +
  "pass the node's own file, <lightning-dir>/<network>/hsm_secret (e.g. ~/.lightning/bitcoin/hsm_secret)";

/** The mnemonic text after the first 32 bytes (lightningd copies it with strndup, so it ends at the first NUL). */
function mnemonicAfterPrefix(file: Buffer): string {
  const rest = file.subarray(PASSPHRASE_HASH_LEN);
  const nul = rest.indexOf(0);
  return (nul >= 0 ? rest.subarray(0, nul) : rest).toString('latin1');
}

/** True when every byte is printable ASCII or common whitespace. */
function looksLikeText(file: Buffer): boolean {
  return file.every((b) => (b >= 0x20 && b < 0x7f) || b === 0x09 || b === 0x0a || b === 0x0d);
}

/** Reads an hsm_secret file (refusing any larger than 4 KiB before reading it) and parses it. */
export function readHsmSecret(filePath: string): Buffer {
  const file = readBoundedFile(filePath, 'hsm_secret');
  try {
    return parseHsmSecret(file);
  } catch (err) {
    if (err instanceof KeyError) throw new KeyError(`${filePath}: ${err.message}`);
    throw err;
  } finally {
    file.fill(0);
  }
}

function checkSecretData(hsmSecret: Buffer): void {
  if (hsmSecret.length !== PLAIN_LEN && hsmSecret.length !== BIP39_SEED_LEN) {
    throw new RangeError(`hsm secret must be 32 or 64 bytes (from parseHsmSecret), got ${hsmSecret.length}`);
  }
}

/** Equals lightningd's `makesecret` with these info bytes, for the secret parseHsmSecret returned. */
export function makesecret(hsmSecret: Buffer, info: Buffer): Buffer {
  checkSecretData(hsmSecret);
  const derived = hkdf32(hsmSecret, Buffer.alloc(0), Buffer.from('derived secrets', 'utf8'));
  try {
    return hkdf32(derived, Buffer.alloc(0), info);
  } finally {
    derived.fill(0);
  }
}

/** The node's id (66 lowercase hex characters, compressed public key) for the secret parseHsmSecret returned. */
export function nodeIdFromHsmSecret(hsmSecret: Buffer): string {
  checkSecretData(hsmSecret);
  const ikm = hsmSecret.subarray(0, PLAIN_LEN);
  const info = Buffer.from('nodeid', 'utf8');
  const salt = Buffer.alloc(4);
  // A candidate is invalid with probability ~2^-128, so this never loops in practice; bound it anyway.
  for (let counter = 0; counter < 1024; counter++) {
    salt.writeUInt32LE(counter);
    const priv = hkdf32(ikm, salt, info);
    try {
      const ecdh = crypto.createECDH('secp256k1');
      ecdh.setPrivateKey(priv);
      return ecdh.getPublicKey('hex', 'compressed');
    } catch {
      // Zero or not below the curve order: lightningd tries the next salt.
    } finally {
      priv.fill(0);
    }
  }
  throw new Error('could not derive a valid node key');
}
