#!/usr/bin/env node
// lnbackup-cln: the Core Lightning plugin executable. lightningd starts it with its working
// directory set to <lightning-dir>/<network>; it speaks JSON-RPC on stdin/stdout (stdout carries
// protocol messages only) and exits when lightningd closes its stdin.
import { JsonObjectSplitter } from '../util/jsonFraming.js';
import { LnbackupPlugin } from './plugin.js';
import type { JsonRpcRequest } from './pluginProtocol.js';

const plugin = new LnbackupPlugin(process.cwd(), {
  send: (text) => process.stdout.write(text),
});

/** db_write calls are handled one at a time, in order; other requests (status) are answered at once. */
let dbWrites: Promise<void> = Promise.resolve();

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
    if (req.method === 'db_write') dbWrites = dbWrites.then(() => plugin.handle(req)).catch(crashed);
    else plugin.handle(req).catch(crashed);
  }
});

process.stdin.on('end', () => shutdown(0));
// EPIPE: lightningd is gone while we answered. Every acknowledged record is already durable;
// release the vault and leave.
process.stdout.on('error', () => {
  void plugin.close().finally(() => process.exit(0));
});
process.on('SIGTERM', () => shutdown(0));

/** A bug, not an I/O failure (those are handled inside): say so and stop before anything else is acknowledged. */
function crashed(err: unknown): void {
  process.stderr.write(`lnbackup-cln: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(70);
}

/** Longest a shutdown may take: close() gives servers a 5 s grace to ack what is in flight. */
const SHUTDOWN_LIMIT_MS = 15_000;

function shutdown(code: number): void {
  process.exitCode = code;
  process.stdin.pause();
  // lightningd is gone or asks us to stop: nobody waits for a reply any more. Close now (an opening
  // that waits for servers is given up; records in flight get the grace period), then leave.
  setTimeout(() => process.exit(code), SHUTDOWN_LIMIT_MS).unref();
  void plugin.close().finally(() => process.exit(code));
}
