// The page packs and retention of a remote destination (remote.ts). At every agreement with the
// server (before any record) the local vault's packs the server lacks are uploaded (syncWith);
// later packs are queued as storePack() or a call hands them, and uploaded one by one by a worker
// over the agreed connection, retried across reconnects. Records that refer to a pack not yet
// durable there are held back behind a gate until it is. Retention (prune, then the dead packs)
// is sent in the background, once the server holds the generation it keeps from.
import fs from 'node:fs';
import { ErrorCode } from '../protocol/messages.js';
import { listPacks as listLocalPacks } from '../vault/packFiles.js';
import { DestinationFailedError, type PackToStore } from './destination.js';
import type { NoticeLevel, RemoteTiming } from './remote.js';
import { ServerError } from './serverClient.js';
import type { ServerConnection } from './serverConnection.js';

/** What the uploader needs of its remote destination. */
export interface PackHost {
  readonly name: string;
  readonly vaultId: Buffer;
  readonly vaultDir: string;
  readonly timing: RemoteTiming;
  /** The destination stopped or failed: no more work. */
  done(): boolean;
  /** The server holds every record handed to the destination. */
  caughtUp(): boolean;
  note(kind: string, level: NoticeLevel, message: string): void;
  fail(message: string): void;
  /** A gate opened: send what the window allows. */
  pump(): void;
  readonly onPackDurable: ((name: string, bytes: number, uploaded: boolean) => void) | undefined;
}

interface PackJob {
  readonly name: string;
  readonly bytes: Buffer;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/** Records from `seq` on refer to packs not yet durable on the server: they are not sent until then. */
interface PackGate {
  readonly seq: bigint;
  readonly pending: Set<string>;
}

/** Retention asked for and not yet done at the server (later asks merge into it). */
interface PendingPrune {
  keep: number;
  readonly dead: Set<string>;
  readonly waiters: (() => void)[];
  version: number;
}

export class PackUploader {
  /** Packs to upload, oldest first (the head is being uploaded). */
  private readonly jobs: PackJob[] = [];
  /** The promise of each pack not yet durable on the server, by name. */
  private readonly pending = new Map<string, Promise<void>>();
  /** Packs the server said are durable, in this run (names only). */
  private readonly held = new Set<string>();
  private gates: PackGate[] = [];
  private pendingPrune: PendingPrune | null = null;
  private worker: Promise<void> | null = null;
  private backoffMs: number;
  private connectedWaiters: ((client: ServerConnection | null) => void)[] = [];
  private workerWake: (() => void) | null = null;
  /** The local vault's packs were checked against the server since the last start. */
  private synced = false;
  /** The connection on which the server agreed on the tail, while it is open. */
  private agreed: ServerConnection | null = null;

  constructor(private readonly host: PackHost) {
    this.backoffMs = host.timing.backoffMinMs;
  }

  /** Uploads still queued. */
  get busy(): boolean {
    return this.jobs.length > 0;
  }

  /** Settles once every pack queued now is durable there (or failed). */
  allStored(): Promise<unknown> {
    return Promise.all([...this.pending.values()].map((p) => p.catch(() => undefined)));
  }

  /** The first record held back by a pack not yet durable there, or null. */
  get gatedFrom(): bigint | null {
    return this.gates.length > 0 ? this.gates[0].seq : null;
  }

  /** A new start: the local vault's packs are checked against the server again. */
  resync(): void {
    this.synced = false;
  }

  /** The server lost records it had acknowledged: it may have lost packs too. */
  serverLost(): void {
    this.synced = false;
    this.held.clear();
  }

  /** Queues a call's packs; records from `firstSeq` on wait for those not yet durable there. */
  gate(firstSeq: bigint, packs: readonly PackToStore[]): void {
    const pending = new Set<string>();
    for (const p of packs) {
      void this.store(p.name, p.bytes).catch(() => undefined);
      if (this.pending.has(p.name)) pending.add(p.name);
    }
    if (pending.size > 0) this.gates.push({ seq: firstSeq, pending });
  }

  /** Uploads a pack; resolves once the server said it is durable (see RemoteDestination.storePack). */
  store(name: string, bytes: Buffer): Promise<void> {
    const known = this.pending.get(name);
    if (known) return known;
    if (this.held.has(name)) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => this.jobs.push({ name, bytes, resolve, reject }));
    this.pending.set(name, done);
    done.then(
      () => this.settled(name, null),
      (err: unknown) => this.settled(name, err as Error),
    );
    this.kick();
    return done;
  }

  /** Asks for retention at the server (see RemoteDestination.prune); resolves once done or given up. */
  prune(keepFromGeneration: number, deadPacks: readonly string[]): Promise<void> {
    return new Promise<void>((resolve) => {
      const p = this.pendingPrune;
      if (p === null) {
        this.pendingPrune = { keep: keepFromGeneration, dead: new Set(deadPacks), waiters: [resolve], version: 0 };
      } else {
        p.keep = Math.max(p.keep, keepFromGeneration);
        for (const d of deadPacks) p.dead.add(d);
        p.waiters.push(resolve);
        p.version++;
      }
      this.kick();
    });
  }

  /**
   * Before any record of a new agreement: uploads the local vault's packs the server lacks
   * (records may refer to any of them), once per start. False when the destination failed (the
   * server holds a pack of that name with other bytes).
   */
  async syncWith(client: ServerConnection): Promise<boolean> {
    if (this.synced) return true;
    const local = listLocalPacks(this.host.vaultDir);
    if (local.length > 0) {
      const held = new Map((await client.listPacks(this.host.vaultId)).map((p) => [p.name, p.bytes]));
      for (const p of local) {
        const size = held.get(p.name);
        if (size === p.bytes) {
          this.held.add(p.name);
          this.host.onPackDurable?.(p.name, p.bytes, false);
          continue;
        }
        let bytes: Buffer;
        try {
          bytes = fs.readFileSync(p.path);
        } catch (err) {
          // Removed meanwhile by the node's own retention: no kept record refers to it.
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
          throw err;
        }
        try {
          await client.putPack(this.host.vaultId, p.name, bytes);
        } catch (err) {
          if (err instanceof ServerError && err.code === ErrorCode.PackConflict) {
            this.host.fail(`${this.host.name} holds page pack ${p.name} with other contents than the local vault: ${err.message}. It is not used`);
            return false;
          }
          throw err;
        }
        this.held.add(p.name);
        this.host.onPackDurable?.(p.name, bytes.length, true);
      }
    }
    this.synced = true;
    return true;
  }

  /** The server agreed on the tail over `client`: the worker may use it. */
  connected(client: ServerConnection): void {
    this.agreed = client;
    const waiting = this.connectedWaiters;
    this.connectedWaiters = [];
    for (const w of waiting) w(client);
  }

  /** That connection ended. */
  disconnected(client: ServerConnection): void {
    if (this.agreed === client) this.agreed = null;
  }

  /** Rejects every pack not yet stored, lets go of the pending retention and of the worker. */
  settle(err: Error): void {
    for (const job of this.jobs.splice(0)) job.reject(err);
    const p = this.pendingPrune;
    this.pendingPrune = null;
    for (const w of p?.waiters ?? []) w();
    const waiting = this.connectedWaiters;
    this.connectedWaiters = [];
    for (const w of waiting) w(null);
    this.workerWake?.();
  }

  private kick(): void {
    this.workerWake?.();
    this.worker ??= this.run().finally(() => {
      this.worker = null;
      if ((this.jobs.length > 0 || this.pendingPrune !== null) && !this.host.done()) this.kick();
    });
  }

  /** Uploads the queued packs one by one, then the pending retention, over the agreed connection. */
  private async run(): Promise<void> {
    const { host } = this;
    while (!host.done()) {
      const job = this.jobs[0];
      const prune = this.pendingPrune;
      if (job === undefined && prune === null) return;
      const client = await this.agreedClient();
      if (client === null) return;
      try {
        if (job !== undefined) {
          await client.putPack(host.vaultId, job.name, job.bytes);
          if (this.jobs[0] === job) this.jobs.shift();
          this.held.add(job.name);
          this.backoffMs = host.timing.backoffMinMs;
          host.onPackDurable?.(job.name, job.bytes.length, true);
          job.resolve();
          continue;
        }
        if (prune !== null && !(await this.pruneAt(client, prune))) {
          // The server lacks the newest generation yet: try again as it catches up.
          await this.pause(host.caughtUp() ? host.timing.refusedRetryMs : host.timing.backoffMaxMs);
        }
      } catch (err) {
        if (job !== undefined && err instanceof ServerError && (err.code === ErrorCode.QuotaExceeded || err.code === ErrorCode.PackConflict)) {
          if (this.jobs[0] === job) this.jobs.shift();
          job.reject(new DestinationFailedError(host.name, `${host.name} cannot take page pack ${job.name}: ${err.message}`));
          continue;
        }
        const what = job !== undefined ? `page pack ${job.name}` : 'retention';
        host.note('packs', 'unusual', `${host.name}: ${what} not done yet (${(err as Error).message}); retrying`);
        const delay = err instanceof ServerError && err.code === ErrorCode.BadMessage ? host.timing.refusedRetryMs : this.backoffMs;
        this.backoffMs = Math.min(this.backoffMs * 2, host.timing.backoffMaxMs);
        await this.pause(delay);
      }
    }
  }

  /** Prune, then delete the dead packs: true when done (or superseded by a later ask, which goes next). */
  private async pruneAt(client: ServerConnection, p: PendingPrune): Promise<boolean> {
    const version = p.version;
    const keep = p.keep;
    const state = await client.prune(this.host.vaultId, keep);
    if (state.lastGeneration < keep) return false;
    const dead = [...p.dead];
    if (dead.length > 0) await client.deletePacks(this.host.vaultId, dead);
    for (const d of dead) this.held.delete(d);
    if (p.version === version) {
      this.pendingPrune = null;
      for (const w of p.waiters) w();
    }
    return true;
  }

  /** The connection on which the server agreed on the tail; null once the destination stopped or failed. */
  private agreedClient(): Promise<ServerConnection | null> {
    if (this.host.done()) return Promise.resolve(null);
    if (this.agreed !== null && this.agreed.isOpen) return Promise.resolve(this.agreed);
    return new Promise((resolve) => this.connectedWaiters.push(resolve));
  }

  /** Waits `ms`, or less when woken (new work, close, failure). */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.workerWake = () => {
        this.workerWake = null;
        done();
      };
    });
  }

  /** A pack is durable on the server (err null) or will never be: records waiting for it go on, or the destination fails. */
  private settled(name: string, err: Error | null): void {
    this.pending.delete(name);
    let blocked = false;
    for (const g of this.gates) if (g.pending.delete(name) && err !== null) blocked = true;
    this.gates = this.gates.filter((g) => g.pending.size > 0);
    if (blocked && !this.host.done()) {
      this.host.fail(`records from ${this.host.name}'s next one on refer to page pack ${name}, which it cannot take (${err!.message})`);
      return;
    }
    this.host.pump();
  }
}
