// A db_write plugin for the profile section, run by the simulator like any plugin.
//   BENCH_PROBE_MODE=null      answers every db_write `continue` at once: the stdio round-trip floor.
//   BENCH_PROBE_MODE=lnbackup  the real LnbackupPlugin, driven exactly as src/cln/main.ts drives it
//                              (same JsonObjectSplitter, JSON.parse, handle, stdout.write), plus a timer.
// For each db_write it measures the time spent inside this process, from the stdin 'data' event that
// completes the request to the reply written, and at exit writes the distribution as JSON to
// BENCH_PROBE_OUT. Hook latency (seen by the simulator) minus this is the transport's share.
import fs from 'node:fs';
import { LnbackupPlugin } from '../src/cln/plugin.js';
import type { JsonRpcRequest } from '../src/cln/protocol.js';
import { JsonObjectSplitter } from '../src/util/jsonFraming.js';
import { dist } from './stats.js';

const mode = process.env.BENCH_PROBE_MODE ?? 'null';
const out = process.env.BENCH_PROBE_OUT;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
const send = (text: string): void => {
  process.stdout.write(text);
};
const plugin = new LnbackupPlugin(process.cwd(), { send, sleep: (ms) => Atomics.wait(sleeper, 0, 0, ms) });
const samples: number[] = [];
const splitter = new JsonObjectSplitter();

function handleNull(req: JsonRpcRequest): void {
  if (req.method === 'db_write' && req.id !== undefined) {
    send(JSON.stringify({ jsonrpc: '2.0', id: req.id, result: { result: 'continue' } }) + '\n\n');
  } else {
    plugin.handle(req); // getmanifest, init
  }
}

process.stdin.on('data', (chunk: Buffer) => {
  const started = performance.now();
  for (const text of splitter.push(chunk)) {
    const req = JSON.parse(text) as JsonRpcRequest;
    if (mode === 'null') handleNull(req);
    else plugin.handle(req);
    if (req.method === 'db_write') samples.push(performance.now() - started);
  }
});

process.stdin.on('end', () => {
  plugin.close();
  if (out) fs.writeFileSync(out, JSON.stringify({ mode, inPlugin: dist(samples) }));
  process.exit(0);
});
