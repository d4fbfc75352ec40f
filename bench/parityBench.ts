// Section `parity` of the benchmark: what redundancy costs (src/vault/redundancy). Reed-Solomon
// encoding (a whole parity file: stripes, CRC-32 table, SHA-256) and repair (every stripe with 3
// rebuilt blocks) of a 16 MiB segment against a plain Buffer copy of the same bytes in the same
// run; scrub throughput over a vault of a few hundred MB of segments; and the mirror's extra cost
// per append (VaultWriter.append with and without the mirror, alone and with the fdatasync the
// hook does).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createIdentity } from '../src/vault/identity.js';
import { vaultKeysFromRoot } from '../src/vault/keys.js';
import { RecordType, genesisHash } from '../src/vault/format.js';
import { RecordSealer, type SealedRecord } from '../src/vault/sealer.js';
import { VaultWriter } from '../src/vault/writer.js';
import { segmentName, segmentsDir } from '../src/vault/segments.js';
import { buildParityFile, checkWithParity, geometry, parseParityFile, protectFile } from '../src/vault/redundancy/parity.js';
import { scrubVault } from '../src/vault/redundancy/scrub.js';
import { maxSegmentBytes } from '../src/vault/redundancy/protectedRead.js';
import { progress } from './setup.js';
import { dist, median, now, msSince, type Dist } from './stats.js';

export interface ParitySection {
  readonly fileBytes: number;
  /** MB/s (10^6 bytes of protected file per second), median of the runs. */
  readonly encodeMBps: number;
  readonly repairMBps: number;
  readonly copyMBps: number;
  readonly encodeVsCopy: number;
  readonly repairVsCopy: number;
  readonly scrub: { readonly bytes: number; readonly files: number; readonly ms: number; readonly MBps: number };
  readonly mirror: {
    readonly appends: number;
    readonly recordBytes: number;
    readonly appendWithout: Dist;
    readonly appendWith: Dist;
    readonly syncedWithout: Dist;
    readonly syncedWith: Dist;
    /** p50 and mean extra µs per append (append alone), and with the fdatasync. */
    readonly extraP50Us: number;
    readonly extraMeanUs: number;
    readonly extraSyncedP50Us: number;
  };
}

const MB = 1e6;

function rate(bytes: number, ms: number): number {
  return bytes / MB / (ms / 1000);
}

export async function runParitySection(workDir: string, runs: number, scrubMB: number): Promise<ParitySection> {
  const D = 16 * 1024 * 1024;
  const data = crypto.randomBytes(D);
  const encodeMs: number[] = [];
  const repairMs: number[] = [];
  const copyMs: number[] = [];
  progress(`parity: encode/repair of a ${D} byte segment, ${runs + 1} runs`);
  const g = geometry(D);
  for (let i = 0; i <= runs; i++) {
    let t = now();
    const copy = Buffer.allocUnsafe(D);
    data.copy(copy);
    const c = msSince(t);
    t = now();
    const pf = await buildParityFile(data);
    const e = msSince(t);
    // Three blocks of every stripe damaged (the most that is repaired): every stripe is rebuilt.
    const bad = Buffer.from(data);
    for (let r = 0; r < g.rows; r++) for (const s of [0, 11, 23]) bad.fill(0, s * g.shardBytes + r * 4096, Math.min(D, s * g.shardBytes + r * 4096 + 16));
    const parsed = parseParityFile(pf, D);
    if (!parsed) throw new Error('the parity file just made does not parse');
    t = now();
    const check = await checkWithParity(bad, parsed);
    const rp = msSince(t);
    if (!check.verified || !check.data.equals(data)) throw new Error('the repair did not give back the data');
    if (i > 0) {
      // The first run warms up.
      encodeMs.push(e);
      repairMs.push(rp);
      copyMs.push(c);
    }
  }
  const copyMBps = rate(D, median(copyMs));
  const encodeMBps = rate(D, median(encodeMs));
  const repairMBps = rate(D, median(repairMs));

  // Scrub over a vault of `scrubMB` of 16 MiB segments, each with its parity.
  const vault = path.join(workDir, 'parity-vault');
  fs.mkdirSync(segmentsDir(vault), { recursive: true });
  createIdentity(vault, vaultKeysFromRoot(crypto.randomBytes(32)), null);
  const files = Math.max(2, Math.round((scrubMB * MB) / D));
  progress(`parity: making a ${files} × 16 MiB vault for scrub`);
  for (let i = 0; i < files; i++) {
    const file = path.join(segmentsDir(vault), segmentName(1, BigInt(1 + i * 1000)));
    fs.writeFileSync(file, crypto.randomBytes(D));
    if (i < files - 1) await protectFile(file, maxSegmentBytes());
  }
  progress('parity: scrub');
  const t = now();
  const sr = await scrubVault(vault, { repair: false });
  const scrubMs = msSince(t);
  fs.rmSync(vault, { recursive: true, force: true });

  // The mirror's cost per append, interleaved in rounds so that the disk's moods hit both alike.
  const appends = 2000;
  const recordBytes = 1024;
  const sample = async (mirror: boolean, synced: boolean): Promise<number[]> => {
    const dir = fs.mkdtempSync(path.join(workDir, 'mirror-'));
    const keys = vaultKeysFromRoot(crypto.randomBytes(32));
    const id = createIdentity(dir, keys, null);
    const vid = Buffer.from(id.vaultId, 'hex');
    const sealer = new RecordSealer(keys.record, vid, { lastSeq: 0n, lastHash: genesisHash(vid), generation: 0 });
    const records: SealedRecord[] = [];
    for (let i = 0; i < appends; i++) {
      records.push(sealer.seal({ type: RecordType.Writes, generation: 1, dataVersion: i + 1, supersedes: 0n, payload: crypto.randomBytes(recordBytes) }));
    }
    const w = VaultWriter.open(dir, keys, { redundancy: mirror });
    const out: number[] = [];
    try {
      for (const r of records) {
        const s = now();
        w.append(r);
        if (synced) w.sync();
        out.push(msSince(s));
      }
    } finally {
      w.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
    return out;
  };
  progress(`parity: mirror cost, ${appends} appends per mode and round`);
  const acc = { aw: [] as number[], an: [] as number[], sw: [] as number[], sn: [] as number[] };
  for (let round = 0; round < Math.max(2, runs); round++) {
    acc.an.push(...(await sample(false, false)));
    acc.aw.push(...(await sample(true, false)));
    acc.sw.push(...(await sample(true, true)));
    acc.sn.push(...(await sample(false, true)));
  }
  const appendWithout = dist(acc.an);
  const appendWith = dist(acc.aw);
  const syncedWithout = dist(acc.sn);
  const syncedWith = dist(acc.sw);
  return {
    fileBytes: D,
    encodeMBps,
    repairMBps,
    copyMBps,
    encodeVsCopy: copyMBps / encodeMBps,
    repairVsCopy: copyMBps / repairMBps,
    scrub: { bytes: sr.bytes, files: sr.checkedFiles, ms: scrubMs, MBps: rate(sr.bytes, scrubMs) },
    mirror: {
      appends,
      recordBytes,
      appendWithout,
      appendWith,
      syncedWithout,
      syncedWith,
      extraP50Us: (appendWith.p50Ms - appendWithout.p50Ms) * 1000,
      extraMeanUs: (appendWith.meanMs - appendWithout.meanMs) * 1000,
      extraSyncedP50Us: (syncedWith.p50Ms - syncedWithout.p50Ms) * 1000,
    },
  };
}
