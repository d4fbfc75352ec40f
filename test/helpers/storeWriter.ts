// A child process for the server-store crash tests: opens a store (files or PostgreSQL), appends
// real sealed records to one vault without pause (several appends in flight), and prints
// "<seq> <sha256 of the record's bytes>" on stdout for every record once its append resolved,
// that is once the store acknowledged it as durable. The test kills it with SIGKILL at random
// moments and checks that every printed record is in the store. Run without arguments (as the
// test runner's file discovery does) it does nothing.
import crypto from 'node:crypto';
import { genesisHash, RecordType } from '../../src/vault/format.js';
import { vaultKeysFromRoot } from '../../src/vault/keys.js';
import { RecordSealer } from '../../src/vault/sealer.js';
import { openStore } from '../../src/server/storage/openStore.js';
import type { StoreRecord } from '../../src/server/storage/store.js';

export interface StoreWriterSpec {
  readonly dataDir: string;
  readonly storage?: string;
  readonly vaultId: string;
  /** The vault's root key (hex): the records are sealed as the node would seal them. */
  readonly rootKey: string;
  /** Appends in flight at once. */
  readonly inFlight: number;
  /** Stop (and exit 0) after this sequence number; absent: run until killed. */
  readonly untilSeq?: string;
}

async function main(spec: StoreWriterSpec): Promise<void> {
  const keys = vaultKeysFromRoot(Buffer.from(spec.rootKey, 'hex'));
  const vaultIdBytes = Buffer.from(spec.vaultId, 'hex');
  const store = await openStore({ dataDir: spec.dataDir, storage: spec.storage }, (m) => process.stderr.write(`notice: ${m}\n`));
  const vault = await store.getVault(spec.vaultId);
  if (!vault) throw new Error(`no vault ${spec.vaultId}`);
  const generation = Math.max(1, vault.lastGeneration);
  const sealer = new RecordSealer(keys.record, vaultIdBytes, {
    lastSeq: vault.lastSeq,
    lastHash: vault.lastHash ?? genesisHash(vaultIdBytes),
    generation,
  });
  const until = spec.untilSeq === undefined ? null : BigInt(spec.untilSeq);
  process.stdout.write(`start ${vault.lastSeq}\n`);
  const inFlight = new Set<Promise<void>>();
  for (;;) {
    if (until !== null && sealer.lastSeq >= until) break;
    const records: StoreRecord[] = [];
    const n = crypto.randomInt(1, 5);
    for (let i = 0; i < n; i++) {
      const payload = crypto.randomBytes(crypto.randomInt(0, 3000));
      const s = sealer.seal({ type: RecordType.Writes, generation, dataVersion: Number(sealer.lastSeq % 0xffffffffn), supersedes: 0n, payload });
      records.push({ seq: s.seq, generation: s.generation, bytes: s.bytes });
    }
    const p = store.append(spec.vaultId, records).then(() => {
      // Pipes are written synchronously on Linux: once this returns, the parent can read it.
      process.stdout.write(records.map((r) => `${r.seq} ${crypto.createHash('sha256').update(r.bytes).digest('hex')}\n`).join(''));
      inFlight.delete(p);
    });
    inFlight.add(p);
    if (inFlight.size >= spec.inFlight) await Promise.race(inFlight);
  }
  await Promise.all(inFlight);
  await store.close();
}

const arg = process.argv[2];
if (arg !== undefined) {
  main(JSON.parse(arg) as StoreWriterSpec).catch((err: unknown) => {
    process.stderr.write(`storeWriter: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
