// How commands report: human text or one JSON object on stdout (--json), errors on stderr with
// what to do next, and exit codes scripts can rely on.
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
/** verify found a bad record; restore or init refused to lose data. */
export const EXIT_CHECK_FAILED = 3;

export class UsageError extends Error {}

export interface OutputFlags {
  json?: boolean;
}

/** Prints the result: JSON when asked (bigints as strings), else the human lines. */
export function emit(flags: OutputFlags, value: unknown, human: () => string[]): void {
  if (flags.json) {
    process.stdout.write(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2) + '\n');
  } else {
    for (const line of human()) process.stdout.write(line + '\n');
  }
}

export function reportError(flags: OutputFlags, err: unknown): number {
  const message = err instanceof Error ? err.message : String(err);
  const code = err instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
  if (flags.json) process.stdout.write(JSON.stringify({ ok: false, error: message }) + '\n');
  process.stderr.write(`lnbackup: ${message}\n`);
  return code;
}
