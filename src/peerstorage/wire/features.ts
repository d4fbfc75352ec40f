// BOLT #9 feature bits as carried in `init` (BOLT #1): big-endian bit fields, bit 0 the lowest bit
// of the last byte; an even bit means the sender requires the feature, the odd one next to it that
// it supports it ("it's OK to be odd"). Names are BOLT #9's; the bits a Core Lightning node
// requires come from its recorded `init` (testdata/peer-storage/, docs/PEER-STORAGE.md).
import { DecodeError } from '../../util/bytes.js';

/** BOLT #1 / #9 `option_provide_storage`: the node stores its peers' `peer_storage` blobs. */
export const OPTION_PROVIDE_STORAGE = 42;

/**
 * The even bits Core Lightning v26.06.6 sets in its `init` (features 800898880a8a59a1): it
 * requires every peer to understand them. They concern channels and payments, which a peer that
 * only exchanges `init`, pings and peer storage never uses, so understanding them is accepting
 * them: option_data_loss_protect 0, var_onion_optin 8, option_static_remotekey 12,
 * payment_secret 14, option_channel_type 44.
 */
export const CORE_LIGHTNING_REQUIRED_BITS: readonly number[] = [0, 8, 12, 14, 44];

/** The names BOLT #9 gives each pair (the even bit of the pair is the key). */
const NAMES: ReadonlyMap<number, string> = new Map([
  [0, 'option_data_loss_protect'],
  [4, 'option_upfront_shutdown_script'],
  [6, 'gossip_queries'],
  [8, 'var_onion_optin'],
  [10, 'gossip_queries_ex'],
  [12, 'option_static_remotekey'],
  [14, 'payment_secret'],
  [16, 'basic_mpp'],
  [18, 'option_support_large_channel'],
  [20, 'option_anchor_outputs'],
  [22, 'option_anchors'],
  [24, 'option_route_blinding'],
  [26, 'option_shutdown_anysegwit'],
  [28, 'option_dual_fund'],
  [34, 'option_quiesce'],
  [38, 'option_onion_messages'],
  [OPTION_PROVIDE_STORAGE, 'option_provide_storage'],
  [44, 'option_channel_type'],
  [46, 'option_scid_alias'],
  [48, 'option_payment_metadata'],
  [50, 'option_zeroconf'],
  [60, 'option_simple_close'],
  [62, 'option_splice'],
]);

/** The name of the feature a bit belongs to, with whether the bit requires or offers it. */
export function featureName(bit: number): string {
  const name = NAMES.get(bit & ~1) ?? `unknown feature ${bit & ~1}/${bit | 1}`;
  return `${name} (bit ${bit}, ${bit % 2 === 0 ? 'required' : 'optional'})`;
}

/** The bits set in a feature field, lowest first. */
export function setBits(field: Buffer): number[] {
  const bits: number[] = [];
  for (let byte = field.length - 1, base = 0; byte >= 0; byte--, base += 8) {
    for (let i = 0; i < 8; i++) if (field[byte] & (1 << i)) bits.push(base + i);
  }
  return bits;
}

/** The shortest field with exactly these bits set. */
export function featureField(bits: readonly number[]): Buffer {
  if (bits.some((b) => !Number.isInteger(b) || b < 0 || b > 0xffff * 8 - 1)) throw new RangeError('a feature bit is out of range');
  const length = bits.length === 0 ? 0 : Math.floor(Math.max(...bits) / 8) + 1;
  const field = Buffer.alloc(length);
  for (const b of bits) field[length - 1 - Math.floor(b / 8)] |= 1 << (b % 8);
  return field;
}

/** Whether the field offers a feature (either bit of its pair), as BOLT #9's `feature_offered`. */
export function offers(field: Buffer, feature: number): boolean {
  const bits = setBits(field);
  return bits.includes(feature & ~1) || bits.includes(feature | 1);
}

/** BOLT #1: `features` and the older `globalfeatures` are one set, their union. */
export function unionOf(a: Buffer, b: Buffer): Buffer {
  return featureField([...new Set([...setBits(a), ...setBits(b)])]);
}

/** The even bits set: the features the sender requires. */
export function requiredBits(field: Buffer): number[] {
  return setBits(field).filter((b) => b % 2 === 0);
}

/**
 * BOLT #1: "upon receiving unknown even feature bits that are non-zero: MUST close the
 * connection". Throws naming the first required feature not in `understood`.
 */
export function checkRequired(field: Buffer, understood: readonly number[]): void {
  for (const bit of requiredBits(field)) {
    if (!understood.includes(bit)) throw new DecodeError(`the peer requires ${featureName(bit)}, which this peer does not support`);
  }
}
