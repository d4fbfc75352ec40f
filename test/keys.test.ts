// Checks src/keys against real Core Lightning hsm_secret fixtures (node ids, makesecret outputs) and its refusal of encrypted, malformed and oversized key material.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';
import { tempDir, testdataDir } from './helpers/paths.js';
import { KeyError, VAULT_KEY_INFO, makesecret, nodeIdFromHsmSecret, parseHsmSecret, readHsmSecret } from '../src/keys/hsmSecret.js';
import { keyFileIsPrivate, rootKeyFromHsmSecret, rootKeyFromKeyFile } from '../src/keys/keySource.js';

interface FixtureNode {
  format: string;
  hsm_secret_hex: string;
  node_id: string;
  makesecret: { 'string:lnbackup': string; 'hex:00': string };
}

const fixtures = JSON.parse(fs.readFileSync(path.join(testdataDir, 'keys/hsm-secret-fixtures.json'), 'utf8')) as {
  nodes: FixtureNode[];
};
const dir = tempDir('keys');
let fileCounter = 0;

function writeTemp(content: Buffer | string, mode = 0o600): string {
  const p = path.join(dir, `f${fileCounter++}`);
  fs.writeFileSync(p, content, { mode });
  fs.chmodSync(p, mode);
  return p;
}

/** Asserts fn throws a KeyError whose message matches `pattern` and contains none of `secrets` (nor a 16-char slice of them). */
function assertKeyError(fn: () => unknown, pattern: RegExp, secrets: string[] = []): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KeyError, `expected KeyError, got ${String(err)}`);
    assert.match(err.message, pattern);
    const lower = err.message.toLowerCase();
    for (const s of secrets) {
      for (let i = 0; i + 16 <= s.length; i += 8) {
        assert.ok(!lower.includes(s.slice(i, i + 16).toLowerCase()), 'error message leaks secret material');
      }
    }
    return true;
  });
}

const mnemonicNode = fixtures.nodes.find((n) => n.hsm_secret_hex.length > 64);
const legacyNode = fixtures.nodes.find((n) => n.hsm_secret_hex.length === 64);
assert.ok(mnemonicNode && legacyNode, 'fixtures hold one node of each format');

for (const node of fixtures.nodes) {
  test(`fixture ${node.format}: node id and makesecret match lightningd`, () => {
    const secret = parseHsmSecret(Buffer.from(node.hsm_secret_hex, 'hex'));
    assert.equal(nodeIdFromHsmSecret(secret), node.node_id);
    assert.equal(makesecret(secret, Buffer.from(VAULT_KEY_INFO, 'utf8')).toString('hex'), node.makesecret['string:lnbackup']);
    assert.equal(makesecret(secret, Buffer.from([0])).toString('hex'), node.makesecret['hex:00']);
  });

  test(`fixture ${node.format}: rootKeyFromHsmSecret reads a real file`, () => {
    const p = writeTemp(Buffer.from(node.hsm_secret_hex, 'hex'), 0o400);
    const root = rootKeyFromHsmSecret(p);
    assert.equal(root.key.toString('hex'), node.makesecret['string:lnbackup']);
    assert.equal(root.nodeId, node.node_id);
    assert.equal(readHsmSecret(p).length, parseHsmSecret(Buffer.from(node.hsm_secret_hex, 'hex')).length);
  });
}

test('VAULT_KEY_INFO is the makesecret string lnbackup documents', () => {
  assert.equal(VAULT_KEY_INFO, 'lnbackup');
});

test('mnemonic format: secret is the 64-byte BIP39 seed, node id uses its first 32 bytes', () => {
  const file = Buffer.from(mnemonicNode.hsm_secret_hex, 'hex');
  const secret = parseHsmSecret(file);
  assert.equal(secret.length, 64);
  const mnemonic = file.subarray(32).toString('utf8');
  const seed = crypto.pbkdf2Sync(mnemonic, 'mnemonic', 2048, 64, 'sha512');
  assert.ok(secret.equals(seed));
  // Node id from the first half alone (what hsmd's node_key does) is the same id.
  assert.equal(nodeIdFromHsmSecret(secret.subarray(0, 32)), mnemonicNode.node_id);
  // But makesecret uses all 64 bytes: the first half alone gives something else.
  assert.notEqual(makesecret(secret.subarray(0, 32), Buffer.from(VAULT_KEY_INFO)).toString('hex'), mnemonicNode.makesecret['string:lnbackup']);
});

test('legacy format: secret is the file itself', () => {
  const file = Buffer.from(legacyNode.hsm_secret_hex, 'hex');
  assert.ok(parseHsmSecret(file).equals(file));
});

test('mnemonic cut at a NUL byte, as lightningd strndup does', () => {
  const file = Buffer.concat([Buffer.from(mnemonicNode.hsm_secret_hex, 'hex'), Buffer.from([0, 0x41, 0x42])]);
  assert.equal(nodeIdFromHsmSecret(parseHsmSecret(file)), mnemonicNode.node_id);
});

test('makesecret and nodeIdFromHsmSecret refuse a secret of the wrong size', () => {
  assert.throws(() => makesecret(Buffer.alloc(33), Buffer.from('x')), RangeError);
  assert.throws(() => nodeIdFromHsmSecret(Buffer.alloc(16)), RangeError);
});

test('legacy encrypted hsm_secret (73 bytes) is refused, pointing to --key-file', () => {
  const file = crypto.randomBytes(73);
  assertKeyError(() => parseHsmSecret(file), /encrypted.*--key-file/, [file.toString('hex')]);
  const p = writeTemp(file);
  assertKeyError(() => readHsmSecret(p), /encrypted.*--key-file/, [file.toString('hex')]);
  assertKeyError(() => rootKeyFromHsmSecret(p), /--key-file/);
});

test('mnemonic hsm_secret with a passphrase (non-zero first 32 bytes) is refused, pointing to --key-file', () => {
  const mnemonic = Buffer.from(mnemonicNode.hsm_secret_hex, 'hex').subarray(32);
  const hash = crypto.randomBytes(32);
  const file = Buffer.concat([hash, mnemonic]);
  assertKeyError(() => parseHsmSecret(file), /encrypted.*passphrase.*--key-file/, [hash.toString('hex')]);
  assertKeyError(() => rootKeyFromHsmSecret(writeTemp(file)), /--key-file/, [hash.toString('hex')]);
});

test('truncated hsm_secret is refused', () => {
  const legacy = Buffer.from(legacyNode.hsm_secret_hex, 'hex');
  for (const len of [0, 1, 16, 31]) {
    assertKeyError(() => parseHsmSecret(legacy.subarray(0, len)), /truncated/, [legacyNode.hsm_secret_hex]);
  }
  assertKeyError(() => readHsmSecret(writeTemp(Buffer.alloc(0))), /truncated/);
  // A mnemonic file cut short: whole words missing, or a word cut in half.
  const full = Buffer.from(mnemonicNode.hsm_secret_hex, 'hex');
  assertKeyError(() => parseHsmSecret(full.subarray(0, 32)), /zero bytes.*truncated/);
  assertKeyError(() => parseHsmSecret(full.subarray(0, 33)), /mnemonic/);
  const words = full.subarray(32).toString('utf8').split(' ');
  const elevenWords = Buffer.concat([Buffer.alloc(32), Buffer.from(words.slice(0, 11).join(' '))]);
  assertKeyError(() => parseHsmSecret(elevenWords), /11 words/);
  const cutWord = Buffer.concat([Buffer.alloc(32), Buffer.from(words.join(' ') + ' ab')]);
  assertKeyError(() => parseHsmSecret(cutWord), /words|word/);
});

test('malformed mnemonic hsm_secret is refused without echoing the words', () => {
  const mnemonic = Buffer.from(mnemonicNode.hsm_secret_hex, 'hex').subarray(32).toString('utf8');
  const bad = [mnemonic + '\n', mnemonic.toUpperCase(), mnemonic.replace(' ', '  '), ' ' + mnemonic, mnemonic + ' é'];
  for (const m of bad) {
    const file = Buffer.concat([Buffer.alloc(32), Buffer.from(m, 'utf8')]);
    assertKeyError(() => parseHsmSecret(file), /mnemonic/);
    assert.throws(
      () => parseHsmSecret(file),
      (err: Error) => !err.message.includes(mnemonic.split(' ')[0]!),
    );
  }
});

test('oversized hsm_secret is refused before being read', () => {
  const p = writeTemp(Buffer.alloc(5000));
  assertKeyError(() => readHsmSecret(p), /5000 bytes.*larger/);
  assertKeyError(() => rootKeyFromHsmSecret(p), /larger/);
});

test('missing hsm_secret and directories give clear KeyErrors', () => {
  assertKeyError(() => readHsmSecret(path.join(dir, 'nope')), /does not exist/);
  assertKeyError(() => readHsmSecret(dir), /directory|not a regular file/);
});

test('key file: 64 hex characters, whitespace trimmed, any case', () => {
  const hex = legacyNode.makesecret['string:lnbackup'];
  for (const content of [hex, `${hex}\n`, `  ${hex.toUpperCase()}\r\n\n`]) {
    const root = rootKeyFromKeyFile(writeTemp(content));
    assert.equal(root.key.toString('hex'), hex);
    assert.equal(root.nodeId, null);
  }
});

test('key file: JSON printed by lightning-cli makesecret, with or without node_id', () => {
  const hex = mnemonicNode.makesecret['string:lnbackup'];
  const plain = rootKeyFromKeyFile(writeTemp(`{\n   "secret": "${hex}"\n}\n`));
  assert.equal(plain.key.toString('hex'), hex);
  assert.equal(plain.nodeId, null);
  const withId = rootKeyFromKeyFile(writeTemp(JSON.stringify({ secret: hex, node_id: mnemonicNode.node_id.toUpperCase() })));
  assert.equal(withId.key.toString('hex'), hex);
  assert.equal(withId.nodeId, mnemonicNode.node_id);
});

test('key file: garbage, wrong length, bad JSON and too large are refused without leaking the key', () => {
  const hex = legacyNode.makesecret['string:lnbackup'];
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['hello world', /not hexadecimal/],
    [hex.slice(0, 62), /62 hex characters, not 64/],
    [hex + 'ab', /66 hex characters, not 64/],
    [`${hex.slice(0, 32)} ${hex.slice(32)}`, /not hexadecimal/],
    [`{"secret": "${hex}"`, /not valid JSON/],
    [`{"secret": "${hex}", }`, /not valid JSON/],
    [`{"secret": "${hex.slice(2)}"}`, /62 hex characters/],
    [`{"secret": "${hex.slice(2)}zz"}`, /not hexadecimal/],
    [`{"key": "${hex}"}`, /without a "secret"/],
    [`{"secret": "${hex}", "node_id": "${hex}"}`, /node_id/],
    [`{"secret": "${hex}", "node_id": 3}`, /node_id/],
    [`[{"secret": "${hex}"}]`, /not an object/],
    [`[{"secret": "${hex}"`, /not valid JSON/],
    [hex + '\n' + 'x'.repeat(5000), /larger/],
  ];
  for (const [content, pattern] of cases) {
    const p = writeTemp(content);
    assertKeyError(() => rootKeyFromKeyFile(p), pattern, [hex]);
  }
  assertKeyError(() => rootKeyFromKeyFile(path.join(dir, 'absent-key')), /does not exist/);
});

test('keyFileIsPrivate reports group/world access', () => {
  const hex = legacyNode.makesecret['string:lnbackup'];
  assert.equal(keyFileIsPrivate(writeTemp(hex, 0o600)), true);
  assert.equal(keyFileIsPrivate(writeTemp(hex, 0o400)), true);
  assert.equal(keyFileIsPrivate(writeTemp(hex, 0o640)), false);
  assert.equal(keyFileIsPrivate(writeTemp(hex, 0o604)), false);
  assertKeyError(() => keyFileIsPrivate(path.join(dir, 'absent-key')), /does not exist/);
});

test('a file that is not an hsm_secret is named so, with its size and what is expected (never called encrypted, never quoted)', () => {
  const words = Buffer.from(mnemonicNode.hsm_secret_hex, 'hex').subarray(32).toString('latin1').replace(/\0.*$/s, '');
  const cases: [Buffer, RegExp][] = [
    [crypto.randomBytes(64), /64 bytes of binary data and is not an hsm_secret.*32 bytes \(legacy\).*<lightning-dir>\/<network>\/hsm_secret/],
    [Buffer.from('{"format":"lnbackup-vault","version":1}\n'), /40 bytes of text and is not an hsm_secret/],
    [Buffer.from(`${words}\n`), /mnemonic written as plain text.*generatehsm/],
  ];
  for (const [file, pattern] of cases) {
    assertKeyError(() => parseHsmSecret(file), pattern, [file.toString('hex')]);
    assert.throws(
      () => parseHsmSecret(file),
      (err: Error) => !/is encrypted/.test(err.message) && !err.message.includes(words.split(' ')[1]!),
      file.toString('latin1'),
    );
  }
});
