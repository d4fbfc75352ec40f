// The node's wallet DSN from lightningd's `listconfigs` answer, for the plugin to hand to
// PostgresWatch after `init` (never from inside the db_write hook, where lightningd waits on the
// plugin). Core Lightning 23.08 and later answer {"configs": {"wallet": {"value_str": …}}}; older
// ones {"wallet": "…"}. Only a postgres:// wallet is returned: a sqlite3:// one (or none) is null.
import { parseDsn } from './dsn.js';

/** The postgres:// wallet DSN in a listconfigs result, or null when the wallet is not PostgreSQL. */
export function walletDsnFromListconfigs(result: unknown): string | null {
  if (typeof result !== 'object' || result === null) return null;
  const r = result as { configs?: { wallet?: { value_str?: unknown } }; wallet?: unknown };
  const value = r.configs?.wallet?.value_str ?? r.wallet;
  if (typeof value !== 'string' || !/^postgres(?:ql)?:\/\//i.test(value)) return null;
  parseDsn(value); // throws DsnError (bounded length, valid URL) for a malformed one
  return value;
}
