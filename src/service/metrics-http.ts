import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Registry } from 'prom-client';

export interface ListenAddress {
  host: string;
  port: number;
}

/**
 * "9464" (loopback), "127.0.0.1:9464", "0.0.0.0:9464", "[::1]:9464" or
 * "localhost:9464". A bare port binds to loopback only: exposing the metrics
 * beyond the host has to be asked for with an address.
 */
export function parseListenAddress(text: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  if (!m) throw new Error(`"${text}" is not PORT or HOST:PORT (IPv6 as [ADDR]:PORT)`);
  const port = Number(m[3]);
  if (!Number.isInteger(port) || port > 65535) throw new Error(`port ${m[3]} is out of range`);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

export interface MetricsServer {
  /** Where it listens (the real port when 0 was asked for). */
  readonly address: ListenAddress;
  close(): Promise<void>;
}

/**
 * Serves GET /metrics in the Prometheus text format; nothing else. The
 * registry comes from a getter so the port can be bound before the daemon
 * exists (503 until then).
 */
export function startMetricsServer(registry: () => Registry | null, at: ListenAddress): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('see /metrics\n');
      return;
    }
    const r = registry();
    if (r === null) {
      res.writeHead(503, { 'content-type': 'text/plain' }).end('starting\n');
      return;
    }
    r.metrics().then(
      (body) => res.writeHead(200, { 'content-type': r.contentType }).end(req.method === 'HEAD' ? undefined : body),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`${err.message}\n`),
    );
  });
  // A scraper that holds a connection open must not keep the daemon from exiting.
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      const a = server.address() as AddressInfo;
      resolve({
        address: { host: a.address, port: a.port },
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
