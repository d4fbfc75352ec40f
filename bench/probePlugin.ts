// A db_write plugin for the profile section, run by the simulator like any plugin.
//   BENCH_PROBE_MODE=null      answers every db_write `continue` at once: the stdio round-trip floor.
//   BENCH_PROBE_MODE=lnbackup  the real LnbackupPlugin, driven exactly as src/cln/main.ts drives it
//                              (same JsonObjectSplitter, JSON.parse, db_write calls chained one at a
//                              time through the async handle, stdout.write), plus a timer.
// For each db_write it measures the time spent inside this process, from the stdin 'data' event that
// completes the request to the reply written (handle resolved), and at exit writes the distribution
// as JSON to BENCH_PROBE_OUT. Hook latency (seen by the simulator) minus this is the transport's share.
import fs from 'node:fs';
import { LnbackupPlugin } from '../src/cln/plugin.js';
import type { JsonRpcRequest } from '../src/cln/pluginProtocol.js';
import { JsonObjectSplitter } from '../src/util/jsonFraming.js';
import { dist } from './stats.js';

const mode = process.env.BENCH_PROBE_MODE ?? 'null';
const out = process.env.BENCH_PROBE_OUT;
const send = (text: string): void => {
  process.stdout.write(text);
};
const plugin = new LnbackupPlugin(process.cwd(), { send });
const samples: number[] = [];
const splitter = new JsonObjectSplitter();
/** db_write calls one at a time, in order, as src/cln/main.ts does. */
let dbWrites: Promise<void> = Promise.resolve();

function crashed(err: unknown): void {
  process.stderr.write(`probePlugin: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(70);
}

process.stdin.on('data', (chunk: Buffer) => {
  const started = performance.now();
  for (const text of splitter.push(chunk)) {
    const req = JSON.parse(text) as JsonRpcRequest;
    if (req.method !== 'db_write') {
      plugin.handle(req).catch(crashed); // getmanifest, init
    } else if (mode === 'null') {
      if (req.id !== undefined) send(JSON.stringify({ jsonrpc: '2.0', id: req.id, result: { result: 'continue' } }) + '\n\n');
      samples.push(performance.now() - started);
    } else {
      dbWrites = dbWrites
        .then(() => plugin.handle(req))
        .then(() => void samples.push(performance.now() - started))
        .catch(crashed);
    }
  }
});

process.stdin.on('end', () => {
  void dbWrites
    .then(() => plugin.close())
    .then(() => {
      if (out) fs.writeFileSync(out, JSON.stringify({ mode, inPlugin: dist(samples) }));
      process.exit(0);
    })
    .catch(crashed);
});
