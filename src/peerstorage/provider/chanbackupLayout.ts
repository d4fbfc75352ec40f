// Where Core Lightning's chanbackup plugin keeps peer storage in lightningd's datastore (read
// from plugins/chanbackup.c and checked against the recorded `listdatastore` of v26.06.6):
//   ["chanbackup", "peers", <peer node id, 66 lowercase hex>]  the peer's blob exactly as it sent it
//       in `peer_storage`; "" (generation 0) is the empty slot made when a channel with the peer
//       reaches CHANNELD_NORMAL; blobs are stored only for peers that have a slot.
//   ["chanbackup", "latestscb"]  the decrypted static_chan_backup plaintext of the newest of our
//       own blobs a peer handed back (`restorefrompeer` reads it).
// lnbackup's provider keeps blobs under the same keys, so switching between chanbackup and
// lnbackup keeps every peer's backup, and the blobs are in the node's database, which lnbackup
// itself backs up.
export const CHANBACKUP_PEERS_KEY: readonly string[] = ['chanbackup', 'peers'];
export const CHANBACKUP_LATEST_SCB_KEY: readonly string[] = ['chanbackup', 'latestscb'];

export function peerSlotKey(peerId: string): string[] {
  if (!/^0[23][0-9a-f]{64}$/.test(peerId)) throw new RangeError(`${JSON.stringify(peerId)} is not a node id (66 lowercase hex)`);
  return [...CHANBACKUP_PEERS_KEY, peerId];
}

/** The peer of a datastore key under ["chanbackup","peers"], or null for any other key. */
export function peerOfSlotKey(key: readonly string[]): string | null {
  if (key.length !== 3 || key[0] !== CHANBACKUP_PEERS_KEY[0] || key[1] !== CHANBACKUP_PEERS_KEY[1]) return null;
  return /^0[23][0-9a-f]{64}$/.test(key[2]) ? key[2] : null;
}
