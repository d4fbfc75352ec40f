// Why a beacon (or a shard of one) that came back from a peer is refused, by name, so that the
// caller can say which peer handed back what.
export type BeaconRefusal =
  'truncated' | 'oversize' | 'not-a-beacon' | 'unknown-version' | 'foreign' | 'tampered' | 'replayed' | 'malformed' | 'too-few-shards' | 'no-beacon';

export class BeaconError extends Error {
  constructor(
    readonly reason: BeaconRefusal,
    message: string,
  ) {
    super(`${reason}: ${message}`);
  }
}
