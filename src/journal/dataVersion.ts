// data_version arithmetic and the version-bump statement that ends every real transaction.
// lightningd's data_version is a u32 that wraps; comparisons are made modulo 2^32.

const BUMP = /^UPDATE vars SET intval = intval \+ 1 WHERE name = 'data_version' AND intval = (\d+);?\s*$/;

export const U32 = 0x1_0000_0000;

/** The version a call's write set bumps *from* (its last statement), or null when it has no bump. */
export function bumpedFrom(writes: readonly string[]): number | null {
  const last = writes[writes.length - 1];
  if (last === undefined || last.length > 200) return null;
  const m = BUMP.exec(last);
  if (!m) return null;
  const from = Number(m[1]);
  return Number.isSafeInteger(from) && from < U32 ? from : null;
}

export function nextVersion(v: number): number {
  return (v + 1) % U32;
}

/**
 * Signed distance from `a` to `b` on the u32 circle, in (-2^31, 2^31]: positive when b is ahead of a.
 */
export function versionDistance(a: number, b: number): number {
  const d = (((b - a) % U32) + U32) % U32;
  return d > U32 / 2 ? d - U32 : d;
}

export function isU32(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v < U32;
}
