// Connecting to PostgreSQL as a given DSN, with errors a user can act on: nothing listening, no
// such host, no answer, authentication refused, no such database. Every message has the DSN's
// password redacted; none is a stack trace.
import pg from 'pg';
import { parseDsn, redactDsn, scrubSecret } from './dsn.js';

/** The server could not be reached or refused the connection (exit code 1). */
export class PostgresUnreachable extends Error {
  override name = 'PostgresUnreachable';
}

export interface ConnectOptions {
  /** How long to wait for the server to answer (default 5000 ms). */
  timeoutMs?: number;
  /** The application_name the session shows in pg_stat_activity (default lnbackup). */
  applicationName?: string;
}

/** A connected client; throws PostgresUnreachable (or DsnError for a malformed DSN) with what to do next. */
export async function connectDsn(dsn: string, options: ConnectOptions = {}): Promise<pg.Client> {
  const url = parseDsn(dsn);
  const timeoutMs = options.timeoutMs ?? 5000;
  const client = new pg.Client({
    connectionString: dsn,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
    application_name: url.searchParams.get('application_name') ?? options.applicationName ?? 'lnbackup',
  });
  // A server that goes away later emits 'error' on the client; the next query reports it.
  client.on('error', () => undefined);
  try {
    await client.connect();
    return client;
  } catch (err) {
    await client.end().catch(() => undefined);
    throw new PostgresUnreachable(describeConnectError(err, dsn, url));
  }
}

function describeConnectError(err: unknown, dsn: string, url: URL): string {
  const where = `${url.hostname || url.searchParams.get('host')}:${url.port || '5432'}`;
  const e = err as { code?: string; message?: string };
  const user = decodeURIComponent(url.username) || 'the default user';
  const database = decodeURIComponent(url.pathname.slice(1)) || 'the default database';
  const said = scrubSecret(e.message ?? String(err), dsn);
  switch (e.code) {
    case 'ECONNREFUSED':
      return `nothing accepts connections at ${where} (${redactDsn(dsn)}): is PostgreSQL running there, listening on that address (listen_addresses) and port?`;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return `the host of ${redactDsn(dsn)} cannot be resolved: check the host name`;
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return `no route to ${where} (${said}): check the address and the network or firewall between the machines`;
    case '28P01':
    case '28000':
      return `PostgreSQL at ${where} refused ${user}: ${said}. Check the DSN's user and password, and pg_hba.conf on the server`;
    case '3D000':
      return `PostgreSQL at ${where} has no database ${database}: check the DSN's database name (the node's --wallet)`;
    default:
      if (/timeout/i.test(said)) return `no answer from ${where} within the timeout: is it a PostgreSQL server, and reachable from here?`;
      return `cannot connect to ${redactDsn(dsn)}: ${said}`;
  }
}
