// The Prometheus scrape endpoint: `GET /metrics` answers a registry in Prometheus's text exposition
// format (prom-client renders it); anything else is 404 or 405. It serves operators' scrapers, not
// strangers: few connections at once, short timeouts, no request body read, and it never shares a
// port with the backup protocol. Rendering runs on the event loop between other work, never inside
// a db_write hook's answer (the plugin starts it after `init`).
import http from 'node:http';

/** What an endpoint serves: Prometheus text, rendered at each scrape. */
export interface MetricsSource {
  render(): Promise<string>;
  readonly contentType: string;
}

export interface MetricsEndpoint {
  /** http://host:port/metrics */
  readonly url: string;
  close(): Promise<void>;
}

/** Scrapers at once; more are refused by the kernel's backlog, then dropped. */
const MAX_CONNECTIONS = 16;
const REQUEST_TIMEOUT_MS = 10_000;

/** Parses --metrics host:port (port 0 picks a free one); the host must be given. */
export function parseMetricsAddress(value: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new Error(`metrics address must be host:port (e.g. 127.0.0.1:9737), not ${JSON.stringify(value.slice(0, 80))}`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

export function startMetricsEndpoint(host: string, port: number, source: MetricsSource): Promise<MetricsEndpoint> {
  const server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS, maxHeaderSize: 8192 }, (req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('lnbackup serves /metrics only\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('GET /metrics\n');
      return;
    }
    source.render().then(
      (text) => res.writeHead(200, { 'content-type': source.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (err: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`),
    );
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.keepAliveTimeout = 5_000;
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot serve metrics on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'the address is in use' : err.message}`)),
    );
    server.listen(port, host, () => {
      const addr = server.address();
      const bound = typeof addr === 'object' && addr !== null ? addr.port : port;
      const shownHost = host.includes(':') ? `[${host}]` : host;
      resolve({
        url: `http://${shownHost}:${bound}/metrics`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
