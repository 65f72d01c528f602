/**
 * Route lookups as a client makes them: gRPC hashmail.v2.Mailbox/
 * ServerForMailbox and HTTP GET /v2/relay, each on a connection of its own.
 */
import http from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { serverForMailboxMethod } from '../../src/transport/grpc-v2/server-for-mailbox.js';
import type { ServerForMailboxRequest, ServerForMailboxResponse } from '../../src/wire/v2-frames.js';
import { withTimeout, DEFAULT_WAIT_MS } from './async-queue.js';

interface LookupClient extends grpc.Client {
  serverForMailbox(req: ServerForMailboxRequest, callback: (err: grpc.ServiceError | null, res?: ServerForMailboxResponse) => void): grpc.ClientUnaryCall;
}

const LookupClientCtor = grpc.makeGenericClientConstructor(
  { serverForMailbox: { ...serverForMailboxMethod, originalName: 'ServerForMailbox' } },
  'Mailbox',
) as unknown as new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => LookupClient;

export type GrpcLookupAnswer = { ok: true; owner: ServerForMailboxResponse } | { ok: false; code: number; details: string };

/** One ServerForMailbox call on a fresh plain-text channel; `held` asks the instance to wait (unreachable, wait_ms). */
export function grpcLookup(
  address: string,
  route: string,
  create = false,
  held: { unreachable?: string; unreachableStartedAt?: number; waitMs?: number } = {},
  signal?: AbortSignal,
): Promise<GrpcLookupAnswer> {
  const client = new LookupClientCtor(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  const answer = new Promise<GrpcLookupAnswer>((resolve) => {
    const call = client.serverForMailbox({ route, create, ...held }, (err, res) => {
      client.close();
      if (err) resolve({ ok: false, code: err.code, details: err.details });
      else resolve({ ok: true, owner: res as ServerForMailboxResponse });
    });
    signal?.addEventListener('abort', () => call.cancel(), { once: true });
  });
  return withTimeout(answer, DEFAULT_WAIT_MS, 'ServerForMailbox');
}

/** A ServerForMailbox client on one channel, for many calls (races, load). */
export function lookupClient(address: string): { lookup(route: string, create?: boolean): Promise<GrpcLookupAnswer>; close(): void } {
  const client = new LookupClientCtor(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  return {
    lookup: (route, create = false) =>
      withTimeout(
        new Promise<GrpcLookupAnswer>((resolve) => {
          client.serverForMailbox({ route, create }, (err, res) => {
            if (err) resolve({ ok: false, code: err.code, details: err.details });
            else resolve({ ok: true, owner: res as ServerForMailboxResponse });
          });
        }),
        DEFAULT_WAIT_MS,
        'ServerForMailbox',
      ),
    close: () => client.close(),
  };
}

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One plain HTTP/1.1 request to the public port (default GET /v2/relay?QUERY). */
export function httpLookup(
  port: number,
  query: string,
  options: { method?: string; headers?: Record<string, string>; path?: string; agent?: http.Agent; signal?: AbortSignal } = {},
): Promise<HttpAnswer> {
  const answer = new Promise<HttpAnswer>((resolve, reject) => {
    const connection = options.agent ? {} : { connection: 'close' };
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: options.method ?? 'GET',
        path: options.path ?? `/v2/relay?${query}`,
        agent: options.agent ?? false,
        headers: { ...connection, ...options.headers },
        signal: options.signal,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
  return withTimeout(answer, DEFAULT_WAIT_MS, 'HTTP lookup');
}
