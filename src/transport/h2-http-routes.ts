/**
 * Plain HTTP requests over HTTP/2 on the public port. With TLS, browsers and
 * curl pick ALPN h2, and every h2 connection goes to grpc-js, which answers
 * any stream that is not gRPC with a bare 415. Here each stream is looked at
 * first: `content-type: application/grpc*` goes on to grpc-js, anything else
 * (REST, CORS preflight, GET /v2/relay, unknown paths) to the same request
 * handler as HTTP/1.1, through Node's HTTP/2 compatibility layer, so the
 * answers are the same status, headers and bodies. WebSocket stays HTTP/1.1.
 */
import http2, { type IncomingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { EventEmitter } from 'node:events';

/** What grpc-js itself checks before taking a stream (anything else gets its 415). */
const GRPC_CONTENT_TYPE_PREFIX = 'application/grpc';

type StreamListener = (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => void;
export type H2RequestHandler = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void;

export function isGrpcRequest(headers: IncomingHttpHeaders): boolean {
  const type = headers['content-type'];
  return typeof type === 'string' && type.startsWith(GRPC_CONTENT_TYPE_PREFIX);
}

/**
 * Puts a dispatcher in front of the 'stream' listeners `h2Server` (grpc-js's
 * http2 server of an injector) has now: gRPC streams reach them unchanged,
 * other streams become compat request/response pairs for `onRequest`.
 * Returns false if the server had no 'stream' listener (grpc-js changed).
 */
export function routeNonGrpcStreams(h2Server: EventEmitter, onRequest: H2RequestHandler): boolean {
  const grpcListeners = h2Server.listeners('stream') as StreamListener[];
  if (grpcListeners.length === 0) return false;
  // A compat server only to build Http2ServerRequest/Response from a stream:
  // its 'stream' listener (added with the first 'request' listener) does that
  // for any stream, whichever server's session carries it. It never listens.
  const compat = http2.createServer();
  compat.on('request', onRequest);
  h2Server.removeAllListeners('stream');
  h2Server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number, rawHeaders: string[]) => {
    if (isGrpcRequest(headers)) {
      for (const listener of grpcListeners) listener.call(h2Server, stream, headers, flags, rawHeaders);
      return;
    }
    compat.emit('stream', stream, headers, flags, rawHeaders);
  });
  return true;
}
