// What every command shares: the --json option, and running a command's body so that its result
// becomes the exit code and any error is reported once (text, or JSON with --json).
import { Option } from 'commander';
import { reportError, type OutputFlags } from './output.js';

export const jsonOption = (): Option => new Option('--json', 'print one JSON object on stdout instead of text');

export function run(flags: OutputFlags, body: () => number | void | Promise<number | void>): Promise<void> {
  return Promise.resolve()
    .then(body)
    .then(
      (code) => {
        process.exitCode = code ?? 0;
      },
      (err: unknown) => {
        process.exitCode = reportError(flags, err);
      },
    );
}
