// The PostgreSQL server store (`--storage postgres://user@host:port/db`): vaults and their sealed
// records in two tables (prefixed lnbackup_), created at open if missing. Every connection runs
// with synchronous_commit=on, so a commit is durable when it returns; each group-commit round is
// one transaction holding every vault's appends. The vaults' tails are kept in memory (loaded at
// open) and re-read from the database after a failed round, whose commit may have happened even
// though its answer was lost. The pool reconnects by itself when the database comes back. Page
// packs are rows of a third table (one row a pack, written in one statement: all or nothing);
// retention deletes a vault's old generations' rows in one statement, between two rounds.
import pg from 'pg';
import { rawRecordHash } from '../../vault/rawRecords.js';
import { checkNewVault, checkPack, GroupCommit, GroupCommittedStore, KeyedLock, type VaultTail } from './groupCommit.js';
import {
  PackConflictError,
  StorageUnavailableError,
  type PackPiece,
  type PrunedVault,
  type ServerStore,
  type StoredPack,
  type StoreRecord,
  type StoredVault,
} from './store.js';

export type Notice = (message: string) => void;

/** Rows per INSERT statement (4 parameters a row; PostgreSQL allows 65535 parameters). */
const ROWS_PER_STATEMENT = 10_000;
/** Rows whose sizes a read looks at before fetching the records that fit. */
const READ_WINDOW = 10_000;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS lnbackup_vaults (
  vault_id text PRIMARY KEY,
  owner text NOT NULL,
  identity bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_write_at bigint
);
CREATE INDEX IF NOT EXISTS lnbackup_vaults_owner ON lnbackup_vaults (owner);
CREATE TABLE IF NOT EXISTS lnbackup_records (
  vault_id text NOT NULL REFERENCES lnbackup_vaults (vault_id),
  seq bigint NOT NULL,
  generation integer NOT NULL,
  bytes bytea NOT NULL,
  PRIMARY KEY (vault_id, seq)
);
CREATE TABLE IF NOT EXISTS lnbackup_packs (
  vault_id text NOT NULL REFERENCES lnbackup_vaults (vault_id),
  name text NOT NULL,
  size integer NOT NULL,
  bytes bytea NOT NULL,
  PRIMARY KEY (vault_id, name)
);
-- Sealed records and packs do not compress: store them out of line without trying (changed once);
-- uncompressed, a piece of a pack is read without the rest (substring).
DO $$ BEGIN
  IF (SELECT attstorage FROM pg_attribute WHERE attrelid = 'lnbackup_records'::regclass AND attname = 'bytes') <> 'e' THEN
    ALTER TABLE lnbackup_records ALTER COLUMN bytes SET STORAGE EXTERNAL;
  END IF;
  IF (SELECT attstorage FROM pg_attribute WHERE attrelid = 'lnbackup_packs'::regclass AND attname = 'bytes') <> 'e' THEN
    ALTER TABLE lnbackup_packs ALTER COLUMN bytes SET STORAGE EXTERNAL;
  END IF;
END $$;
`;

/** Bytes of packs per vault. */
const LOAD_PACK_BYTES = 'SELECT vault_id, sum(size)::bigint AS bytes FROM lnbackup_packs GROUP BY vault_id';

/** Vaults with their tails: all of them (ids null) or the ones named. */
const LOAD_VAULTS = `
SELECT v.vault_id, v.owner, v.identity, v.last_write_at,
       a.first_seq, a.last_seq, a.bytes, l.generation AS last_generation, l.bytes AS last_record
FROM lnbackup_vaults v
LEFT JOIN LATERAL (
  SELECT min(seq) AS first_seq, max(seq) AS last_seq, sum(octet_length(bytes))::bigint AS bytes
  FROM lnbackup_records r WHERE r.vault_id = v.vault_id
) a ON true
LEFT JOIN LATERAL (
  SELECT generation, bytes FROM lnbackup_records r WHERE r.vault_id = v.vault_id ORDER BY seq DESC LIMIT 1
) l ON true
WHERE $1::text[] IS NULL OR v.vault_id = ANY($1::text[])`;

interface VaultRow {
  vault_id: string;
  owner: string;
  identity: Buffer;
  last_write_at: string | null;
  first_seq: string | null;
  last_seq: string | null;
  bytes: string | null;
  last_generation: number | null;
  last_record: Buffer | null;
}

function tailOfRow(r: VaultRow): VaultTail {
  if (r.last_seq === null || r.last_record === null) {
    return { firstSeq: 0n, lastSeq: 0n, lastHash: null, lastGeneration: 0, bytes: 0, lastWriteAt: r.last_write_at === null ? null : Number(r.last_write_at) };
  }
  return {
    firstSeq: BigInt(r.first_seq ?? r.last_seq),
    lastSeq: BigInt(r.last_seq),
    lastHash: rawRecordHash(r.last_record),
    lastGeneration: r.last_generation ?? 0,
    bytes: Number(r.bytes ?? 0),
    lastWriteAt: r.last_write_at === null ? null : Number(r.last_write_at),
  };
}

/** The URL without its password (or any other secret parameter), for status output and messages. */
export function describePostgresUrl(url: string): string {
  try {
    const u = new URL(url);
    const user = u.username ? `${u.username}@` : '';
    return `${u.protocol}//${user}${u.host}${u.pathname}`;
  } catch {
    return 'postgres://(unparseable URL)';
  }
}

export class PostgresStore extends GroupCommittedStore implements ServerStore {
  readonly kind = 'postgres';
  protected readonly commits: GroupCommit;
  private closed = false;
  /** Pack writes and deletes of a vault, one at a time. */
  private readonly packLocks = new KeyedLock();

  private constructor(
    private readonly pool: pg.Pool,
    readonly location: string,
  ) {
    super();
    this.commits = new GroupCommit(
      {
        commitRound: (round) => this.commitRound(round),
        recover: (ids) => this.recover(ids),
        unavailable: (err) => this.unavailable(err),
      },
      { maxRoundRecords: ROWS_PER_STATEMENT },
    );
  }

  /** Connects, creates the tables if missing, and loads every vault's tail. */
  static async open(url: string, onNotice: Notice = () => {}): Promise<PostgresStore> {
    const location = describePostgresUrl(url);
    const pool = new pg.Pool({
      connectionString: url,
      max: 4,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: 10_000,
      // A round never waits forever on a database that went silent: it fails, and is retried.
      query_timeout: 60_000,
      keepAlive: true,
      // Every connection commits durably, whatever the server's default is.
      onConnect: async (client) => {
        await client.query('SET synchronous_commit TO on');
      },
    });
    // An idle connection that breaks (database restarted) is dropped by the pool; say so, don't crash.
    pool.on('error', (err) => onNotice(`PostgreSQL at ${location}: an idle connection was lost (${err.message}); it will reconnect`));
    const store = new PostgresStore(pool, location);
    try {
      await store.createSchema();
      const { rows } = await pool.query<VaultRow>(LOAD_VAULTS, [null]);
      for (const r of rows) store.commits.addVault({ vaultId: r.vault_id, owner: r.owner, identity: r.identity }, tailOfRow(r));
      const packs = await pool.query<{ vault_id: string; bytes: string }>(LOAD_PACK_BYTES);
      for (const r of packs.rows) store.commits.setPackBytes(r.vault_id, Number(r.bytes));
      return store;
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw store.unavailable(err, 'opening the store');
    }
  }

  async createVault(owner: string, vaultId: string, identity: Buffer): Promise<StoredVault> {
    if (this.closed) throw new Error('the store is closed');
    checkNewVault(owner, vaultId, identity);
    if (this.commits.hasVault(vaultId)) throw new Error(`vault ${vaultId} already exists`);
    try {
      await this.pool.query('INSERT INTO lnbackup_vaults (vault_id, owner, identity) VALUES ($1, $2, $3)', [vaultId, owner, identity]);
    } catch (err) {
      if ((err as { code?: string }).code !== '23505') throw this.unavailable(err, 'creating a vault');
      // Already there: fine if it is this very vault (a creation whose answer was lost).
      const { rows } = await this.pool.query<VaultRow>(LOAD_VAULTS, [[vaultId]]).catch((e: unknown) => {
        throw this.unavailable(e, 'creating a vault');
      });
      const r = rows[0];
      if (!r || r.owner !== owner || !r.identity.equals(identity)) throw new Error(`vault ${vaultId} already exists`);
      this.commits.addVault({ vaultId, owner, identity }, tailOfRow(r));
      return this.mustGet(vaultId);
    }
    this.commits.addVault({ vaultId, owner, identity }, { firstSeq: 0n, lastSeq: 0n, lastHash: null, lastGeneration: 0, bytes: 0, lastWriteAt: null });
    this.commits.setPackBytes(vaultId, 0);
    return this.mustGet(vaultId);
  }

  append(vaultId: string, records: readonly StoreRecord[]): Promise<void> {
    return this.commits.append(vaultId, records);
  }

  async readRecords(vaultId: string, fromSeq: bigint, maxBytes: number): Promise<StoreRecord[]> {
    const durable = this.commits.durableTail(vaultId);
    if (!durable) throw new Error(`no vault ${vaultId} on this server`);
    if (durable.lastSeq === 0n || fromSeq > durable.lastSeq) return [];
    const from = (fromSeq < 1n ? 1n : fromSeq).toString();
    const until = durable.lastSeq.toString();
    try {
      // First the sizes (no record bytes are fetched), then the records that fit in maxBytes.
      const sizes = await this.pool.query<{ seq: string; n: number }>(
        'SELECT seq, octet_length(bytes) AS n FROM lnbackup_records WHERE vault_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4',
        [vaultId, from, until, READ_WINDOW],
      );
      if (sizes.rows.length === 0) return [];
      let total = 0;
      let last = sizes.rows[0].seq;
      for (const [i, row] of sizes.rows.entries()) {
        if (i > 0 && total + row.n > maxBytes) break;
        total += row.n;
        last = row.seq;
        if (total >= maxBytes) break;
      }
      const { rows } = await this.pool.query<{ seq: string; generation: number; bytes: Buffer }>(
        'SELECT seq, generation, bytes FROM lnbackup_records WHERE vault_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq',
        [vaultId, from, last],
      );
      return rows.map((r) => ({ seq: BigInt(r.seq), generation: r.generation, bytes: r.bytes }));
    } catch (err) {
      throw this.unavailable(err, 'reading records');
    }
  }

  async putPack(vaultId: string, name: string, bytes: Buffer): Promise<boolean> {
    this.checkVault(vaultId);
    checkPack(name, bytes.length);
    return this.packLocks.run(vaultId, async () => {
      this.checkVault(vaultId);
      try {
        // One statement: committed (durable, synchronous_commit) whole, or not at all.
        const ins = await this.pool.query(
          'INSERT INTO lnbackup_packs (vault_id, name, size, bytes) VALUES ($1, $2, $3, $4) ON CONFLICT (vault_id, name) DO NOTHING',
          [vaultId, name, bytes.length, bytes],
        );
        if (ins.rowCount === 1) {
          this.commits.addPackBytes(vaultId, bytes.length);
          return true;
        }
        const { rows } = await this.pool.query<{ same: boolean }>(
          'SELECT size = $3 AND bytes = $4 AS same FROM lnbackup_packs WHERE vault_id = $1 AND name = $2',
          [vaultId, name, bytes.length, bytes],
        );
        if (rows[0]?.same === true) return false;
        if (rows.length === 0) throw new Error(`pack ${name} of vault ${vaultId} was neither stored nor found`);
      } catch (err) {
        throw this.unavailable(err, `storing pack ${name}; it was not acknowledged`);
      }
      throw new PackConflictError(`vault ${vaultId} already holds pack ${name} with other contents; packs never change`);
    });
  }

  async listPacks(vaultId: string): Promise<StoredPack[]> {
    this.checkVault(vaultId);
    try {
      const { rows } = await this.pool.query<{ name: string; size: number }>(
        'SELECT name, size FROM lnbackup_packs WHERE vault_id = $1 ORDER BY name COLLATE "C"',
        [vaultId],
      );
      return rows.map((r) => ({ name: r.name, bytes: r.size }));
    } catch (err) {
      throw this.unavailable(err, 'listing packs');
    }
  }

  async readPack(vaultId: string, name: string, offset: number, maxBytes: number): Promise<PackPiece | null> {
    this.checkVault(vaultId);
    try {
      const { rows } = await this.pool.query<{ size: number; part: Buffer }>(
        'SELECT size, substring(bytes FROM $3::integer FOR $4::integer) AS part FROM lnbackup_packs WHERE vault_id = $1 AND name = $2',
        [vaultId, name, Math.min(offset, 0x7ffffffe) + 1, Math.max(0, Math.min(maxBytes, 0x7fffffff))],
      );
      const r = rows[0];
      return r ? { totalBytes: r.size, bytes: r.part } : null;
    } catch (err) {
      throw this.unavailable(err, `reading pack ${name}`);
    }
  }

  async deletePacks(vaultId: string, names: readonly string[]): Promise<number> {
    this.checkVault(vaultId);
    if (names.length === 0) return 0;
    return this.packLocks.run(vaultId, async () => {
      try {
        const { rows } = await this.pool.query<{ size: number }>('DELETE FROM lnbackup_packs WHERE vault_id = $1 AND name = ANY($2::text[]) RETURNING size', [
          vaultId,
          [...new Set(names)],
        ]);
        const freed = rows.reduce((n, r) => n + r.size, 0);
        this.commits.addPackBytes(vaultId, -freed);
        return freed;
      } catch (err) {
        // The delete may have been committed even so: count again when possible.
        const again = await this.pool
          .query<{ bytes: string | null }>('SELECT sum(size)::bigint AS bytes FROM lnbackup_packs WHERE vault_id = $1', [vaultId])
          .catch(() => null);
        if (again) this.commits.setPackBytes(vaultId, Number(again.rows[0]?.bytes ?? 0));
        throw this.unavailable(err, 'removing packs');
      }
    });
  }

  async prune(vaultId: string, keepFromGeneration: number): Promise<PrunedVault> {
    this.checkVault(vaultId);
    let removedBytes = 0;
    await this.commits.exclusive(vaultId, async (durable) => {
      const limit = Math.min(keepFromGeneration, durable.lastGeneration);
      if (durable.lastSeq === 0n || limit <= 1) return durable;
      let row: { removed: string; first_seq: string | null } | undefined;
      try {
        // One statement, one transaction. The SELECTs see the rows as they were before the DELETE.
        const { rows } = await this.pool.query<{ removed: string; first_seq: string | null }>(
          `WITH d AS (DELETE FROM lnbackup_records WHERE vault_id = $1 AND generation < $2 RETURNING octet_length(bytes) AS n)
           SELECT (SELECT coalesce(sum(n), 0)::bigint FROM d) AS removed,
                  (SELECT min(seq) FROM lnbackup_records WHERE vault_id = $1 AND generation >= $2) AS first_seq`,
          [vaultId, limit],
        );
        row = rows[0];
      } catch (err) {
        throw this.unavailable(err, 'removing old generations');
      }
      if (!row || row.first_seq === null) throw new StorageUnavailableError(`vault ${vaultId} holds no record of generation ${limit} or later after the prune`);
      removedBytes = Number(row.removed);
      return { ...durable, firstSeq: BigInt(row.first_seq), bytes: durable.bytes - removedBytes };
    });
    return { ...this.mustGet(vaultId), removedBytes };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.commits.close();
    await this.pool.end();
  }

  private checkVault(vaultId: string): void {
    if (this.closed) throw new Error('the store is closed');
    if (!this.commits.hasVault(vaultId)) throw new Error(`no vault ${vaultId} on this server`);
  }

  private mustGet(vaultId: string): StoredVault {
    const v = this.commits.vault(vaultId);
    if (!v) throw new Error(`vault ${vaultId} was not registered`);
    return v;
  }

  private async createSchema(): Promise<void> {
    const client = await this.pool.connect();
    try {
      const { rows } = await client.query<{ synchronous_commit: string }>('SHOW synchronous_commit');
      if (rows[0]?.synchronous_commit !== 'on') throw new Error(`synchronous_commit is ${rows[0]?.synchronous_commit}, not on`);
      // Two servers starting at once must not race on CREATE TABLE IF NOT EXISTS.
      await client.query('BEGIN');
      await client.query("SELECT pg_advisory_xact_lock(hashtext('lnbackup schema'))");
      await client.query(SCHEMA);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  /** One round, one transaction: every vault's records, and the vaults' last write time. */
  private async commitRound(round: ReadonlyMap<string, readonly StoreRecord[]>): Promise<ReadonlyMap<string, Error>> {
    const rows: [string, StoreRecord][] = [];
    for (const [vaultId, records] of round) for (const r of records) rows.push([vaultId, r]);
    if (rows.length === 0) return new Map();
    const vaultIds = [...round.entries()].filter(([, records]) => records.length > 0).map(([v]) => v);
    const touch = { text: 'UPDATE lnbackup_vaults SET last_write_at = $1 WHERE vault_id = ANY($2::text[])', values: [Date.now(), vaultIds] };
    if (rows.length <= ROWS_PER_STATEMENT) {
      // A single statement is its own transaction: one round trip.
      const insert = insertStatement(rows);
      await this.pool.query(
        `WITH ins AS (${insert.text}) UPDATE lnbackup_vaults SET last_write_at = $${insert.values.length + 1} WHERE vault_id = ANY($${insert.values.length + 2}::text[])`,
        [...insert.values, ...touch.values],
      );
      return new Map();
    }
    const client = await this.pool.connect();
    let broken: unknown = undefined;
    try {
      await client.query('BEGIN');
      for (let i = 0; i < rows.length; i += ROWS_PER_STATEMENT) {
        const insert = insertStatement(rows.slice(i, i + ROWS_PER_STATEMENT));
        await client.query(insert.text, insert.values);
      }
      await client.query(touch.text, touch.values);
      await client.query('COMMIT');
    } catch (err) {
      broken = err;
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release(broken instanceof Error ? broken : undefined);
    }
    return new Map();
  }

  /** The vaults' tails as the database holds them now. */
  private async recover(vaultIds: readonly string[]): Promise<ReadonlyMap<string, VaultTail | Error>> {
    const { rows } = await this.pool.query<VaultRow>(LOAD_VAULTS, [vaultIds]);
    const out = new Map<string, VaultTail | Error>();
    for (const id of vaultIds) out.set(id, new Error(`vault ${id} is not in the database`));
    for (const r of rows) out.set(r.vault_id, tailOfRow(r));
    return out;
  }

  private unavailable(err: unknown, doing = 'storing records; nothing of this append was acknowledged'): StorageUnavailableError {
    if (err instanceof StorageUnavailableError) return err;
    const e = err as { code?: string; message?: string };
    const why = e?.code === '53100' ? "the database server's disk is full" : (e?.message ?? String(err));
    const out = new StorageUnavailableError(
      `the PostgreSQL database at ${this.location} is unavailable (${why}${e?.code ? `, ${e.code}` : ''}) while ${doing}`,
    );
    out.cause = err;
    return out;
  }
}

function insertStatement(rows: readonly [string, StoreRecord][]): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const tuples: string[] = [];
  for (const [vaultId, r] of rows) {
    const i = values.length;
    values.push(vaultId, r.seq.toString(), r.generation, r.bytes);
    tuples.push(`($${i + 1}, $${i + 2}::bigint, $${i + 3}::integer, $${i + 4}::bytea)`);
  }
  return { text: `INSERT INTO lnbackup_records (vault_id, seq, generation, bytes) VALUES ${tuples.join(', ')}`, values };
}
