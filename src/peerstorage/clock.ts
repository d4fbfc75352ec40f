// The time and timers the peer-storage rules run on, injected so that the tests move time by hand.
export interface Clock {
  now(): number;
  setTimer(ms: number, fire: () => void): unknown;
  clearTimer(timer: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (ms, fire) => setTimeout(fire, ms),
  clearTimer: (timer) => clearTimeout(timer as NodeJS.Timeout),
};
