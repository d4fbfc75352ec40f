// What lightningd's configuration files say about plugins and the wallet, read the way lightningd
// reads them (lightningd/options.c): `<lightning-dir>/config`, then `<lightning-dir>/<network>/config`,
// or the file given with `--conf`; `key=value` lines, `#` comments, `include <file>` relative to the
// including file. Only what `lnbackup doctor` judges is kept: plugin lines, plugin-dir, disable-plugin
// and wallet. Every file is read with a size limit; includes are followed to a bounded depth.
import fs from 'node:fs';
import path from 'node:path';

/** A configuration file is a few KiB; anything past this is not one. */
const MAX_CONFIG_FILE_BYTES = 1024 * 1024;
const MAX_INCLUDE_DEPTH = 8;

export interface ConfigLine {
  /** The option's name (plugin, important-plugin, plugin-dir, disable-plugin, wallet). */
  readonly key: string;
  readonly value: string;
  /** Where it was written, for messages: file:line. */
  readonly at: string;
}

export interface LightningdConfig {
  /** The files read, in order (those that exist). */
  readonly files: readonly string[];
  readonly lines: readonly ConfigLine[];
  /** Problems met while reading (unreadable, too large, include loops). */
  readonly problems: readonly string[];
}

const KEPT = new Set(['plugin', 'important-plugin', 'plugin-dir', 'disable-plugin', 'wallet']);

/** Reads lightningd's configuration for this node (or the `--conf` file instead, as lightningd does). */
export function readLightningdConfig(lightningDir: string, network: string, confFile?: string): LightningdConfig {
  const files: string[] = [];
  const lines: ConfigLine[] = [];
  const problems: string[] = [];
  const readOne = (file: string, depth: number): void => {
    if (depth > MAX_INCLUDE_DEPTH) {
      problems.push(`${file}: includes nest deeper than ${MAX_INCLUDE_DEPTH} (a loop?); not read`);
      return;
    }
    let text: string;
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) throw new Error('not a regular file');
      if (st.size > MAX_CONFIG_FILE_BYTES) throw new Error(`${st.size} bytes, more than a configuration file holds`);
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || depth > 0) problems.push(`${file}: ${(err as Error).message}`);
      return;
    }
    files.push(file);
    text.split('\n').forEach((raw, i) => {
      const line = raw.replace(/\r$/, '').trim();
      if (line === '' || line.startsWith('#')) return;
      const at = `${file}:${i + 1}`;
      const include = /^include\s+(.+)$/.exec(line);
      if (include) {
        readOne(path.resolve(path.dirname(file), include[1].trim()), depth + 1);
        return;
      }
      const eq = line.indexOf('=');
      const key = (eq < 0 ? line : line.slice(0, eq)).trim();
      if (KEPT.has(key)) lines.push({ key, value: eq < 0 ? '' : line.slice(eq + 1).trim(), at });
    });
  };
  if (confFile !== undefined) readOne(path.resolve(confFile), 0);
  else {
    readOne(path.join(lightningDir, 'config'), 0);
    readOne(path.join(lightningDir, network, 'config'), 0);
  }
  return { files, lines, problems };
}

/** The plugin files a configuration loads: plugin= and important-plugin= lines, and the files of each plugin-dir. */
export function pluginFiles(config: LightningdConfig, lightningDir: string, maxPerDir = 256): { file: string; at: string }[] {
  const out: { file: string; at: string }[] = [];
  const resolve = (v: string): string => path.resolve(lightningDir, v.replace(/^~(?=\/)/, process.env.HOME ?? '~'));
  for (const l of config.lines) {
    if (l.key === 'plugin' || l.key === 'important-plugin') out.push({ file: resolve(l.value), at: l.at });
    if (l.key === 'plugin-dir') {
      const dir = resolve(l.value);
      let names: string[] = [];
      try {
        names = fs.readdirSync(dir).slice(0, maxPerDir);
      } catch {
        continue;
      }
      for (const n of names) out.push({ file: path.join(dir, n), at: `${l.at} (plugin-dir)` });
    }
  }
  return out;
}
