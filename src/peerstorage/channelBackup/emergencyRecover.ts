// Core Lightning's encrypted channel backup: the bytes of `emergency.recover`, which its
// `chanbackup` plugin also sends to peers as the peer_storage blob (plugins/chanbackup.c). It is
// one libsodium secretstream message (tag 0, no associated data) holding the
// static_chan_backup_with_tlvs plaintext, under the key lightningd's `makesecret` gives for the
// ASCII string "scb secret" (chanbackup's init: `makesecret hex=73636220736563726574`), which is
// hsmd's handle_derive_secret (hsmd/libhsmd.c): HKDF-SHA256(no salt, derived_secret, info), with
// derived_secret from hsm_secret as src/keys/hsmSecret.ts derives it. Opening checks the MAC, the
// format and Core Lightning's version rule; sealing writes the same format (for emergency.recover).
import { makesecret } from '../../keys/hsmSecret.js';
import { DecodeError } from '../../util/bytes.js';
import { openOneMessage, sealOneMessage, TAG_MESSAGE } from './secretstream.js';
import { SCB_VERSION, decodeStaticChanBackup, encodeStaticChanBackup, type StaticChanBackup } from './scbRecords.js';

/** The makesecret info Core Lightning's chanbackup uses for its key. */
export const SCB_SECRET_INFO = 'scb secret';
/** chanbackup's compatibility rule: versions agree on their even bits (mask 0x5555...). */
const VERSION_MASK = 0x5555555555555555n;

/** The channel backup key, equal to `lightning-cli makesecret hex=73636220736563726574`. */
export function channelBackupKey(hsmSecretData: Buffer): Buffer {
  return makesecret(hsmSecretData, Buffer.from(SCB_SECRET_INFO, 'ascii'));
}

/** Decrypts and decodes a Core Lightning channel backup; throws SecretstreamError or DecodeError. */
export function openChannelBackup(key: Buffer, blob: Buffer): StaticChanBackup {
  const { plaintext, tag } = openOneMessage(key, blob);
  if (tag !== TAG_MESSAGE) throw new DecodeError(`the channel backup's secretstream tag is ${tag}, not 0 as Core Lightning writes`);
  const backup = decodeStaticChanBackup(plaintext);
  if ((backup.version & VERSION_MASK) !== (SCB_VERSION & VERSION_MASK)) {
    throw new DecodeError(`the channel backup has version ${backup.version}, incompatible with version ${SCB_VERSION} that Core Lightning reads`);
  }
  return backup;
}

/** Encrypts `staticbackup` records as Core Lightning writes emergency.recover. */
export function sealChannelBackup(key: Buffer, records: readonly Buffer[], timestamp: number, header?: Buffer): Buffer {
  return sealOneMessage(key, encodeStaticChanBackup(timestamp, records), header);
}
