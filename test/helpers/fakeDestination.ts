// A destination whose answers the test decides: each store() waits until the test settles it
// (hold it, make it durable, fail it), so the durability policy and the plugin can be driven
// through every order of events in-process, in milliseconds. It implements the Destination
// interface (`implements`: the compiler checks it), so it cannot drift from what real destinations offer.
import {
  DestinationFailedError,
  type Destination,
  type DestinationKind,
  type DestinationState,
  type DestinationStatus,
  type StoredCall,
} from '../../src/destinations/destination.js';

interface Held {
  readonly call: StoredCall;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

export class FakeDestination implements Destination {
  /** Calls handed to it whose answer the test has not given yet, oldest first. */
  readonly held: Held[] = [];
  /** Every call handed to it, in order. */
  readonly stored: StoredCall[] = [];
  readonly packs: string[] = [];
  readonly pruned: { keepFrom: number; dead: readonly string[] }[] = [];
  /** When set, store() answers at once: durable (true) or failed for good (an Error). */
  answer: true | Error | null = null;
  state: DestinationState = 'ok';
  closed = false;
  private durableSeq = 0n;

  constructor(
    readonly name: string,
    readonly kind: DestinationKind = 'server',
  ) {}

  store(call: StoredCall): Promise<void> {
    this.stored.push(call);
    if (this.answer === true) return this.durable(call);
    if (this.answer instanceof Error) return Promise.reject(this.answer);
    return new Promise((resolve, reject) => this.held.push({ call, resolve: () => void this.durable(call).then(resolve), reject }));
  }

  storePack(name: string): Promise<void> {
    this.packs.push(name);
    return Promise.resolve();
  }

  prune(keepFromGeneration: number, deadPacks: readonly string[]): Promise<void> {
    this.pruned.push({ keepFrom: keepFromGeneration, dead: deadPacks });
    return Promise.resolve();
  }

  /** Makes the oldest held call durable. */
  confirmNext(): void {
    const h = this.held.shift();
    if (!h) throw new Error(`${this.name} holds no call`);
    h.resolve();
  }

  /** Fails the oldest held call for good (DestinationFailedError, as real destinations do). */
  failNext(message = 'gone for good'): void {
    const h = this.held.shift();
    if (!h) throw new Error(`${this.name} holds no call`);
    this.state = 'failed';
    h.reject(new DestinationFailedError(this.name, `${this.name}: ${message}`));
  }

  status(): DestinationStatus {
    const last = this.stored.at(-1)?.records.at(-1)?.seq ?? 0n;
    return {
      name: this.name,
      kind: this.kind,
      state: this.state,
      durableSeq: this.durableSeq.toString(),
      lagRecords: Number(last - this.durableSeq),
      lastError: this.state === 'failed' ? 'gone for good' : null,
      lastDurableAt: null,
    };
  }

  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }

  private durable(call: StoredCall): Promise<void> {
    const last = call.records.at(-1)?.seq;
    if (last !== undefined && last > this.durableSeq) this.durableSeq = last;
    return Promise.resolve();
  }
}

/** A call as the journal would hand it on (one Writes record with seq `seq`). */
export function fakeCall(dataVersion: number, seq: bigint): StoredCall {
  const bytes = Buffer.alloc(64);
  return {
    dataVersion,
    writes: [`UPDATE vars SET intval = intval + 1 WHERE name = 'data_version' AND intval = ${dataVersion - 1}`],
    records: [{ seq, generation: 1, bytes, hash: bytes.subarray(0, 32) }],
    snapshot: false,
    supersedes: 0n,
    packs: [],
  };
}
