#!/usr/bin/env node
// lnbackup-cln: the Core Lightning plugin executable. lightningd starts it with its working
// directory set to <lightning-dir>/<network>; it speaks JSON-RPC on stdin/stdout (stdout carries
// protocol messages only) and exits when lightningd closes its stdin.
import { JsonObjectSplitter } from '../util/jsonFraming.js';
import { LnbackupPlugin } from './plugin.js';
import type { JsonRpcRequest } from './protocol.js';

const sleeper = new Int32Array(new SharedArrayBuffer(4));

const plugin = new LnbackupPlugin(process.cwd(), {
  send: (text) => process.stdout.write(text),
  sleep: (ms) => Atomics.wait(sleeper, 0, 0, ms),
});

const splitter = new JsonObjectSplitter();

process.stdin.on('data', (chunk: Buffer) => {
  let messages: string[];
  try {
    messages = splitter.push(chunk);
  } catch (err) {
    plugin.log('broken', `unreadable input from lightningd: ${(err as Error).message}; exiting`);
    shutdown(1);
    return;
  }
  for (const text of messages) {
    let req: JsonRpcRequest;
    try {
      req = JSON.parse(text) as JsonRpcRequest;
    } catch {
      plugin.log('broken', 'a message from lightningd was not valid JSON; ignoring it');
      continue;
    }
    plugin.handle(req);
  }
});

process.stdin.on('end', () => shutdown(0));
// EPIPE: lightningd is gone while we answered. Every acknowledged record is already durable;
// release the vault and leave.
process.stdout.on('error', () => {
  plugin.close();
  process.exit(0);
});
process.on('SIGTERM', () => shutdown(0));

function shutdown(code: number): void {
  plugin.close();
  process.exitCode = code;
  process.stdin.pause();
}
