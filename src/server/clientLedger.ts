// Who may use the server and how much: the allow-list of client public keys (or open registration),
// and each client's byte quota and vault count. Usage is the store's current sizes (records and
// page packs) plus what is
// pending (appends accepted but not yet durable, vaults being created), so concurrent sessions of
// one client can never together exceed its quota.
import type { ServerStore } from './storage/store.js';

export const DEFAULT_QUOTA_BYTES = 10 * 1024 ** 3;
export const DEFAULT_MAX_VAULTS = 16;

export interface LedgerOptions {
  /** Client public keys (66 hex digits) admitted, or 'open' to admit every key. */
  readonly allow: readonly string[] | 'open';
  readonly quotaBytes: number;
  readonly maxVaults: number;
}

interface Usage {
  /** Bytes held in the store (as last read, plus appends made durable since). */
  storedBytes: number;
  vaults: number;
  pendingBytes: number;
  pendingVaults: number;
}

export type Verdict = { readonly ok: true } | { readonly ok: false; readonly reason: string };

const OK: Verdict = { ok: true };

export class ClientLedger {
  private readonly allowed: ReadonlySet<string> | null;
  private readonly usage = new Map<string, Usage>();

  constructor(
    private readonly store: Pick<ServerStore, 'listVaults'>,
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

  /**
   * Reads the client's usage from the store, unless something of it is pending (then the cached
   * figures, which count it, are the right ones). Call before asking about a client.
   */
  async refresh(client: string): Promise<void> {
    const cur = this.usage.get(client);
    if (cur && (cur.pendingBytes > 0 || cur.pendingVaults > 0)) return;
    const vaults = await this.store.listVaults(client);
    const now = this.usage.get(client);
    if (now && (now.pendingBytes > 0 || now.pendingVaults > 0)) return;
    const storedBytes = vaults.reduce((sum, v) => sum + v.bytes + v.packBytes, 0);
    this.usage.set(client, { storedBytes, vaults: vaults.length, pendingBytes: 0, pendingVaults: 0 });
  }

  private of(client: string): Usage {
    let u = this.usage.get(client);
    if (!u) {
      u = { storedBytes: 0, vaults: 0, pendingBytes: 0, pendingVaults: 0 };
      this.usage.set(client, u);
    }
    return u;
  }

  /** May the client create one more vault? If so, it is counted as pending until settleVault. */
  reserveVault(client: string): Verdict {
    const u = this.of(client);
    if (u.vaults + u.pendingVaults >= this.options.maxVaults) {
      return { ok: false, reason: `this client already has ${u.vaults} vault(s), the most this server allows per client is ${this.options.maxVaults}` };
    }
    u.pendingVaults++;
    return OK;
  }

  settleVault(client: string, created: boolean): void {
    const u = this.of(client);
    u.pendingVaults = Math.max(0, u.pendingVaults - 1);
    if (created) u.vaults++;
  }

  /** May the client store `bytes` more (records or a pack)? If so, they are counted as pending until settleAppend. */
  reserveAppend(client: string, bytes: number): Verdict {
    const u = this.of(client);
    const used = u.storedBytes + u.pendingBytes;
    if (used + bytes > this.options.quotaBytes) {
      return { ok: false, reason: `this client's quota of ${this.options.quotaBytes} bytes would be exceeded (${used} used, ${bytes} more asked)` };
    }
    u.pendingBytes += bytes;
    return OK;
  }

  settleAppend(client: string, bytes: number, stored: boolean): void {
    const u = this.of(client);
    u.pendingBytes = Math.max(0, u.pendingBytes - bytes);
    if (stored) u.storedBytes += bytes;
  }

  /** Bytes the client now stores besides what it reserved (a pack found absent after all). */
  added(client: string, bytes: number): void {
    this.of(client).storedBytes += bytes;
  }

  /** Bytes the client no longer stores (packs deleted, generations pruned). */
  released(client: string, bytes: number): void {
    const u = this.of(client);
    u.storedBytes = Math.max(0, u.storedBytes - bytes);
  }

  /** For status: the client's usage as the ledger counts it. */
  usageOf(client: string): { storedBytes: number; pendingBytes: number; vaults: number } | null {
    const u = this.usage.get(client);
    return u ? { storedBytes: u.storedBytes, pendingBytes: u.pendingBytes, vaults: u.vaults } : null;
  }
}
