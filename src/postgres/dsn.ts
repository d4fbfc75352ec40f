// A PostgreSQL connection string (DSN) as lnbackup takes it: a postgres:// URL, the form of the
// node's `--wallet=postgres://user:password@host:port/db` (libpq's key=value form is not taken:
// the `pg` client does not read it). Checks that it is one before anything connects, and redacts
// its password from anything lnbackup prints or logs (the URL's user info and a `password=` query
// parameter). URL syntax: https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING

/** The DSN is not a PostgreSQL connection URL. */
export class DsnError extends Error {
  override name = 'DsnError';
}

const URL_PREFIX = /^postgres(?:ql)?:\/\//i;
const MASK = '***';
/** Far longer than any real DSN: anything longer is refused before it is parsed. */
const MAX_DSN_LENGTH = 4096;

/** The DSN as a URL; throws DsnError saying what is wrong with it. */
export function parseDsn(dsn: string): URL {
  if (dsn.length === 0) throw new DsnError('the DSN is empty: give the wallet DSN, e.g. postgres://user:password@host:5432/lightningdb');
  if (dsn.length > MAX_DSN_LENGTH) throw new DsnError(`the DSN is ${dsn.length} characters long; a PostgreSQL DSN is far shorter`);
  if (!URL_PREFIX.test(dsn)) {
    throw new DsnError(`${redactDsn(dsn)} is not a PostgreSQL DSN: give it as lightningd's --wallet takes it, postgres://user:password@host:port/database`);
  }
  let url: URL;
  try {
    url = new URL(dsn);
  } catch {
    throw new DsnError(`${redactDsn(dsn)} is not a valid postgres:// URL (characters such as @ : / in the password must be percent-encoded)`);
  }
  if (!url.hostname && !url.searchParams.get('host')) throw new DsnError(`${redactDsn(dsn)} names no host`);
  return url;
}

/** `dsn` with its password replaced by ***; an unparsable one is redacted from the scheme on. */
export function redactDsn(dsn: string): string {
  const scheme = URL_PREFIX.exec(dsn)?.[0];
  if (!scheme) return dsn.includes('@') || /password/i.test(dsn) ? MASK : dsn;
  const rest = dsn.slice(scheme.length);
  const end = rest.search(/[/?#]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  const tail = end < 0 ? '' : rest.slice(end);
  // The user info ends at the authority's last @ (an unencoded @ in a password is a mistake, still a secret).
  const at = authority.lastIndexOf('@');
  let shown = authority;
  if (at >= 0) {
    const userInfo = authority.slice(0, at);
    const colon = userInfo.indexOf(':');
    shown = (colon >= 0 ? `${userInfo.slice(0, colon)}:${MASK}` : userInfo) + authority.slice(at);
  }
  return scheme + shown + tail.replace(/([?&]password=)[^&#]*/gi, `$1${MASK}`);
}

/** The password `dsn` carries, as written and decoded (for scrubbing it out of server messages). */
function passwordForms(dsn: string): string[] {
  try {
    const url = new URL(dsn);
    const forms = [url.password, url.searchParams.get('password') ?? ''];
    if (url.password) forms.push(decodeURIComponent(url.password));
    return forms.filter((f) => f.length > 0);
  } catch {
    return [];
  }
}

/** `text` (an error message, a log line) with the DSN, and its password wherever it appears, redacted. */
export function scrubSecret(text: string, dsn: string): string {
  let out = text.split(dsn).join(redactDsn(dsn));
  for (const password of passwordForms(dsn)) out = out.split(password).join(MASK);
  return out;
}
