/**
 * A stream the peer has already reset must not take the process down.
 * grpc-js handles the http2 server's 'stream' event a tick after nghttp2
 * parsed it; when HEADERS and RST_STREAM came in the same read (a rapid-reset
 * flood does exactly that), the stream is destroyed by then, and grpc-js's
 * answers for an unknown method (UNIMPLEMENTED) or a wrong content-type (415)
 * call `stream.respond()`, which throws ERR_HTTP2_INVALID_STREAM out of an
 * event handler: an uncaught exception, the whole relay gone. Such a stream
 * gets a `respond` that does nothing; there is no one left to answer.
 */
import type { EventEmitter } from 'node:events';
import type { ServerHttp2Stream } from 'node:http2';

function answerNobody(): void {}

/** Guards every stream `server` (an http2 server) emits from now on; runs before grpc-js's handler. */
export function guardResetStreams(server: EventEmitter): void {
  server.prependListener('stream', (stream: ServerHttp2Stream) => {
    if (stream.destroyed) stream.respond = answerNobody;
  });
}
