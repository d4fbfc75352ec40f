// A child process for the server-store crash tests of page packs: opens a store (files or
// PostgreSQL) and stores packs into one vault without pause, printing "<name>" on stdout once a
// pack's putPack resolved (durable). A pack's size and bytes follow from its name alone
// (packContents), so the test, after killing this process with SIGKILL at a random moment, can
// tell a whole pack from a part of one. Run without arguments (as the test runner's file
// discovery does) it does nothing.
import crypto from 'node:crypto';
import { openStore } from '../../src/server/storage/openStore.js';

export interface PackWriterSpec {
  readonly dataDir: string;
  readonly storage?: string;
  readonly vaultId: string;
  /** Largest pack made (bytes). */
  readonly maxBytes: number;
}

/** The bytes of the pack of that name: 1 byte to `maxBytes`, a keystream keyed by the name. */
export function packContents(name: string, maxBytes: number): Buffer {
  const key = crypto.createHash('sha256').update(name).digest();
  const size = 1 + (key.readUInt32BE(16) % maxBytes);
  const cipher = crypto.createCipheriv('aes-128-ctr', key.subarray(0, 16), Buffer.alloc(16));
  return cipher.update(Buffer.alloc(size));
}

export function randomPackName(): string {
  return `p-${crypto.randomBytes(16).toString('hex')}.pack`;
}

async function main(spec: PackWriterSpec): Promise<void> {
  const store = await openStore({ dataDir: spec.dataDir, storage: spec.storage }, (m) => process.stderr.write(`notice: ${m}\n`));
  process.stdout.write('start\n');
  for (;;) {
    const name = randomPackName();
    await store.putPack(spec.vaultId, name, packContents(name, spec.maxBytes));
    // Pipes are written synchronously on Linux: once this returns, the parent can read it.
    process.stdout.write(`${name}\n`);
  }
}

const arg = process.argv[2];
if (arg !== undefined) {
  main(JSON.parse(arg) as PackWriterSpec).catch((err: unknown) => {
    process.stderr.write(`packWriter: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
