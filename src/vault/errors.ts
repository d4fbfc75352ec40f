// Errors a vault reports to the operator. Each says what happened, where, and what to do next;
// none ever carries key material.

export class VaultError extends Error {
  override name = 'VaultError';
}

/** The key does not open this vault (another node's hsm_secret, or the wrong key file). */
export class WrongKeyError extends VaultError {
  override name = 'WrongKeyError';
}

/** Where a record lives, for messages that name it precisely. */
export interface RecordLocation {
  readonly segment: string;
  readonly offset: number;
  /** The sequence number the reader expected at this place. */
  readonly expectedSeq: bigint;
}

/** A record that was acknowledged (not a torn tail) is damaged, missing, or out of place. */
export class CorruptRecordError extends VaultError {
  override name = 'CorruptRecordError';
  constructor(
    readonly location: RecordLocation,
    readonly reason: string,
  ) {
    super(
      `record ${location.expectedSeq} (${location.segment} at byte ${location.offset}): ${reason}. ` +
        'Data from this record on cannot be trusted; restore to an earlier version with --version, ' +
        'or restore from another destination.',
    );
  }
}
