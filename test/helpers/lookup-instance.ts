/**
 * A stand-in for a cluster instance that does not own the session, for the
 * client's relay-finding tests until `hashmail relay` is merged: on one
 * loopback gRPC port it serves only `hashmail.v2.Mailbox/ServerForMailbox`
 * and a Connect that answers every Hello with Error{UNAVAILABLE,
 * relay_address}; on one loopback HTTP port `GET /v2/relay` (CORS allow-all)
 * and a `/v2/mailbox` WebSocket that answers the Hello the same way. What it
 * names as owner is up to the test (`owner`), e.g. a real `hashmail serve`.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Server, ServerCredentials, status, type ServerDuplexStream, type ServerUnaryCall, type sendUnaryData } from '@grpc/grpc-js';
import { WebSocketServer } from 'ws';
import { GrpcStatus } from '../../src/wire/grpc-status.js';
import { decodeServerForMailboxRequest, encodeErrorFrame, encodeServerForMailboxResponse, type ServerForMailboxRequest, type ServerForMailboxResponse } from '../../src/wire/v2-frames.js';

const V2_SUBPROTOCOL = 'hashmail.v2';
/** WebSocket close code of an Error frame: 4000 + gRPC code. */
const ERROR_CLOSE_BASE = 4000;

export interface LookupRecord {
  transport: 'grpc' | 'http';
  route: string;
  create: boolean;
}

export interface LookupInstance {
  /** `127.0.0.1:PORT` of the gRPC port (ServerForMailbox, redirecting Connect). */
  grpcAddress: string;
  /** `127.0.0.1:PORT` of the HTTP port (GET /v2/relay, redirecting /v2/mailbox). */
  httpAddress: string;
  /** The address lookups answer with; null answers NOT_FOUND / 404 (not placed). */
  owner: string | null;
  /** Where the redirecting Connect / WebSocket points (Error.relay_address). */
  redirectTo: string;
  lookups: LookupRecord[];
  /** Hellos redirected, per transport. */
  redirects: { grpc: number; websocket: number };
  close(): Promise<void>;
}

function sendJson(res: ServerResponse, statusCode: number, body: unknown): void {
  res.writeHead(statusCode, { 'content-type': 'application/json', 'access-control-allow-origin': '*' });
  res.end(JSON.stringify(body));
}

export async function startLookupInstance(owner: string): Promise<LookupInstance> {
  const grpc = new Server();
  const http: HttpServer = createServer();
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has(V2_SUBPROTOCOL) ? V2_SUBPROTOCOL : false) });
  const instance: LookupInstance = {
    grpcAddress: '',
    httpAddress: '',
    owner,
    redirectTo: owner,
    lookups: [],
    redirects: { grpc: 0, websocket: 0 },
    close: async () => {
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
      grpc.forceShutdown();
    },
  };
  const redirectMessage = (): string => `session is served by another relay: ${instance.redirectTo}`;
  const redirectFrame = (): Uint8Array =>
    encodeErrorFrame({ code: GrpcStatus.UNAVAILABLE, message: redirectMessage(), supportedVersions: [], relayAddress: instance.redirectTo });

  grpc.addService(
    {
      ServerForMailbox: {
        path: '/hashmail.v2.Mailbox/ServerForMailbox',
        requestStream: false,
        responseStream: false,
        requestDeserialize: (buf: Buffer) => decodeServerForMailboxRequest(buf),
        requestSerialize: () => Buffer.alloc(0),
        responseSerialize: (res: ServerForMailboxResponse) => Buffer.from(encodeServerForMailboxResponse(res)),
        responseDeserialize: () => ({}),
      },
      Connect: {
        path: '/hashmail.v2.Mailbox/Connect',
        requestStream: true,
        responseStream: true,
        requestDeserialize: (buf: Buffer) => buf,
        requestSerialize: (buf: Buffer) => buf,
        responseSerialize: (buf: Uint8Array) => Buffer.from(buf),
        responseDeserialize: (buf: Buffer) => buf,
      },
    },
    {
      ServerForMailbox: (call: ServerUnaryCall<ServerForMailboxRequest, ServerForMailboxResponse>, callback: sendUnaryData<ServerForMailboxResponse>) => {
        instance.lookups.push({ transport: 'grpc', route: call.request.route, create: call.request.create });
        if (instance.owner === null) callback({ code: status.NOT_FOUND, details: 'session not placed' });
        else callback(null, { id: 'owner', address: instance.owner });
      },
      Connect: (call: ServerDuplexStream<Buffer, Uint8Array>) => {
        call.once('data', () => {
          instance.redirects.grpc++;
          call.write(redirectFrame());
          call.emit('error', { code: status.UNAVAILABLE, details: redirectMessage() });
        });
        call.on('error', () => undefined);
      },
    },
  );
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpc.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  instance.grpcAddress = `127.0.0.1:${grpcPort}`;

  http.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://lookup');
    if (req.method === 'OPTIONS') {
      res.writeHead(204, { 'access-control-allow-origin': '*', 'access-control-allow-methods': 'GET, OPTIONS', 'access-control-allow-headers': '*' });
      res.end();
      return;
    }
    if (url.pathname !== '/v2/relay' || req.method !== 'GET') return sendJson(res, 404, { code: 5, message: 'Not Found' });
    const route = url.searchParams.get('route') ?? '';
    const create = url.searchParams.get('create') === '1';
    instance.lookups.push({ transport: 'http', route, create });
    if (instance.owner === null) return sendJson(res, 404, { error: { code: GrpcStatus.NOT_FOUND, message: 'session not placed' } });
    sendJson(res, 200, { id: 'owner', address: instance.owner });
  });
  http.on('upgrade', (req, socket, head) => {
    if (!req.url?.startsWith('/v2/mailbox')) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.once('message', () => {
        instance.redirects.websocket++;
        ws.send(redirectFrame());
        ws.close(ERROR_CLOSE_BASE + GrpcStatus.UNAVAILABLE, 'moved');
      });
    });
  });
  http.listen(0, '127.0.0.1');
  await once(http, 'listening');
  instance.httpAddress = `127.0.0.1:${(http.address() as AddressInfo).port}`;
  return instance;
}
