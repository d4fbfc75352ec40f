// `lnbackup server` (run a backup server for nodes: prints the URL to give them, logs one line per
// notable event on stderr, stops cleanly on SIGTERM/SIGINT) and `lnbackup server status` (what the
// running server's status file says, and whether it still runs).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Command, Option } from 'commander';
import { parsePublicKeyHex } from '../transport/keys.js';
import { formatHostPort } from '../destinations/remoteUrl.js';
import { BackupServer, DEFAULT_HOST, DEFAULT_PORT } from '../server/server.js';
import { DEFAULT_MAX_VAULTS, DEFAULT_QUOTA_BYTES } from '../server/clientLedger.js';
import { describeStatus, readStatusFile } from '../server/statusFile.js';
import { allowFilePath, readAllowFile, writeAllowFile } from '../server/allowFile.js';
import { EXIT_CHECK_FAILED, emit, UsageError } from './output.js';
import { jsonOption, run } from './runner.js';
import { asUsage } from './destinationCommands.js';
import { parseMetricsAddress } from '../metrics/endpoint.js';

const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

/** "10GiB", "500MB", "1.5G" (K/M/G/T and KiB.. are powers of 1024, KB.. of 1000), or plain bytes. */
export function parseSize(text: string, option: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2].toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new UsageError(`${option} takes a size such as 10GiB, 500MB or 1048576, not '${text}'`);
  const n = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(n) || n < 1) throw new UsageError(`${option} '${text}' is not a usable size`);
  return n;
}

function parseCount(text: string, option: string, min = 1): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min)
    throw new UsageError(`${option} takes a whole number of at least ${min}, not '${text}'`);
  return n;
}

/** host:port, [IPv6]:port, or :port (all addresses). */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d+)$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port > 65535) {
    throw new UsageError(`--listen takes <host>:<port> (e.g. 127.0.0.1:${DEFAULT_PORT}, 0.0.0.0:${DEFAULT_PORT}, [::1]:${DEFAULT_PORT}), not '${text}'`);
  }
  if (m[1] !== undefined && !net.isIPv6(m[1])) throw new UsageError(`--listen: ${m[1]} is not an IPv6 address`);
  const host = m[1] ?? (m[2] === '' ? '0.0.0.0' : m[2]);
  return { host, port };
}

/** A PostgreSQL URL, checked before anything connects; the password never appears in errors. */
export function checkPostgresUrl(text: string): string {
  let u: URL | null = null;
  try {
    u = new URL(text);
  } catch {
    u = null;
  }
  if (!u || !/^postgres(ql)?:$/.test(u.protocol) || u.hostname === '' || u.pathname.length <= 1) {
    const shown = /^[a-z]+:\/\//i.test(text) ? text.replace(/\/\/([^:/@]*):[^@/]*@/, '//$1:***@') : '(not a URL)';
    throw new UsageError(`--storage takes a PostgreSQL URL such as postgres://user:password@host:5432/lnbackup, got ${shown}`);
  }
  return text;
}

const DURATION_UNITS: Record<string, number> = { '': 1000, ms: 1, s: 1000, m: 60_000, min: 60_000, h: 3_600_000, d: 86_400_000 };

/** "24h", "30m", "90s", "500ms", "1d", or plain seconds; "0" = never. */
export function parseDuration(text: string, option: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? DURATION_UNITS[m[2].toLowerCase()] : undefined;
  const ms = m && unit !== undefined ? Math.round(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(ms) || ms < 0 || ms > 365 * 86_400_000) {
    throw new UsageError(`${option} takes a duration such as 24h, 30m, 90s or 0 (never), not '${text}'`);
  }
  return ms;
}

function parseMessageSize(text: string): number {
  const n = parseSize(text, '--max-message');
  if (n < 1024 * 1024 || n > 1024 ** 3) throw new UsageError(`--max-message must be from 1MiB to 1GiB, not '${text}'`);
  return n;
}

interface ServerFlags {
  data?: string;
  listen: string;
  storage?: string;
  open?: boolean;
  allow?: string[];
  quota?: string;
  maxVaults?: string;
  maxConnections?: string;
  maxConnectionsPerIp?: string;
  maxMessage?: string;
  memoryBudget?: string;
  metrics?: string;
  idleTimeout?: string;
  handshakeTimeout?: string;
  scrubInterval?: string;
  json?: boolean;
}

function requireData(o: { data?: string }, command: string): string {
  if (!o.data) throw new UsageError(`${command} needs --data <dir> (the server's folder: its key, its status, and with the default storage its vaults)`);
  return path.resolve(o.data);
}

function stamp(): string {
  return new Date().toISOString();
}

async function serve(o: ServerFlags): Promise<number> {
  const dataDir = requireData(o, 'lnbackup server');
  const { host, port } = parseListen(o.listen);
  if (o.open && o.allow?.length) throw new UsageError('--open admits every key: leave out --allow, or leave out --open to admit only the listed keys');
  const allow = o.open
    ? ('open' as const)
    : (o.allow ?? []).map((k) => {
        try {
          return parsePublicKeyHex(k).toString('hex');
        } catch (err) {
          throw new UsageError(`--allow: ${(err as Error).message}`);
        }
      });
  const storage = o.storage === undefined ? undefined : checkPostgresUrl(o.storage);
  const seconds = (v: string | undefined, option: string): number | undefined => (v === undefined ? undefined : parseCount(v, option) * 1000);
  const log = (line: string): void => {
    process.stderr.write(`lnbackup server: ${stamp()} ${line}\n`);
  };

  const srv = await BackupServer.start({
    dataDir,
    host,
    port,
    storage,
    allow,
    quotaBytes: o.quota === undefined ? undefined : parseSize(o.quota, '--quota'),
    maxVaults: o.maxVaults === undefined ? undefined : parseCount(o.maxVaults, '--max-vaults'),
    maxConnections: o.maxConnections === undefined ? undefined : parseCount(o.maxConnections, '--max-connections'),
    maxConnectionsPerIp: o.maxConnectionsPerIp === undefined ? undefined : parseCount(o.maxConnectionsPerIp, '--max-connections-per-ip'),
    maxMessageBytes: o.maxMessage === undefined ? undefined : parseMessageSize(o.maxMessage),
    memoryBudgetBytes: o.memoryBudget === undefined ? undefined : parseSize(o.memoryBudget, '--memory-budget'),
    idleTimeoutMs: seconds(o.idleTimeout, '--idle-timeout'),
    handshakeTimeoutMs: seconds(o.handshakeTimeout, '--handshake-timeout'),
    scrubIntervalMs: o.scrubInterval === undefined ? undefined : parseDuration(o.scrubInterval, '--scrub-interval'),
    metrics: o.metrics === undefined ? undefined : asUsage(() => parseMetricsAddress(o.metrics as string)),
    onEvent: log,
  });

  const listen = formatHostPort(srv.host, srv.port);
  const publicKey = srv.publicKey.toString('hex');
  for (const w of srv.warnings) log(`warning: ${w}`);
  const wildcard = srv.host === '0.0.0.0' || srv.host === '::';
  if (o.json) {
    process.stdout.write(
      JSON.stringify({ ok: true, publicKey, url: srv.url, listen, data: dataDir, storage: srv.storage, metrics: srv.metricsUrl, pid: process.pid }) + '\n',
    );
  } else {
    const access =
      allow === 'open'
        ? 'open: any node key may create vaults (quotas apply)'
        : allow.length === 0
          ? 'allow-list EMPTY: nobody is admitted (use --allow or --open)'
          : `allow-list of ${allow.length} key(s)`;
    process.stdout.write(
      [
        `lnbackup server listening on ${listen}`,
        `public key:  ${publicKey}`,
        `node URL:    ${srv.url}`,
        ...(wildcard ? [`             (replace ${srv.host} with an address nodes can reach)`] : []),
        `data:        ${dataDir}`,
        `storage:     ${srv.storage.kind} (${srv.storage.location})`,
        `access:      ${access}`,
        ...(srv.metricsUrl ? [`metrics:     ${srv.metricsUrl}`] : []),
        'Stop with Ctrl-C or SIGTERM: appends already received are answered first.',
        '',
      ].join('\n'),
    );
  }
  log(`listening on ${listen} as ${srv.url}`);

  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    let seen = 0;
    const onSignal = (sig: NodeJS.Signals): void => {
      seen++;
      if (seen === 1) resolve(sig);
      else {
        log(`${sig} again: exiting now (nothing acknowledged is lost: every ack follows the fsync)`);
        process.exit(1);
      }
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  log(`${signal} received`);
  await srv.stop();
  // Everything is closed; leave even if some handle lingers.
  setTimeout(() => process.exit(), 2_000).unref();
  return 0;
}

function showStatus(o: { data?: string; json?: boolean }): number {
  const dataDir = requireData(o, 'lnbackup server status');
  const r = readStatusFile(dataDir);
  if (o.json) {
    process.stdout.write(JSON.stringify({ ok: r.running, running: r.running, note: r.note, ...r.status }, null, 2) + '\n');
  } else {
    for (const line of describeStatus(r)) process.stdout.write(line + '\n');
  }
  return r.running ? 0 : EXIT_CHECK_FAILED;
}

export function registerServerCommands(program: Command): void {
  const server = program
    .command('server')
    .description(
      'run an lnbackup server: nodes send it their sealed records over an encrypted connection; it stores them and acknowledges each only once durable',
    )
    .option('--data <dir>', "the server's folder: server.key (its identity), server-status.json, and the vaults with the default file storage")
    .option(
      '--listen <host:port>',
      `address and port to listen on (0.0.0.0:${DEFAULT_PORT} for every interface; port 0 picks a free one)`,
      `${DEFAULT_HOST}:${DEFAULT_PORT}`,
    )
    .option('--storage <postgres-url>', 'keep vaults in PostgreSQL (postgres://user:password@host:5432/db) instead of files under --data')
    .option('--open', 'admit any node key (open registration; quotas still apply)')
    .option(
      '--allow <pubkey...>',
      "admit these node keys (each the node's lnbackup transport public key, 66 hex digits); without --open or --allow nobody is admitted",
    )
    .option('--quota <size>', `bytes each client may store, e.g. 10GiB, 500MB (default ${DEFAULT_QUOTA_BYTES / 1024 ** 3}GiB)`)
    .option('--max-vaults <n>', `vaults each client may create (default ${DEFAULT_MAX_VAULTS})`)
    .addOption(new Option('--max-connections <n>', 'connections open at once, handshakes included (default 1024)'))
    .addOption(new Option('--max-connections-per-ip <n>', 'connections open at once from one address (default 64)'))
    .addOption(new Option('--max-message <size>', 'largest message taken or sent (default 16MiB); a record must fit in one'))
    .addOption(
      new Option(
        '--memory-budget <size>',
        'bytes all connections together may make the server hold: messages being received, records not yet durable, packs being uploaded, replies not yet sent (default 512MiB; TooBusy beyond)',
      ),
    )
    .addOption(new Option('--idle-timeout <seconds>', 'close a connection silent this long (default 120)'))
    .addOption(new Option('--handshake-timeout <seconds>', 'close a connection that has not finished the handshake and Hello in this time (default 10)'))
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://<host:port>/metrics (e.g. 127.0.0.1:9737; keep it off the public interface)')
    .option(
      '--scrub-interval <duration>',
      'check every stored file against its parity and repair it in place this often, e.g. 24h, 30m, 0 = never (default 24h; the first run some minutes after the start; file storage only)',
    )
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
It prints the server's public key and the URL to give nodes:
  lnbackup://<server public key>@<host>:<port>
The key is made at the first start (<data>/server.key, mode 600): back it up; nodes pin it.
One line per notable event (connections, refusals, errors) goes to stderr. SIGTERM or SIGINT
stops the server after answering every append already received (exit code 0).

Examples:
  lnbackup server --data /var/lib/lnbackup --listen 0.0.0.0:${DEFAULT_PORT} --allow 02ab...   (one node)
  lnbackup server --data /var/lib/lnbackup --open --quota 2GiB --max-vaults 4   (strangers)
  lnbackup server status --data /var/lib/lnbackup
  lnbackup server allow 03cd... --data /var/lib/lnbackup   (admit another node without a restart)`,
    )
    .action((o: ServerFlags) => run(o, () => serve(o)));

  server
    .command('status')
    .description(
      'what the server with this --data folder reports: clients, their vaults (last record, size, last write), connections, lag; says so when it is not running',
    )
    .option('--data <dir>', "the server's folder (as given to 'lnbackup server')")
    .addOption(jsonOption())
    .addHelpText('after', '\nExit code 0 when the server runs, 3 when it does not (its last status is still shown), 1 when there is no status at all.')
    .action((o: { data?: string; json?: boolean }) => run(o, () => showStatus(o)));

  server
    .command('allow')
    .description(
      'admit node keys on the server with this --data folder, while it runs (its allowed-keys file, picked up within seconds); with no key, list them',
    )
    .argument('[keys...]', 'node keys (each 66 hex digits: what `lnbackup destination key` prints on the node)')
    .option('--data <dir>', "the server's folder (as given to 'lnbackup server')")
    .option('--remove', 'take these keys out instead (the running server also closes their open connections)')
    .addOption(jsonOption())
    .addHelpText('after', '\nKeys given with --allow at the start are admitted too and are not changed here. An --open server admits every key anyway.')
    .action((keys: string[], o: { data?: string; remove?: boolean; json?: boolean }) => run(o, () => editAllowList(keys, o)));
}

function editAllowList(keys: readonly string[], o: { data?: string; remove?: boolean; json?: boolean }): number {
  const dataDir = requireData(o, 'lnbackup server allow');
  if (!fs.existsSync(dataDir)) throw new UsageError(`${dataDir} does not exist: give the --data folder the server runs with`);
  const given = keys.map((k) => {
    try {
      parsePublicKeyHex(k);
    } catch (err) {
      throw new UsageError(`${(err as Error).message}`);
    }
    return k.toLowerCase();
  });
  if (o.remove && given.length === 0) throw new UsageError('--remove needs the keys to take out');
  const before = readAllowFile(dataDir);
  const after = o.remove ? before.keys.filter((k) => !given.includes(k)) : [...new Set([...before.keys, ...given])];
  const changed = after.length !== before.keys.length || after.some((k, i) => k !== before.keys[i]);
  if (changed) writeAllowFile(dataDir, after);
  const missing = o.remove ? given.filter((k) => !before.keys.includes(k)) : [];
  emit(o, { ok: true, file: allowFilePath(dataDir), keys: after, changed, notInFile: missing, skipped: before.problems }, () => [
    ...before.problems.map((p) => `warning: skipped ${p}`),
    ...missing.map((k) => `note: ${k} was not in the file (a key given with --allow at the start stays admitted until the server restarts without it)`),
    `${allowFilePath(dataDir)}: ${after.length} key(s)${changed ? ' (changed: a running server picks it up within seconds)' : ' (unchanged)'}`,
    ...after.map((k) => `  ${k}`),
  ]);
  return 0;
}
