/**
 * PROXY protocol headers (v1 text, v2 binary) and a loopback L4 balancer that
 * sends one before forwarding each connection's bytes untouched, as HAProxy
 * or an NLB with proxy protocol does: what the client sends after it,
 * X-Forwarded-For included, reaches the server as the client wrote it.
 */
import net from 'node:net';
import { parseIp } from '../../src/transport/ip-address.js';
import { once } from './async-queue.js';

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Version 2, command PROXY. */
const V2_PROXY_COMMAND = 0x21;
/** Address family INET / INET6, transport STREAM. */
const V2_TCP4 = 0x11;
const V2_TCP6 = 0x21;
const SOURCE_PORT = 40_000;
const DESTINATION_PORT = 443;

function ipOf(address: string): { family: 4 | 6; bytes: Uint8Array } {
  const ip = parseIp(address);
  if (!ip || (net.isIP(address) === 6 && ip.family === 4)) throw new Error(`not a plain IP: ${address}`);
  return ip;
}

/** `PROXY TCP4 <source> <destination> 40000 443\r\n` (TCP6 for an IPv6 source). */
export function proxyV1(source: string): Buffer {
  const v6 = ipOf(source).family === 6;
  return Buffer.from(`PROXY ${v6 ? 'TCP6' : 'TCP4'} ${source} ${v6 ? '::1' : '127.0.0.1'} ${SOURCE_PORT} ${DESTINATION_PORT}\r\n`);
}

/** A v2 PROXY header over TCP with `source` (v4 or v6) as the client. */
export function proxyV2(source: string): Buffer {
  const ip = ipOf(source);
  const destination = new Uint8Array(ip.bytes.length);
  destination[destination.length - 1] = 1;
  const ports = Buffer.alloc(4);
  ports.writeUInt16BE(SOURCE_PORT, 0);
  ports.writeUInt16BE(DESTINATION_PORT, 2);
  const body = Buffer.concat([ip.bytes, destination, ports]);
  const fixed = Buffer.alloc(4);
  fixed[0] = V2_PROXY_COMMAND;
  fixed[1] = ip.family === 4 ? V2_TCP4 : V2_TCP6;
  fixed.writeUInt16BE(body.length, 2);
  return Buffer.concat([V2_SIGNATURE, fixed, body]);
}

export interface ProxyBalancer {
  /** `127.0.0.1:PORT` to connect clients to. */
  address: string;
  port: number;
  /** Open client connections (each with its upstream). */
  readonly connections: number;
  /** Stops listening and cuts every forwarded connection. */
  close(): Promise<void>;
}

/** Listens on a free loopback port; each connection goes to `targetPort` behind `header`. */
export async function startProxyBalancer(targetPort: number, header: Buffer): Promise<ProxyBalancer> {
  const pairs = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    upstream.write(header);
    client.pipe(upstream);
    upstream.pipe(client);
    pairs.add(client);
    pairs.add(upstream);
    // Either end going away ends both, as a balancer does.
    const cut = (): void => {
      client.destroy();
      upstream.destroy();
      pairs.delete(client);
      pairs.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('error', cut);
      s.on('close', cut);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    address: `127.0.0.1:${port}`,
    port,
    get connections() {
      return pairs.size / 2;
    },
    close: async () => {
      for (const s of pairs) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
