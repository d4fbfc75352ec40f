// The lnbackup server: a TCP listener whose every connection runs the BOLT #8 handshake
// (src/transport) as the responder with the server's key, then a Session over the protocol. All
// sessions share one store (group commit), one ledger (allow-list, quotas) and one book of open
// vaults. Nothing is ever waited for synchronously on a socket: a slow or hostile connection costs
// its own timers and buffers only (handshake timeout, message size bound, backlog bounds). It
// keeps <data>/server-status.json current, and stop() answers every Append already received
// before it closes the connections and the store, so nothing acknowledged is ever lost.
import fs from 'node:fs';
import net from 'node:net';
import { SecureConnection } from '../transport/connection.js';
import { HandshakeRefusal, refusalAct } from '../transport/handshake.js';
import { formatHostPort, formatRemoteUrl } from '../destinations/remoteUrl.js';
import { ClientLedger, DEFAULT_MAX_VAULTS, DEFAULT_QUOTA_BYTES } from './clientLedger.js';
import { DEFAULT_MEMORY_BUDGET_BYTES, MemoryBudget } from './memoryBudget.js';
import { MAX_HELLO_BYTES } from '../protocol/messages.js';
import { loadOrCreateServerKey } from './serverKey.js';
import { Session, shortKey, type SessionContext, type SessionLimits } from './session.js';
import { VaultBook } from './vaultBook.js';
import { ALLOW_FILE, readAllowFile, watchAllowFile } from './allowFile.js';
import { envelopeVaultId } from './storage/vaultScope.js';
import { openStore, type OpenedStore } from './storage/openStore.js';
import { writeStatusFile, type ClientStatus, type ScrubRunStatus, type ServerScrubStatus, type ServerStatus } from './statusFile.js';
import type { ScrubDataResult } from '../vault/redundancy/scrub.js';
import { startMetricsEndpoint, type MetricsEndpoint } from '../metrics/endpoint.js';
import { NO_OBSERVER, ServerMetrics, type ServerObserver } from '../metrics/serverMetrics.js';

export const DEFAULT_HOST = '127.0.0.1';
export const DEFAULT_PORT = 9736;
/** Time between two scrubs of the storage (`--scrub-interval`). */
export const DEFAULT_SCRUB_INTERVAL_MS = 24 * 3600 * 1000;
/** The first scrub after a start comes after this (or after the interval, if shorter). */
export const FIRST_SCRUB_DELAY_MS = 5 * 60 * 1000;
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** Connections open at once from one address (`--max-connections-per-ip`). */
export const DEFAULT_MAX_CONNECTIONS_PER_IP = 64;
/** The share of the connection slots only connections of allowed keys may hold (the rest: any, handshakes included). */
export const ADMITTED_SHARE = 0.25;
/** A handshake this old is dropped to make room when the slots run out. */
export const HANDSHAKE_GRACE_MS = 1000;

export interface ServerOptions {
  readonly dataDir: string;
  /** Address to listen on (default 127.0.0.1). */
  readonly host?: string;
  /** Port (default 9736; 0 = any free port). */
  readonly port?: number;
  /** A PostgreSQL URL; files under dataDir when absent. */
  readonly storage?: string;
  /** Client keys admitted (66 hex digits each), or 'open'. Default: an empty allow-list (nobody). */
  readonly allow?: readonly string[] | 'open';
  readonly quotaBytes?: number;
  readonly maxVaults?: number;
  readonly maxConnections?: number;
  readonly maxConnectionsPerIp?: number;
  readonly maxMessageBytes?: number;
  readonly handshakeTimeoutMs?: number;
  readonly idleTimeoutMs?: number;
  readonly maxPendingAppends?: number;
  /** Bytes of appends not yet durable per connection (default 4 x maxMessageBytes). */
  readonly maxPendingBytes?: number;
  /** What all connections together may make the server hold (default 512 MiB; MemoryBudget). */
  readonly memoryBudgetBytes?: number;
  /** Least time between two writes of the status file (default 1000 ms). */
  readonly statusIntervalMs?: number;
  /** An already opened store to use instead of opening one from dataDir/storage (tests); stop() closes it. */
  readonly store?: OpenedStore;
  /** One line per notable event, for the operator's log. */
  readonly onEvent?: (line: string) => void;
  /**
   * Time between two scrubs of the storage (every vault file checked against its parity and
   * repaired in place; file storage only). Default 24 h; 0 = never.
   */
  readonly scrubIntervalMs?: number;
  /** Time from the start to the first scrub (default: 5 minutes, or the interval if shorter). */
  readonly scrubFirstDelayMs?: number;
  /** Serve Prometheus metrics at http://host:port/metrics (src/metrics/serverMetrics.ts); absent: none. */
  readonly metrics?: { readonly host: string; readonly port: number };
}

export interface RunningServer {
  readonly publicKey: Buffer;
  /** lnbackup://<public key>@host:port, what nodes are given. */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly storage: { readonly kind: string; readonly location: string };
  /** Notes for the operator at start (empty allow-list, key file mode, ...). */
  readonly warnings: readonly string[];
  /** http://host:port/metrics when metrics are served, else null. */
  readonly metricsUrl: string | null;
  stop(): Promise<void>;
  status(): Promise<ServerStatus>;
}

interface ClientTotals {
  records: number;
  bytes: number;
  lastActivityAt: number | null;
}

function listenError(err: NodeJS.ErrnoException, where: string): Error {
  switch (err.code) {
    case 'EADDRINUSE':
      return new Error(
        `${where} is already in use (another lnbackup server, or another program): stop it, or choose another address with --listen <host:port>`,
      );
    case 'EACCES':
      return new Error(`not allowed to listen on ${where} (ports below 1024 need privileges): choose another port with --listen <host:port>`);
    case 'EADDRNOTAVAIL':
      return new Error(`cannot listen on ${where}: this machine has no such address; use one of its addresses, or 0.0.0.0 for all`);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new Error(`cannot listen on ${where}: the host name does not resolve`);
    default:
      return new Error(`cannot listen on ${where}: ${err.message}`);
  }
}

export class BackupServer {
  private constructor() {}

  static async start(options: ServerOptions): Promise<RunningServer> {
    const host = options.host ?? DEFAULT_HOST;
    const emit = options.onEvent ?? (() => {});
    // Lines strangers can cause at will (refusals, bad messages) are thinned to 20 a minute per
    // kind, with a count of what was left out, so that nobody can flood the operator's log.
    const noisy = new Map<string, { windowStart: number; shown: number; suppressed: number }>();
    const log = (line: string, kind?: string): void => {
      if (kind === undefined) return emit(line);
      const now = Date.now();
      let n = noisy.get(kind);
      if (!n || now - n.windowStart >= 60_000) {
        const suppressed = n?.suppressed ?? 0;
        noisy.set(kind, (n = { windowStart: now, shown: 0, suppressed: 0 }));
        if (suppressed > 0) emit(`(${suppressed} more '${kind}' lines were left out in the last minute)`);
      }
      if (n.shown < 20) {
        n.shown++;
        emit(line);
      } else n.suppressed++;
    };
    const maxMessageBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
    const limits: SessionLimits = {
      maxMessageBytes,
      maxPendingAppends: options.maxPendingAppends ?? 1024,
      maxPendingBytes: options.maxPendingBytes ?? 4 * maxMessageBytes,
      idleTimeoutMs: options.idleTimeoutMs ?? 120_000,
      helloTimeoutMs: options.handshakeTimeoutMs ?? 10_000,
    };
    const handshakeTimeoutMs = options.handshakeTimeoutMs ?? 10_000;
    const maxConnections = options.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    const maxPerIp = options.maxConnectionsPerIp ?? DEFAULT_MAX_CONNECTIONS_PER_IP;
    // Connections whose key is not yet known to be allowed (handshake in progress) may take only
    // this many slots; the rest are kept for allowed keys.
    const maxUnadmitted = Math.max(1, maxConnections - Math.floor(maxConnections * ADMITTED_SHARE));
    const statusIntervalMs = options.statusIntervalMs ?? 1000;
    const given = options.allow ?? [];
    // Keys from the allow file (lnbackup server allow) count too, and are followed while the server runs.
    const allowFile = given === 'open' ? null : readAllowFile(options.dataDir);
    const allow = given === 'open' ? given : [...new Set([...given.map((k) => k.toLowerCase()), ...(allowFile?.keys ?? [])])];

    fs.mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
    const store = options.store ?? (await openStore({ dataDir: options.dataDir, storage: options.storage }, (notice: string) => log(`storage: ${notice}`)));
    let key: ReturnType<typeof loadOrCreateServerKey>;
    try {
      key = loadOrCreateServerKey(options.dataDir);
    } catch (err) {
      await store.close().catch(() => {});
      throw err;
    }
    const warnings: string[] = [...key.warnings];
    if (allow !== 'open' && allow.length === 0) {
      warnings.push(
        'the allow-list is empty: no client can use this server. Add node keys with --allow <pubkey> or, while it runs, lnbackup server allow <pubkey> --data <dir>; or admit any key with --open',
      );
    }
    if (key.created) log(`made a new server key in ${key.file} (back it up: nodes pin its public key)`);

    const ledger = new ClientLedger(store, {
      allow,
      quotaBytes: options.quotaBytes ?? DEFAULT_QUOTA_BYTES,
      maxVaults: options.maxVaults ?? DEFAULT_MAX_VAULTS,
    });
    for (const p of allowFile?.problems ?? []) warnings.push(`allow file: skipped ${p}`);
    const unwatchAllowFile =
      given === 'open'
        ? () => {}
        : watchAllowFile(options.dataDir, (file) => {
            for (const p of file.problems) log(`allow file: skipped ${p}`);
            const keys = [...new Set([...given.map((k) => k.toLowerCase()), ...file.keys])];
            ledger.setAllowList(keys);
            // A key taken out loses its open connections too.
            const dropped = [...sessions].filter((session) => !ledger.isAllowed(session.client));
            for (const session of dropped) session.close();
            log(
              `allow-list changed: ${keys.length} key(s) (${given.length} from --allow, ${file.keys.length} from ${ALLOW_FILE})${dropped.length > 0 ? `; closed ${dropped.length} connection(s) of keys no longer allowed` : ''}`,
            );
            markChanged();
          });
    const book = new VaultBook();
    const budget = new MemoryBudget(options.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_BYTES);
    const sessions = new Set<Session>();
    const sockets = new Set<net.Socket>();
    /** Sockets whose handshake is not done, oldest first, with when they came. */
    const handshaking = new Map<net.Socket, number>();
    const perIp = new Map<string, number>();
    const totals = new Map<string, ClientTotals>();
    const appendCounters = { appends: 0, records: 0, bytes: 0, maxAppendMs: 0 };
    // Metrics read the status at each scrape (status() below); the observer is told what only events say.
    let readStatus: () => Promise<ServerStatus> = () => Promise.reject(new Error('the server is starting'));
    const metrics = options.metrics ? new ServerMetrics(() => readStatus()) : null;
    const observer: ServerObserver = metrics ?? NO_OBSERVER;
    store.observeRounds?.((records, ms, ok) => observer.roundCommitted(records, ms / 1000, ok));
    let handshakeFailures = 0;
    let refusedConnections = 0;
    let stopping = false;
    let stoppedAt: string | null = null;
    const startedAt = new Date().toISOString();

    // -- status file: at most once per interval while something changed --------------------------
    let dirty = true;
    let statusTimer: NodeJS.Timeout | null = null;
    let statusWriting: Promise<void> | null = null;
    let lastStatusWrite = 0;
    let statusFailureLogged = false;

    const ctx: SessionContext = {
      store,
      ledger,
      book,
      limits,
      budget,
      log,
      changed: () => markChanged(),
      appended: (records, bytes, ms) => {
        appendCounters.appends++;
        appendCounters.records += records;
        appendCounters.bytes += bytes;
        if (ms > appendCounters.maxAppendMs) appendCounters.maxAppendMs = ms;
        observer.acknowledged(ms / 1000);
      },
      refused: (reason) => observer.refused(reason),
    };

    const server = net.createServer({ pauseOnConnect: false, noDelay: true });
    let port = options.port ?? DEFAULT_PORT;
    const where = formatHostPort(host, port);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host, port }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      await store.close().catch(() => {});
      throw listenError(err as NodeJS.ErrnoException, where);
    }
    server.on('error', (err) => log(`listener error: ${err.message}`));
    port = (server.address() as net.AddressInfo).port;
    const listen = formatHostPort(host, port);
    const url = formatRemoteUrl(key.publicKey, host, port);
    const storage = { kind: store.kind, location: store.location };

    /** Tells the peer why in place of act two (it costs no key operation), then closes. */
    const refuse = (socket: net.Socket, reason: HandshakeRefusal, why: string): void => {
      refusedConnections++;
      observer.refused(reason === HandshakeRefusal.ServerFull ? 'full' : 'per-address');
      if (refusedConnections === 1 || refusedConnections % 100 === 0)
        log(`connection from ${socket.remoteAddress ?? '?'} refused: ${why} (${refusedConnections} refused so far)`);
      // What it sent is read and dropped, so that its close is seen; it is cut after a second anyway.
      socket.resume();
      socket.end(refusalAct(reason));
      setTimeout(() => socket.destroy(), 1000);
      markChanged();
    };

    /** Drops the oldest handshake that has had its grace time, to make room; false if there is none. */
    const dropStaleHandshake = (): boolean => {
      const now = Date.now();
      for (const [socket, since] of handshaking) {
        if (now - since < HANDSHAKE_GRACE_MS) return false;
        handshaking.delete(socket);
        socket.destroy();
        handshakeFailures++;
        return true;
      }
      return false;
    };

    let lastFailureLog = 0;
    let failuresSinceLog = 0;
    const handshakeFailed = (address: string, err: Error): void => {
      handshakeFailures++;
      failuresSinceLog++;
      const now = Date.now();
      // One line a minute at most: scanners and slow-loris attempts must not flood the log.
      if (now - lastFailureLog >= 60_000) {
        log(
          `handshake failed from ${address}: ${err.message}${failuresSinceLog > 1 ? ` (${failuresSinceLog} failed handshakes since the last such line)` : ''}`,
        );
        lastFailureLog = now;
        failuresSinceLog = 0;
      }
      markChanged();
    };

    server.on('connection', (socket: net.Socket) => {
      socket.on('error', () => {}); // reported through the transport or the close
      const ip = socket.remoteAddress ?? '?';
      if (stopping) {
        socket.destroy();
        return;
      }
      const fromIp = perIp.get(ip) ?? 0;
      if (fromIp >= maxPerIp)
        return refuse(socket, HandshakeRefusal.TooManyFromAddress, `${fromIp} connections already open from this address (--max-connections-per-ip)`);
      // When the slots run out, handshakes that did not complete in time go first.
      while ((sockets.size >= maxConnections || handshaking.size >= maxUnadmitted) && dropStaleHandshake());
      if (sockets.size >= maxConnections) return refuse(socket, HandshakeRefusal.ServerFull, `${maxConnections} connections already open (--max-connections)`);
      if (handshaking.size >= maxUnadmitted) {
        return refuse(
          socket,
          HandshakeRefusal.ServerFull,
          `${handshaking.size} handshakes in progress, the most allowed while ${maxConnections - maxUnadmitted} slots are kept for allowed keys`,
        );
      }
      sockets.add(socket);
      handshaking.set(socket, Date.now());
      perIp.set(ip, fromIp + 1);
      socket.setKeepAlive(true, 60_000);
      socket.once('close', () => {
        sockets.delete(socket);
        handshaking.delete(socket);
        const n = (perIp.get(ip) ?? 1) - 1;
        if (n <= 0) perIp.delete(ip);
        else perIp.set(ip, n);
        markChanged();
      });
      const address = formatHostPort(ip, socket.remotePort ?? 0);
      // Until Hello is accepted a peer may send one Hello and nothing larger.
      SecureConnection.accept(socket, key.privateKey, { handshakeTimeoutMs, maxMessageBytes: MAX_HELLO_BYTES, budget }).then(
        (conn) => {
          handshaking.delete(socket);
          if (stopping) {
            conn.destroy();
            return;
          }
          const session = new Session(conn, ctx, address);
          sessions.add(session);
          markChanged();
          void session.closed.then(() => {
            sessions.delete(session);
            markChanged();
            const t = totals.get(session.client) ?? { records: 0, bytes: 0, lastActivityAt: null };
            t.records += session.counters.records;
            t.bytes += session.counters.bytes;
            t.lastActivityAt = Math.max(t.lastActivityAt ?? 0, session.counters.lastActivityAt);
            if (!session.admitted) return;
            // Kept after the connection only for clients that used a vault: keys cost nothing,
            // and a stranger making new ones must not grow the server's memory or status.
            if (session.counters.opens > 0 || totals.has(session.client)) totals.set(session.client, t);
            const why = session.closeError ? `: ${session.closeError.message}` : '';
            log(`client ${shortKey(session.client)} disconnected (${session.counters.records} records acknowledged on this connection)${why}`);
          });
        },
        (err: Error) => {
          handshaking.delete(socket);
          socket.destroy();
          if (!stopping) handshakeFailed(address, err);
        },
      );
    });

    // -- status -----------------------------------------------------------------------------------

    const buildStatus = async (): Promise<ServerStatus> => {
      const vaults = await store.listVaults();
      const clients = new Map<string, { vaults: typeof vaults; sessions: Session[] }>();
      const entry = (k: string): { vaults: typeof vaults; sessions: Session[] } => {
        let c = clients.get(k);
        if (!c) clients.set(k, (c = { vaults: [], sessions: [] }));
        return c;
      };
      for (const v of vaults) entry(v.owner).vaults.push(v);
      for (const s of sessions) if (s.isReady) entry(s.client).sessions.push(s);
      for (const k of totals.keys()) entry(k);
      const list: ClientStatus[] = [...clients.entries()].map(([publicKey, c]) => {
        const t = totals.get(publicKey);
        let lastActivity = t?.lastActivityAt ?? null;
        let records = t?.records ?? 0;
        let bytes = t?.bytes ?? 0;
        let pendingAppends = 0;
        for (const s of c.sessions) {
          lastActivity = Math.max(lastActivity ?? 0, s.counters.lastActivityAt);
          records += s.counters.records;
          bytes += s.counters.bytes;
          pendingAppends += s.pendingAppends;
        }
        return {
          publicKey,
          connected: c.sessions.length > 0,
          connections: c.sessions.length,
          lastActivityAt: lastActivity === null ? null : new Date(lastActivity).toISOString(),
          records,
          bytes,
          pendingAppends,
          totalBytes: c.vaults.reduce((n, v) => n + v.bytes + v.packBytes, 0),
          vaults: c.vaults.map((v) => ({
            vaultId: envelopeVaultId(v.identity) ?? v.vaultId,
            storedAs: v.vaultId,
            firstSeq: v.firstSeq.toString(),
            lastSeq: v.lastSeq.toString(),
            lastGeneration: v.lastGeneration,
            bytes: v.bytes,
            packBytes: v.packBytes,
            lastWriteAt: v.lastWriteAt === null ? null : new Date(v.lastWriteAt).toISOString(),
          })),
        };
      });
      list.sort((a, b) => a.publicKey.localeCompare(b.publicKey));
      return {
        pid: process.pid,
        startedAt,
        updatedAt: new Date().toISOString(),
        url,
        publicKey: key.publicKey.toString('hex'),
        listen,
        storage,
        access: { open: ledger.open, allowListSize: ledger.allowListSize, quotaBytes: ledger.options.quotaBytes, maxVaults: ledger.options.maxVaults },
        connections: sockets.size,
        memory: budget.figures,
        handshaking: handshaking.size,
        handshakeFailures,
        refusedConnections,
        clients: list,
        storeCounters: { ...store.stats },
        appendCounters: { ...appendCounters },
        stopping,
        stoppedAt,
        scrub: scrubbable ? { ...scrubState } : null,
      };
    };

    const writeStatus = (): Promise<void> => {
      if (statusWriting) return statusWriting.then(() => writeStatus());
      dirty = false;
      lastStatusWrite = Date.now();
      statusWriting = buildStatus()
        .then((s) => writeStatusFile(options.dataDir, s))
        .then(
          () => {
            statusFailureLogged = false;
          },
          (err: Error) => {
            if (!statusFailureLogged) log(`cannot write the status file: ${err.message}`);
            statusFailureLogged = true;
          },
        )
        .finally(() => {
          statusWriting = null;
          if (dirty && !stopping) markChanged();
        });
      return statusWriting;
    };

    function markChanged(): void {
      dirty = true;
      if (statusTimer || statusWriting || stopping) return;
      const wait = Math.max(0, lastStatusWrite + statusIntervalMs - Date.now());
      statusTimer = setTimeout(() => {
        statusTimer = null;
        if (dirty && !stopping) void writeStatus();
      }, wait);
    }

    // -- scrub: every vault file checked against its parity, repaired in place ---------------------

    const scrubIntervalMs = options.scrubIntervalMs ?? DEFAULT_SCRUB_INTERVAL_MS;
    const scrubbable = typeof (store as { scrub?: unknown }).scrub === 'function';
    let scrubState: ServerScrubStatus = { intervalMs: scrubIntervalMs, running: false, nextAt: null, last: null };
    let scrubTimer: NodeJS.Timeout | null = null;
    let scrubRun: Promise<void> | null = null;
    const scrubStop = new AbortController();
    const planScrub = (ms: number): void => {
      if (!scrubbable || scrubIntervalMs <= 0 || stopping) return;
      scrubState = { ...scrubState, nextAt: new Date(Date.now() + ms).toISOString() };
      scrubTimer = setTimeout(() => {
        scrubTimer = null;
        scrubRun = runScrub().finally(() => (scrubRun = null));
      }, ms);
      scrubTimer.unref();
    };
    const runScrub = async (): Promise<void> => {
      const startedAt = new Date().toISOString();
      scrubState = { ...scrubState, running: true, nextAt: null };
      markChanged();
      let last: ScrubRunStatus;
      try {
        const r = await (store as unknown as { scrub: (repair: boolean, signal: AbortSignal) => Promise<ScrubDataResult> }).scrub(true, scrubStop.signal);
        last = scrubSummary(r, startedAt, null);
        log(
          `scrub: ${r.checkedFiles} files (${r.bytes} bytes) checked in ${r.vaults.length} vault(s): ${r.repairedFiles} repaired, ${r.damagedFiles} damaged, ${r.unprotectedFiles} unprotected`,
        );
        for (const u of last.unrecoverable)
          log(
            `scrub: DAMAGED beyond repair: vault ${u.vault} ${u.file}: ${u.ranges.map((x) => `bytes ${x.start}..${x.end - 1}`).join(', ') || u.found.join('; ')}`,
          );
      } catch (err) {
        last = { ...scrubSummary(null, startedAt, (err as Error).message) };
        if (!stopping) log(`scrub failed: ${(err as Error).message}`);
      }
      scrubState = { ...scrubState, running: false, last };
      planScrub(scrubIntervalMs);
      markChanged();
    };
    planScrub(Math.max(0, options.scrubFirstDelayMs ?? Math.min(scrubIntervalMs, FIRST_SCRUB_DELAY_MS)));

    await writeStatus();

    // -- stop -------------------------------------------------------------------------------------

    let stopped: Promise<void> | null = null;
    const stop = (): Promise<void> => {
      stopped ??= (async () => {
        stopping = true;
        unwatchAllowFile();
        if (statusTimer) clearTimeout(statusTimer);
        statusTimer = null;
        if (scrubTimer) clearTimeout(scrubTimer);
        scrubTimer = null;
        scrubStop.abort();
        scrubState = { ...scrubState, nextAt: null };
        log('stopping: answering the appends already received, then closing');
        const closedListener = new Promise<void>((resolve) => server.close(() => resolve()));
        await metricsEndpoint?.close();
        for (const s of handshaking.keys()) s.destroy();
        await writeStatus();
        await Promise.all([...sessions].map((s) => s.shutdown()));
        for (const s of sockets) s.destroy();
        await closedListener;
        await (scrubRun as Promise<void> | null)?.catch(() => undefined);
        stoppedAt = new Date().toISOString();
        await writeStatus();
        await store.close();
        log('stopped');
      })();
      return stopped;
    };

    readStatus = buildStatus;
    let metricsEndpoint: MetricsEndpoint | null = null;
    if (metrics && options.metrics) {
      try {
        metricsEndpoint = await startMetricsEndpoint(options.metrics.host, options.metrics.port, metrics);
      } catch (err) {
        await stop();
        throw err;
      }
      log(`metrics at ${metricsEndpoint.url}`);
    }

    return { publicKey: key.publicKey, url, host, port, storage, warnings, metricsUrl: metricsEndpoint?.url ?? null, stop, status: buildStatus };
  }
}

function scrubSummary(r: ScrubDataResult | null, startedAt: string, error: string | null): ScrubRunStatus {
  const vaults = r?.vaults ?? [];
  const id = (dir: string): string => dir.split(/[\\/]/).pop() ?? dir;
  return {
    startedAt,
    finishedAt: new Date().toISOString(),
    files: r?.checkedFiles ?? 0,
    bytes: r?.bytes ?? 0,
    repairedFiles: r?.repairedFiles ?? 0,
    damagedFiles: r?.damagedFiles ?? 0,
    unprotectedFiles: r?.unprotectedFiles ?? 0,
    repaired: vaults.flatMap((v) => v.files.filter((f) => f.status === 'repaired').map((f) => ({ vault: id(v.vault), file: f.file, fixed: f.fixed }))),
    unrecoverable: vaults.flatMap((v) =>
      v.files.filter((f) => f.status === 'damaged').map((f) => ({ vault: id(v.vault), file: f.file, ranges: f.lost, found: f.found })),
    ),
    error,
  };
}
