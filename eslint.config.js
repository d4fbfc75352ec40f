// Lint configuration: typescript-eslint's recommended rules over the TypeScript sources, and the
// seams that must hold: nothing on the db_write path (the journal, the vault, the destinations, the
// plugin's backup part) may import the lightningd RPC client (a call from inside the hook deadlocks).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['src/journal/**', 'src/vault/**', 'src/destinations/**', 'src/cln/backup/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: ['**/rpc/*', '**/rpc'],
              message:
                "the db_write path must never call lightningd's RPC (lightningd waits for the hook: a deadlock); use src/cln/rpc/ only from parts beside the hook",
            },
          ],
        },
      ],
    },
  },
);
