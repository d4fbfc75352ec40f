// The keys of the beacon, derived from lnbackup's root key (itself `makesecret string=lnbackup`
// of the node's hsm_secret, so the seed alone gives them back): HKDF-SHA256 with no salt and the
// info strings below. The fingerprint, in clear in every beacon, says which node's key sealed it
// (so a foreign beacon is told from a tampered one); the peer holding it knows the node anyway.
import crypto from 'node:crypto';

export const BEACON_KEY_INFO = 'lnbackup v1 peer-storage beacon';
export const BEACON_FINGERPRINT_INFO = 'lnbackup v1 peer-storage beacon fingerprint';
export const FINGERPRINT_BYTES = 16;

export interface BeaconKey {
  /** Seals beacons (XChaCha20-Poly1305). */
  readonly seal: Buffer;
  readonly fingerprint: Buffer;
}

export function beaconKeyFromRoot(root: Buffer): BeaconKey {
  if (root.length !== 32) throw new RangeError('the root key must be 32 bytes');
  const derive = (info: string, length: number) => Buffer.from(crypto.hkdfSync('sha256', root, Buffer.alloc(0), info, length));
  return { seal: derive(BEACON_KEY_INFO, 32), fingerprint: derive(BEACON_FINGERPRINT_INFO, FINGERPRINT_BYTES) };
}
