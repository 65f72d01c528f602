/**
 * Plain-HTTP plumbing shared by the REST routes: bounded body reads and the
 * grpc-gateway shapes of an answer (JSON, or the unwrapped status body
 * `{"code":..,"message":..,"details":[]}` with the error's HTTP status).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { HashmailError } from '../../session/errors.js';
import { statusJson } from './json-codec.js';

const JSON_CONTENT_TYPE = 'application/json';

/** True for an HTTP/2 compatibility response (it carries its stream). */
function isHttp2(res: ServerResponse): boolean {
  return 'stream' in res;
}

/** Sends a complete JSON answer. */
export function sendJson(res: ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', JSON_CONTENT_TYPE);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.end(body);
}

/**
 * Sends an error as grpc-gateway does: the HTTP status of its code and the
 * status body. `closeConnection` when the request body may be unread, so the
 * connection is not reused mid-body.
 */
export function sendError(res: ServerResponse, err: HashmailError, closeConnection = false): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  // HTTP/2 has no Connection header (a stream ends alone); setting it there throws.
  if (closeConnection && !isHttp2(res)) res.setHeader('Connection', 'close');
  sendJson(res, err.httpStatus, statusJson(err));
}

/** Starts a streamed (chunked) JSON answer. */
export function startJsonStream(res: ServerResponse): void {
  res.statusCode = 200;
  res.setHeader('Content-Type', JSON_CONTENT_TYPE);
  res.flushHeaders();
}

/**
 * Reads a small request body whole, up to `maxBytes`; past it the read fails
 * with MESSAGE_TOO_LARGE and the rest is not read. A Content-Length over it
 * fails at once: waiting for a body that will be refused anyway would hold
 * the call until the request timeout whenever the client sends it slowly or
 * never.
 */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > maxBytes) {
    req.pause();
    return Promise.reject(new HashmailError('MESSAGE_TOO_LARGE', `request body larger than ${maxBytes} bytes`));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > maxBytes) {
        cleanup();
        req.pause();
        reject(new HashmailError('MESSAGE_TOO_LARGE', `request body larger than ${maxBytes} bytes`));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = (): void => {
      cleanup();
      resolve(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
    };
    const onError = (): void => {
      cleanup();
      reject(new HashmailError('CANCELLED'));
    };
    const onClose = (): void => {
      if (req.complete) return;
      cleanup();
      reject(new HashmailError('CANCELLED'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}
