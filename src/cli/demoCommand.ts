// `lnbackup demo`: the whole job on embedded defaults (demo.ts).
import type { Command } from 'commander';
import { runDemo } from './demo.js';
import { jsonOption, run } from './runner.js';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description(
      'the whole job on embedded defaults: a simulated node replays a recorded trace into a local vault and an embedded lnbackup server, crashes, restarts, and is restored (from the vault, then from the server alone) and verified',
    )
    .option('--trace <file>', 'the db_write trace to replay (default: the recorded node1 trace in testdata/traces)')
    .option('--dir <dir>', 'work directory (default: a new temporary one)')
    .option(
      '--wait <how>',
      "how the simulated lightningd waits for each answer: 'spin' busy-polls as lightningd does (a core spins), 'idle' waits on its event loop",
      'spin',
    )
    .addOption(jsonOption())
    .action((o: { trace?: string; dir?: string; wait?: string; json?: boolean }) => run(o, () => runDemo(o)));
}
