// `lnbackup doctor --lightning-dir D --network N [--conf F] [--json]`: checks the node's whole
// backup setup (src/doctor/nodeChecks.ts) and prints each check with what to do about it.
// Exit code 0 when everything is fine, 3 when something needs attention, 1 when it could not run.
import readline from 'node:readline';
import type { Command } from 'commander';
import { runDoctor, type Check } from '../doctor/nodeChecks.js';
import { EXIT_CHECK_FAILED, emit } from './output.js';
import { jsonOption, run } from './runner.js';

interface DoctorFlags {
  lightningDir: string;
  network: string;
  conf?: string;
  json?: boolean;
}

const MARK: Record<Check['status'], string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

function checkLines(c: Check): string[] {
  return [`${MARK[c.status]}  ${c.check}: ${c.detail}`, ...(c.fix && c.status !== 'ok' ? [`      fix: ${c.fix}`] : [])];
}

/** On a terminal, the check under way on stderr (overwritten by the next); nothing in logs. */
function showCheck(enabled: boolean): (name: string) => void {
  const stream = process.stderr;
  if (!enabled || !stream.isTTY) return () => {};
  return (name) => {
    readline.cursorTo(stream, 0);
    stream.write(`checking ${name}…`);
    readline.clearLine(stream, 1);
  };
}

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description(
      "check a node's whole backup setup (lightningd's config, lnbackup.json, key, vault, database, servers, replicas, retention, the running plugin) and say what to fix",
    )
    .requiredOption('--lightning-dir <dir>', "lightningd's base directory (e.g. ~/.lightning)")
    .requiredOption('--network <net>', 'bitcoin, testnet, signet or regtest')
    .option(
      '--conf <file>',
      "lightningd's config file, when the node is started with --conf (default: <lightning-dir>/config and <lightning-dir>/<network>/config)",
    )
    .addOption(jsonOption())
    .addHelpText(
      'after',
      `
Read-only: nothing is written, on the node or on its servers (which are only asked what they hold).
Exit code 0: everything is fine. 3: something needs attention (each WARN and FAIL says what to do).
1: the checks could not run. 2: usage error.`,
    )
    .action((o: DoctorFlags) =>
      run(o, async () => {
        const progress = showCheck(!o.json);
        const report = await runDoctor({ lightningDir: o.lightningDir, network: o.network, conf: o.conf, onCheck: progress });
        if (!o.json && process.stderr.isTTY) {
          readline.clearLine(process.stderr, 0);
          readline.cursorTo(process.stderr, 0);
        }
        emit(o, report, () => [
          ...report.checks.flatMap(checkLines),
          report.ok
            ? 'doctor: everything is fine'
            : `doctor: ${report.checks.filter((c) => c.status === 'warn' || c.status === 'fail').length} thing(s) need attention`,
        ]);
        return report.ok ? 0 : EXIT_CHECK_FAILED;
      }),
    );
}
