// Why a remote destination's session with its server ended, and what the reconnect loop
// (remote.ts) does about it: what to tell the operator (one line per kind, rate-limited there),
// whether to wait the refusal delay (the server refused this node: the same ask would be refused
// again soon) or the next backoff step, and whether a start() waiting for this server stops waiting.
import { ErrorCode } from '../protocol/messages.js';
import type { NoticeLevel } from './remote.js';
import { ProtocolError, ServerError } from './serverClient.js';

export interface SessionEnd {
  /** The kind of problem (notices are rate-limited per kind). */
  readonly kind: string;
  readonly level: NoticeLevel;
  readonly message: string;
  /** Wait the refusal delay, or the next backoff step. */
  readonly wait: 'refused' | 'backoff';
  /** A start() waiting for this server stops waiting: it refused this node. */
  readonly endsStart: boolean;
  /** The server was too busy for what was in flight: send fewer bytes at once. */
  readonly halveWindow: boolean;
}

/** `err`: why the session ended (null: the server closed the connection); `every`: how the retry is described. */
export function sessionEnd(name: string, err: Error | null, every: string): SessionEnd {
  const end = (kind: string, level: NoticeLevel, message: string, wait: SessionEnd['wait'], endsStart = false, halveWindow = false): SessionEnd => ({
    kind,
    level,
    message,
    wait,
    endsStart,
    halveWindow,
  });
  if (err instanceof ServerError) {
    switch (err.code) {
      case ErrorCode.QuotaExceeded:
        return end('quota', 'unusual', `${err.message}. Records wait on the node until there is room (${every})`, 'refused', true);
      case ErrorCode.NotAllowed:
      case ErrorCode.IdentityMismatch:
      case ErrorCode.UnknownVault:
      case ErrorCode.UnsupportedVersion:
        return end('refused', 'broken', `${err.message}; no record is backed up there until that is fixed (${every})`, 'refused', true);
      case ErrorCode.BadMessage:
        // The same bytes would be refused again: a bug on one side, not worth a tight loop.
        return end('bad-message', 'broken', `${err.message}; this is a bug in lnbackup on the node or the server: report it (${every})`, 'refused');
      case ErrorCode.OutOfOrder:
        return end('resync', 'unusual', `${err.message}; resuming from the server's state`, 'backoff');
      case ErrorCode.TooBusy:
        return end('busy', 'unusual', `${err.message}; retrying`, 'backoff', false, err.seq !== 0n);
      default:
        return end(`server-${err.code}`, 'unusual', `${err.message}; retrying`, 'backoff');
    }
  }
  const what = err === null ? `${name} closed the connection` : err instanceof ProtocolError ? err.message : `${name}: ${err.message}`;
  return end('connection', 'unusual', `${what}; reconnecting`, 'backoff');
}
