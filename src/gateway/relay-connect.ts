/**
 * A gateway's connections to a relay (hop lanes and passed-through v2
 * WebSockets) open with the hop preamble: a PROXY v2 header naming the client
 * the connection is for, or nobody for a lane, with a proof that the gateway
 * holds the hop token (never the token: the preamble is sent in plain text;
 * docs/gateway-hop.md, Connection preamble). It goes first, before TLS and
 * HTTP, so the relay counts the connection as its client's from its first
 * byte: a burst of tunnels in flight never fills the gateway's own
 * per-address budget at the relay.
 */
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { Duplex } from 'node:stream';
import { encodeHopPreamble } from '../transport/hop/preamble-proof.js';
import type { RelayTlsOptions } from './relay-trust.js';

/**
 * The `createConnection` of an HTTP(S) request to a relay: TCP, the
 * preamble, then TLS with the request's options and `tlsOptions` (relay-trust.ts:
 * a CA or a pinned certificate); null: plain text.
 */
export function preambleConnector(client: string | null, hopToken: string, tlsOptions: RelayTlsOptions | null): (options: http.ClientRequestArgs) => Duplex {
  return (options) => {
    // A proof is taken once: each connection gets its own.
    const preamble = encodeHopPreamble(client, hopToken);
    const raw = net.connect({
      host: options.host ?? options.hostname ?? 'localhost',
      port: Number(options.port),
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
    });
    raw.setNoDelay(true);
    // Queued until the connection is up, then sent ahead of everything the request or TLS writes.
    raw.write(preamble);
    if (tlsOptions === null) return raw;
    return tls.connect({ ...(options as tls.ConnectionOptions), ...tlsOptions, socket: raw });
  };
}

/**
 * An agent for one request (http-proxy takes an agent, not a
 * `createConnection`): its one connection opens with the preamble.
 */
export function preambleAgent(client: string | null, hopToken: string, tlsOptions: RelayTlsOptions | null): http.Agent {
  const connect = preambleConnector(client, hopToken, tlsOptions);
  const Base = tlsOptions !== null ? https.Agent : http.Agent;
  const agent = new Base({ keepAlive: false });
  agent.createConnection = (options) => connect(options);
  return agent;
}
