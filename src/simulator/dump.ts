// A logical dump of a sqlite database, to compare two databases exactly: the schema from
// sqlite_master (ordered by type, name), then every table's rows as SQL literals in rowid order (all
// columns for WITHOUT ROWID tables). Integers and reals stay distinct (1 vs 1.0), blobs are x'..',
// NULL is NULL. As with sqlite3's .dump, a rowid is shown only when it is a declared column.
import Database from 'better-sqlite3';

interface MasterRow {
  type: string;
  name: string;
  tbl_name: string;
  sql: string | null;
}

const ident = (name: string): string => `"${name.replaceAll('"', '""')}"`;

function realLiteral(n: number): string {
  if (Number.isNaN(n)) return 'NULL';
  if (!Number.isFinite(n)) return n > 0 ? '9e999' : '-9e999';
  if (Object.is(n, -0)) return '-0.0';
  const s = String(n);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

function literal(v: unknown): string {
  if (v === null) return 'NULL';
  if (typeof v === 'bigint') return v.toString();
  if (typeof v === 'number') return realLiteral(v);
  if (typeof v === 'string') return `'${v.replaceAll("'", "''")}'`;
  if (Buffer.isBuffer(v)) return `x'${v.toString('hex')}'`;
  throw new Error(`unexpected sqlite value ${String(v)}`);
}

export function dumpDatabase(db: Database.Database): string {
  const out: string[] = [`PRAGMA user_version = ${String(db.pragma('user_version', { simple: true }))};`];
  const master = db.prepare('SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name').all() as MasterRow[];
  for (const m of master) out.push(`-- ${m.type} ${m.name} ON ${m.tbl_name}`, `${m.sql ?? 'NULL'};`);
  const withoutRowid = new Set(
    (db.prepare("SELECT name FROM pragma_table_list WHERE schema = 'main' AND wr = 1").all() as { name: string }[]).map((r) => r.name),
  );
  for (const m of master) {
    if (m.type !== 'table') continue;
    const table = ident(m.name);
    let order = 'rowid';
    if (withoutRowid.has(m.name)) {
      const cols = db.prepare('SELECT name FROM pragma_table_info(?)').all(m.name) as { name: string }[];
      order = cols.map((c) => ident(c.name)).join(', ');
    }
    const rows = db.prepare(`SELECT * FROM ${table} ORDER BY ${order}`).raw(true).safeIntegers(true);
    for (const row of rows.iterate() as IterableIterator<unknown[]>) {
      out.push(`INSERT INTO ${table} VALUES(${row.map(literal).join(',')});`);
    }
  }
  return out.join('\n') + '\n';
}

/** True when the two database files hold the same logical dump (opened read-only). */
export function sameDatabaseFiles(a: string, b: string): boolean {
  const da = new Database(a, { readonly: true });
  const db = new Database(b, { readonly: true });
  try {
    return dumpDatabase(da) === dumpDatabase(db);
  } finally {
    da.close();
    db.close();
  }
}
