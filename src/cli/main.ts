#!/usr/bin/env node
// The `lnbackup` command: the program, its help and exit codes; each command is in its own file
// (<name>Command.ts, registered below). Every command takes --json (one JSON object on stdout) and
// shows progress on a terminal for long work.
import { Command, CommanderError } from 'commander';
import { registerDemoCommand } from './demoCommand.js';
import { registerDestinationCommands } from './destinationCommands.js';
import { registerDoctorCommand } from './doctorCommand.js';
import { registerGenerationsCommand } from './generationsCommand.js';
import { registerInitCommand } from './initCommand.js';
import { reportError, EXIT_USAGE } from './output.js';
import { registerPostgresCommand } from './postgresCommand.js';
import { registerRecoverCommand } from './recoverCommand.js';
import { registerRestoreCommand } from './restoreCommand.js';
import { registerRetentionCommand } from './retentionCommand.js';
import { registerScrubCommand } from './scrubCommand.js';
import { registerServerCommands } from './serverCommands.js';
import { registerStatusCommand } from './statusCommand.js';
import { registerVerifyCommand } from './verifyCommand.js';

// The server flushes every vault file a round touched in parallel on libuv's thread pool (4
// threads unless set): give it more before anything uses the pool.
if (process.argv[2] === 'server' && process.env.UV_THREADPOOL_SIZE === undefined) process.env.UV_THREADPOOL_SIZE = '64';

const program = new Command();
// Usage errors found by commander (a missing option, an unknown one) become exit code 2, and a
// JSON answer with --json, like the usage errors the commands find themselves.
program.exitOverride();
program
  .name('lnbackup')
  .description('Continuous, zero-loss, encrypted backup for Core Lightning nodes.')
  .version('0.1.0')
  .enablePositionalOptions()
  .showHelpAfterError()
  .addHelpText(
    'after',
    `
Quick start:
  lnbackup init --lightning-dir ~/.lightning --network bitcoin --vault /mnt/backup/node1
  # add to lightningd's config:  plugin=<the path init prints>
  lnbackup status --vault /mnt/backup/node1 --hsm-secret ~/.lightning/bitcoin/hsm_secret
  lnbackup doctor --lightning-dir ~/.lightning --network bitcoin                # is everything set up right?
  lnbackup restore --vault /mnt/backup/node1 --hsm-secret <hsm_secret> --to lightningd.sqlite3

Off the machine:
  lnbackup server --data /srv/lnbackup --listen 0.0.0.0:9736 --allow <node key>   # on the backup host
  lnbackup destination key --hsm-secret ~/.lightning/bitcoin/hsm_secret         # the node key (before init too)
  lnbackup destination add --lightning-dir ~/.lightning --network bitcoin --remote lnbackup://<server key>@host:9736
  lnbackup restore --from lnbackup://<server key>@host:9736 --hsm-secret <hsm_secret> --to lightningd.sqlite3

Exit codes: 0 ok, 1 error, 2 usage error, 3 a check failed or something needs attention (verify found a bad record, doctor or postgres check found a problem, restore or init refused to lose data)`,
  );

registerInitCommand(program);
registerRestoreCommand(program);
registerGenerationsCommand(program);
registerVerifyCommand(program);
registerStatusCommand(program);
registerDemoCommand(program);
registerServerCommands(program);
registerScrubCommand(program);
registerDestinationCommands(program);
registerRetentionCommand(program);
registerDoctorCommand(program);
registerPostgresCommand(program);
registerRecoverCommand(program);

// A reader that stops early (`lnbackup --help | head`) closes the pipe: that ends the output, not in a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
  });
}

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CommanderError) {
    // commander has printed the message (or the help) already.
    const usage = err.exitCode !== 0;
    if (usage && process.argv.includes('--json')) process.stdout.write(JSON.stringify({ ok: false, error: err.message.replace(/^error: /, '') }) + '\n');
    process.exitCode = usage ? EXIT_USAGE : 0;
    return;
  }
  process.exitCode = reportError({}, err);
});
