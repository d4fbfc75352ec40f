// A clock for the peer-storage rules (src/peerstorage/clock.ts) that the test moves by hand.
import type { Clock } from '../../src/peerstorage/clock.js';

/** A clock the test moves by hand; timers fire when it passes their time. */
export class FakeClock implements Clock {
  private t = 1_000_000;
  private timers: { at: number; fire: () => void; id: number }[] = [];
  private nextId = 0;
  now(): number {
    return this.t;
  }
  setTimer(ms: number, fire: () => void): unknown {
    const id = this.nextId++;
    this.timers.push({ at: this.t + ms, fire, id });
    return id;
  }
  clearTimer(timer: unknown): void {
    this.timers = this.timers.filter((x) => x.id !== timer);
  }
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      const due = this.timers.filter((x) => x.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers = this.timers.filter((x) => x !== due);
      this.t = due.at;
      due.fire();
    }
    this.t = end;
  }
  get pendingTimers(): number {
    return this.timers.length;
  }
}
