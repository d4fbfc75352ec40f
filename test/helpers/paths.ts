// Where the tests find the repository's build output and its test data (testdata/: traces, key fixtures).
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import fs from 'node:fs';
import os from 'node:os';

/** The repository root (this file compiles to dist/test/helpers/paths.js). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The recorded traces and fixtures (testdata/README.md). */
export const testdataDir = path.join(repoRoot, 'testdata');

export function tracePath(name: string): string {
  return path.join(testdataDir, 'traces', name);
}

/** The compiled entry points that tests run as real child processes. */
export const pluginEntry = path.join(repoRoot, 'dist/src/cln/main.js');
export const cliEntry = path.join(repoRoot, 'dist/src/cli/main.js');
export const simulatorEntry = path.join(repoRoot, 'dist/src/simulator/main.js');

/** A fresh temporary directory, removed when the process exits unless LNBACKUP_KEEP_TMP is set. */
export function tempDir(prefix: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `lnbackup-${prefix}-`));
  if (!process.env.LNBACKUP_KEEP_TMP) {
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  }
  return dir;
}
