// Progress for long operations: a one-line bar on a terminal (stderr), nothing in logs or pipes,
// nothing with --json.
import readline from 'node:readline';

export type ProgressFn = (done: number, total: number) => void;

export function progressBar(label: string, enabled: boolean): { update: ProgressFn; done: () => void } {
  const stream = process.stderr;
  if (!enabled || !stream.isTTY) return { update: () => {}, done: () => {} };
  let last = 0;
  let drawn = false;
  const draw = (done: number, total: number): void => {
    const frac = total > 0 ? Math.min(1, done / total) : 1;
    const width = 30;
    const fill = Math.round(frac * width);
    readline.cursorTo(stream, 0);
    stream.write(
      `${label} [${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${formatBytes(done)}/${formatBytes(total)}`,
    );
    readline.clearLine(stream, 1);
    drawn = true;
  };
  return {
    update: (done, total) => {
      const now = Date.now();
      if (now - last < 100 && done < total) return;
      last = now;
      draw(done, total);
    },
    done: () => {
      if (drawn) stream.write('\n');
    },
  };
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}
