// Who may use the server and how much: the allow-list of client public keys (or open registration),
// and each client's byte quota and vault count. A client's usage is what the store holds for it
// now (records and page packs, ServerStore.usage: the store's own figures, the ones it rebuilds
// from disk at start) plus what is reserved: appends accepted and not yet durable, page packs being
// received or written (their whole size, from their first piece), vaults being created. A
// reservation is checked against the quota when it is made and given back when the bytes land (then
// the store counts them) or do not, so no ordering of appends, pack uploads, deletes and prunes, on
// any number of connections of one key, can hold more than the quota.
import type { ServerStore } from './storage/store.js';

export const DEFAULT_QUOTA_BYTES = 10 * 1024 ** 3;
export const DEFAULT_MAX_VAULTS = 16;

export interface LedgerOptions {
  /** Client public keys (66 hex digits) admitted, or 'open' to admit every key. */
  readonly allow: readonly string[] | 'open';
  readonly quotaBytes: number;
  readonly maxVaults: number;
}

interface Reserved {
  bytes: number;
  vaults: number;
}

export type Verdict = { readonly ok: true } | { readonly ok: false; readonly reason: string };

const OK: Verdict = { ok: true };

export class ClientLedger {
  private allowed: ReadonlySet<string> | null;
  /** Reservations per client; a client with none has no entry. */
  private readonly reserved = new Map<string, Reserved>();

  constructor(
    private readonly store: Pick<ServerStore, 'usage'>,
    readonly options: LedgerOptions,
  ) {
    this.allowed = options.allow === 'open' ? null : new Set(options.allow.map((k) => k.toLowerCase()));
  }

  get open(): boolean {
    return this.allowed === null;
  }

  get allowListSize(): number {
    return this.allowed?.size ?? 0;
  }

  isAllowed(client: string): boolean {
    return this.allowed === null || this.allowed.has(client);
  }

  /** Replaces the allow-list (the allow file changed); new connections are judged by it. No effect on an open server. */
  setAllowList(keys: readonly string[]): void {
    if (this.allowed !== null) this.allowed = new Set(keys.map((k) => k.toLowerCase()));
  }

  private of(client: string): Reserved {
    let r = this.reserved.get(client);
    if (!r) this.reserved.set(client, (r = { bytes: 0, vaults: 0 }));
    return r;
  }

  private forgetIfEmpty(client: string, r: Reserved): void {
    if (r.bytes <= 0 && r.vaults <= 0) this.reserved.delete(client);
  }

  /** May the client create one more vault? If so, it is reserved until settleVault. */
  reserveVault(client: string): Verdict {
    const held = this.store.usage(client).vaults;
    const r = this.of(client);
    if (held + r.vaults >= this.options.maxVaults) {
      this.forgetIfEmpty(client, r);
      return { ok: false, reason: `this client already has ${held} vault(s), the most this server allows per client is ${this.options.maxVaults}` };
    }
    r.vaults++;
    return OK;
  }

  /** The vault creation is over (created or not): the store counts it now, if it was. */
  settleVault(client: string): void {
    const r = this.of(client);
    r.vaults = Math.max(0, r.vaults - 1);
    this.forgetIfEmpty(client, r);
  }

  /** May the client store `bytes` more (records or a pack)? If so, they are reserved until release. */
  reserveBytes(client: string, bytes: number): Verdict {
    const stored = this.store.usage(client).bytes;
    const r = this.of(client);
    const used = stored + r.bytes;
    if (used + bytes > this.options.quotaBytes) {
      this.forgetIfEmpty(client, r);
      return { ok: false, reason: `this client's quota of ${this.options.quotaBytes} bytes would be exceeded (${used} used or reserved, ${bytes} more asked)` };
    }
    r.bytes += bytes;
    return OK;
  }

  /** A reservation is over: its bytes landed (the store counts them now) or did not. */
  releaseBytes(client: string, bytes: number): void {
    const r = this.of(client);
    r.bytes = Math.max(0, r.bytes - bytes);
    this.forgetIfEmpty(client, r);
  }

  /** The client's usage: what the store holds for it, and what is reserved besides. */
  usageOf(client: string): { storedBytes: number; reservedBytes: number; vaults: number } {
    const u = this.store.usage(client);
    const r = this.reserved.get(client);
    return { storedBytes: u.bytes, reservedBytes: r?.bytes ?? 0, vaults: u.vaults };
  }
}
