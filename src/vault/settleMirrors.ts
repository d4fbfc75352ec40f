// Repair of mirror-protected segments decided by the records themselves (docs/FORMAT.md, "The
// active segment's mirror"): each such segment is read with the key, record by record; the
// segment's bytes stay wherever they authenticate as the expected record (AEAD, sequence, hash
// chain, generation), the mirror's are taken only where the segment's fail and the mirror's
// authenticate, and a mirror that disagrees with bytes that authenticate is reported as stale.
// restore and verify run it on what repairVaultInMemory found; the writer's open does the same
// while it finds the tail (vault/writer.ts).
import { CorruptRecordError } from './errors.js';
import type { VaultIdentity } from './identity.js';
import type { VaultKeys } from './keys.js';
import { VaultReader, type MirrorFinding } from './reader.js';
import { describeRanges } from './redundancy/keeper.js';
import type { FileReport, VaultRepair } from './redundancy/protectedRead.js';
import { listSegments } from './segments.js';

/** Reads every generation that holds a mirror-protected segment of `repair` and returns what each segment's records decided. */
export function settleMirrors(vaultDir: string, identity: VaultIdentity, keys: VaultKeys, repair: VaultRepair): MirrorFinding[] {
  const mirrors = repair.mirrors;
  if (!mirrors || mirrors.size === 0) return [];
  const segments = listSegments(vaultDir);
  const generations = new Set(segments.filter((s) => mirrors.has(s.path)).map((s) => s.generation));
  const findings: MirrorFinding[] = [];
  for (const generation of generations) {
    const reader = new VaultReader(identity, keys, vaultDir, { segments: segments.filter((s) => s.generation === generation), repair });
    try {
      for (const record of reader.records()) void record;
    } catch (err) {
      // Damage before or inside the segment: what was decided up to it stands, the reader reports the rest.
      if (!(err instanceof CorruptRecordError)) throw err;
    }
    findings.push(...reader.mirrorFindings);
  }
  return findings;
}

/** One line per decision that changed something or found the mirror stale. */
export function describeMirrorFinding(f: MirrorFinding): string[] {
  const lines: string[] = [];
  if (f.repaired.length > 0) {
    lines.push(
      `repaired in memory: ${f.segment.path}: ${describeRanges(f.repaired)} failed authentication and are rebuilt from its mirror (run lnbackup scrub --repair to fix the file)`,
    );
  }
  if (f.stale.length > 0) {
    lines.push(
      `stale mirror: ${f.segment.path}.mirror disagrees with ${describeRanges(f.stale)} of the segment, whose records authenticate: the segment's bytes are kept (the plugin or lnbackup scrub --repair writes the mirror again)`,
    );
  }
  return lines;
}

/**
 * `repair` with its mirrors decided by the records: the repaired segments' contents join the
 * overlay (and the repaired files), and nothing is left for a reader to decide again.
 */
export function settleVaultRepair(vaultDir: string, identity: VaultIdentity, keys: VaultKeys, repair: VaultRepair): { repair: VaultRepair; notices: string[] } {
  const findings = settleMirrors(vaultDir, identity, keys, repair);
  if (findings.length === 0) return { repair, notices: [] };
  const overlay = new Map(repair.overlay);
  const byPath = new Map(findings.map((f) => [f.segment.path, f]));
  const files: FileReport[] = repair.files.map((file) => {
    const f = byPath.get(file.file);
    if (!f) return file;
    if (f.repaired.length > 0) overlay.set(file.file, f.data);
    const notes = [...file.notes, ...describeMirrorFinding(f)];
    return {
      ...file,
      status: f.repaired.length > 0 ? 'repaired' : file.status,
      repaired: f.repaired,
      protectionDamaged: file.protectionDamaged || f.stale.length > 0,
      notes,
    };
  });
  const settled: VaultRepair = {
    ...repair,
    overlay,
    mirrors: new Map(),
    files,
    repaired: files.filter((f) => f.status === 'repaired'),
    unrecoverable: files.filter((f) => f.status === 'damaged'),
  };
  return { repair: settled, notices: findings.flatMap((f) => (f.stale.length > 0 ? describeMirrorFinding({ ...f, repaired: [] }) : [])) };
}
