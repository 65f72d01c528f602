/**
 * The HTTP lookup a v2 party makes before dialling a cluster
 * (`GET /v2/relay?route=ROUTE&create=1` on any instance, docs/protocol-v2.md),
 * over keep-alive connections so that 100,000 lookups do not each leave a
 * socket in TIME_WAIT on the load generator's ephemeral ports.
 */
import http from 'node:http';
import type { Target } from './wire.js';

/** Connections per instance a load worker keeps open for its lookups. */
const LOOKUP_SOCKETS_PER_INSTANCE = 16;
const IDLE_SOCKET_MS = 30_000;

export interface RouteLookupClient {
  /** Places (or finds) `route` through a random instance of `via`; resolves the owner as a Target. */
  lookup(route: string): Promise<Target>;
  /** Latency of each lookup so far, ms. */
  readonly latenciesMs: number[];
  close(): void;
}

export function routeLookupClient(via: readonly string[], timeoutMs: number): RouteLookupClient {
  // Idle sockets are closed here before a relay closes them (http.idleTimeoutMs, 60 s), as the client library does.
  const agent = new http.Agent({ keepAlive: true, maxSockets: LOOKUP_SOCKETS_PER_INSTANCE, timeout: IDLE_SOCKET_MS });
  const latenciesMs: number[] = [];
  return {
    latenciesMs,
    lookup(route: string): Promise<Target> {
      const instance = via[Math.floor(Math.random() * via.length)];
      const t0 = performance.now();
      return new Promise<Target>((resolve, reject) => {
        const req = http.get(`http://${instance}/v2/relay?route=${route}&create=1`, { agent, timeout: timeoutMs }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body += d));
          res.on('end', () => {
            if (res.statusCode !== 200) {
              reject(new Error(`lookup via ${instance}: HTTP ${res.statusCode} ${body.slice(0, 200)}`));
              return;
            }
            const { address } = JSON.parse(body) as { address: string };
            latenciesMs.push(performance.now() - t0);
            const port = Number(address.slice(address.lastIndexOf(':') + 1));
            resolve({ grpcAddress: address, wsPort: port });
          });
        });
        req.on('timeout', () => req.destroy(new Error(`lookup via ${instance}: no answer within ${timeoutMs} ms`)));
        req.on('error', reject);
      });
    },
    close() {
      agent.destroy();
    },
  };
}
