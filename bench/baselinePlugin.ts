// The benchmark's "bare append + fsync" db_write plugin: answers getmanifest and init, and for each
// db_write appends its params as one JSON line to BASELINE_PLUGIN_FILE (default ./baseline.log in
// its working directory), fsyncs, then answers continue. The hot path is synchronous: no awaits.
import fs from 'node:fs';
import path from 'node:path';
import { JsonObjectSplitter } from '../src/util/jsonFraming.js';

interface Request {
  id?: unknown;
  method?: string;
  params?: unknown;
}

const MANIFEST = { options: [], rpcmethods: [], hooks: [{ name: 'db_write' }], dynamic: false };

const file = path.resolve(process.env.BASELINE_PLUGIN_FILE ?? 'baseline.log');
const isNew = !fs.existsSync(file);
const fd = fs.openSync(file, 'a');
if (isNew) {
  const dirFd = fs.openSync(path.dirname(file), 'r');
  fs.fsyncSync(dirFd);
  fs.closeSync(dirFd);
}

function reply(id: unknown, result: unknown): void {
  process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id, result }) + '\n\n');
}

function handle(req: Request): void {
  if (req.id === undefined) return; // a notification
  switch (req.method) {
    case 'db_write':
      fs.writeSync(fd, JSON.stringify(req.params) + '\n');
      fs.fsyncSync(fd);
      return reply(req.id, { result: 'continue' });
    case 'getmanifest':
      return reply(req.id, MANIFEST);
    case 'init':
      return reply(req.id, {});
    default:
      process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: req.id, error: { code: -32601, message: `unknown method ${req.method}` } }) + '\n\n');
  }
}

const splitter = new JsonObjectSplitter();
process.stdin.on('data', (chunk: Buffer) => {
  for (const text of splitter.push(chunk)) handle(JSON.parse(text) as Request);
});
process.stdin.on('end', () => {
  fs.closeSync(fd);
  process.exit(0);
});
