// A real BackupServer in this process (real TCP on 127.0.0.1, real transport and sessions) whose
// store is a HostileStore around a real FileStore, so that a test can make the server lie. It can be
// restarted on the same port and data folder (the store is reopened from disk, honest again), as
// a server that was stopped and started again.
import fs from 'node:fs';
import { BackupServer, type RunningServer } from '../../src/server/server.js';
import { FileStore } from '../../src/server/storage/fileStore.js';
import { HostileStore } from './hostileStore.js';

export interface HostileServer {
  readonly dataDir: string;
  readonly server: RunningServer;
  readonly store: HostileStore;
  readonly url: string;
  readonly port: number;
  /** Server events (its log lines). */
  readonly events: string[];
  /** Stops the server (and closes its store). */
  stop(): Promise<void>;
  /** Stops it, then starts it again on the same port and data folder with a fresh, honest store. */
  restart(): Promise<HostileServer>;
}

export async function startHostileServer(dataDir: string, port = 0, events: string[] = []): Promise<HostileServer> {
  fs.mkdirSync(dataDir, { recursive: true });
  const store = new HostileStore(await FileStore.open(dataDir, (m) => events.push(`store: ${m}`)));
  let server: RunningServer;
  try {
    server = await BackupServer.start({ host: '127.0.0.1', port, dataDir, allow: 'open', store, onEvent: (line) => events.push(line) });
  } catch (err) {
    await store.close();
    throw err;
  }
  const self: HostileServer = {
    dataDir,
    server,
    store,
    url: server.url,
    port: server.port,
    events,
    stop: () => server.stop(),
    restart: async () => {
      await server.stop();
      return startHostileServer(dataDir, server.port, events);
    },
  };
  return self;
}
