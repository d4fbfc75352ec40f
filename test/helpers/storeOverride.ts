// A real server store with some of its methods replaced, for tests that make one operation slow
// or failing (a slow pack write, a disk that fills) while everything else stays real.
import type { OpenedStore } from '../../src/server/storage/openStore.js';

type StoreMethods = Omit<OpenedStore, 'kind' | 'location' | 'stats'>;

export function storeOverride(real: OpenedStore, overrides: Partial<StoreMethods>): OpenedStore {
  return {
    get kind() {
      return real.kind;
    },
    get location() {
      return real.location;
    },
    get stats() {
      return real.stats;
    },
    getVault: (id) => real.getVault(id),
    createVault: (owner, id, identity) => real.createVault(owner, id, identity),
    listVaults: (owner) => real.listVaults(owner),
    usage: (owner) => real.usage(owner),
    append: (id, records) => real.append(id, records),
    readRecords: (id, from, max) => real.readRecords(id, from, max),
    putPack: (id, name, bytes) => real.putPack(id, name, bytes),
    listPacks: (id) => real.listPacks(id),
    readPack: (id, name, offset, max) => real.readPack(id, name, offset, max),
    deletePacks: (id, names) => real.deletePacks(id, names),
    prune: (id, keep) => real.prune(id, keep),
    close: () => real.close(),
    ...overrides,
  };
}
