// When the consumer sends its beacon to a peer, as a pure module (clock and send injected):
// - after a reconnection, never before the peer's `peer_storage_retrieval` arrived, or a short
//   timeout passed with none: a peer's copy is only replaced once we know what it held, so a node
//   never overwrites its own good copy with a stale one (a known Core Lightning race, recorded);
// - to every connected peer with a channel when the beacon changes because a channel changed
//   (urgent), and otherwise at most once every `refreshMs` per peer;
// - not again to a peer that already holds the current version or a newer one (its retrieval said
//   so, or we sent it on this connection): a newer one is the caller's cue to raise its counter.
// Which blob a peer gets (the whole beacon or its shard) is the send function's business.
import { systemClock, type Clock } from '../clock.js';

/** Sends the current beacon (version `version`) to the peer. */
export type SendBeacon = (peerId: string, version: bigint) => void;

export interface SendGateOptions {
  readonly clock?: Clock;
  /** How long to wait for a reconnected peer's retrieval before sending anyway. */
  readonly retrievalTimeoutMs?: number;
  /** The shortest time between two non-urgent sends to one peer. */
  readonly refreshMs?: number;
}

export const DEFAULT_RETRIEVAL_TIMEOUT_MS = 10_000;
export const DEFAULT_REFRESH_MS = 10 * 60_000;

interface PeerState {
  /** Waiting for the retrieval (or its timeout) after the connection. */
  waiting: boolean;
  /** The version the peer holds, as far as we know on this connection. */
  holds: bigint | null;
  lastSentMs: number | null;
  timer: unknown;
}

export class BeaconSendGate {
  private readonly peers = new Map<string, PeerState>();
  private readonly clock: Clock;
  private readonly retrievalTimeoutMs: number;
  private readonly refreshMs: number;
  private version: bigint | null = null;

  constructor(
    private readonly send: SendBeacon,
    options: SendGateOptions = {},
  ) {
    this.clock = options.clock ?? systemClock;
    this.retrievalTimeoutMs = options.retrievalTimeoutMs ?? DEFAULT_RETRIEVAL_TIMEOUT_MS;
    this.refreshMs = options.refreshMs ?? DEFAULT_REFRESH_MS;
  }

  /** A peer with a channel connected: wait for its retrieval before sending anything. */
  connected(peerId: string): void {
    this.disconnected(peerId);
    const peer: PeerState = { waiting: true, holds: null, lastSentMs: null, timer: null };
    peer.timer = this.clock.setTimer(this.retrievalTimeoutMs, () => {
      peer.timer = null;
      this.ready(peerId, peer);
    });
    this.peers.set(peerId, peer);
  }

  /** The peer's retrieval arrived; `holds` is the version of the valid beacon in it, or null. */
  retrieved(peerId: string, holds: bigint | null): void {
    const peer = this.peers.get(peerId);
    if (!peer || !peer.waiting) return;
    this.clearTimer(peer);
    peer.holds = holds;
    this.ready(peerId, peer);
  }

  disconnected(peerId: string): void {
    const peer = this.peers.get(peerId);
    if (peer) this.clearTimer(peer);
    this.peers.delete(peerId);
  }

  /** A new beacon was built; `urgent` when a channel changed (sent at once, not rate-limited). */
  beaconChanged(version: bigint, urgent: boolean): void {
    this.version = version;
    for (const [peerId, peer] of this.peers) {
      if (peer.waiting) continue;
      if (urgent) {
        this.clearTimer(peer);
        this.sendNow(peerId, peer);
      } else {
        this.sendOrSchedule(peerId, peer);
      }
    }
  }

  stop(): void {
    for (const peerId of [...this.peers.keys()]) this.disconnected(peerId);
  }

  private ready(peerId: string, peer: PeerState): void {
    peer.waiting = false;
    this.sendNow(peerId, peer);
  }

  private sendOrSchedule(peerId: string, peer: PeerState): void {
    if (peer.timer !== null) return;
    const due = peer.lastSentMs === null ? 0 : peer.lastSentMs + this.refreshMs - this.clock.now();
    if (due <= 0) {
      this.sendNow(peerId, peer);
      return;
    }
    peer.timer = this.clock.setTimer(due, () => {
      peer.timer = null;
      if (this.peers.get(peerId) === peer) this.sendNow(peerId, peer);
    });
  }

  private sendNow(peerId: string, peer: PeerState): void {
    // Never replace a copy that is as new or newer (after a restore, peers can be ahead of us).
    if (this.version === null || (peer.holds !== null && peer.holds >= this.version)) return;
    peer.holds = this.version;
    peer.lastSentMs = this.clock.now();
    this.send(peerId, this.version);
  }

  private clearTimer(peer: PeerState): void {
    if (peer.timer !== null) this.clock.clearTimer(peer.timer);
    peer.timer = null;
  }
}
