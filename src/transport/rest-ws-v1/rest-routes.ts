/**
 * NewCipherBox and DelCipherBox over plain HTTP (spec section 4). Both are
 * one request, one answer; validation order and texts come from
 * mailbox's legacy operations, so they match the gRPC transport word for word.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CallInfo, BoxRequest } from '../../relay/legacy-operations.js';
import { shortHash } from '../../session/sid.js';
import { MAX_SMALL_REQUEST_BYTES, noteError, OK_CODE, startCallMetrics, type GatewayContext } from './context.js';
import { sendError, sendJson, readBody } from './http-reply.js';
import { CREATE_SUCCESS_JSON, decodeBase64, EMPTY_OBJECT_JSON, parseCipherBoxAuth } from './json-codec.js';
import { onlyJsonObject } from './json-splitter.js';

const QUERY_STREAM_ID_KEYS = ['desc.stream_id', 'desc.streamId'];

function callInfo(ctx: GatewayContext, req: IncomingMessage): CallInfo {
  return { transport: 'rest', address: ctx.clientAddress(req) };
}

/** POST /v1/lightning-node-connect/hashmail, body CipherBoxAuth JSON. */
export async function createBox(ctx: GatewayContext, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const m = startCallMetrics(ctx, 'create', 'rest');
  try {
    const body = await readBody(req, MAX_SMALL_REQUEST_BYTES);
    const auth = parseCipherBoxAuth(onlyJsonObject(body, MAX_SMALL_REQUEST_BYTES, 'CipherBoxAuth'));
    m.received();
    await ctx.mailbox.newCipherBox(auth, callInfo(ctx, req));
    ctx.logger.debug({ transport: 'rest', call: 'create', sid: auth.desc ? shortHash(auth.desc.streamId) : '' }, 'box created');
    m.sent();
    m.done(OK_CODE);
    sendJson(res, 200, CREATE_SUCCESS_JSON);
  } catch (err) {
    const e = noteError(ctx, err, 'rest', 'create');
    m.done(e.grpcCode);
    sendError(res, e, !req.complete);
  }
}

/**
 * Reads DelCipherBox's fields from the query, as grpc-gateway does: only
 * `desc.stream_id` can be given there (unknown parameters are ignored), and
 * the `lnd_auth` message cannot, so a valid desc always ends in "auth type
 * required" (the reference's behaviour; clients delete over gRPC).
 */
export function boxRequestFromQuery(query: string): BoxRequest {
  const params = new URLSearchParams(query);
  for (const key of QUERY_STREAM_ID_KEYS) {
    const value = params.get(key);
    if (value === null) continue;
    // A query string decodes '+' as a space; standard base64 needs it back.
    const text = value.replaceAll(' ', '+');
    return { desc: { streamId: decodeBase64(text, 'desc.stream_id') }, hasAuth: false };
  }
  return { desc: null, hasAuth: false };
}

/** DELETE /v1/lightning-node-connect/hashmail?desc.stream_id=... */
export async function deleteBox(ctx: GatewayContext, req: IncomingMessage, res: ServerResponse, query: string): Promise<void> {
  const m = startCallMetrics(ctx, 'delete', 'rest');
  try {
    const request = boxRequestFromQuery(query);
    m.received();
    await ctx.mailbox.delCipherBox(request, callInfo(ctx, req));
    m.sent();
    m.done(OK_CODE);
    sendJson(res, 200, EMPTY_OBJECT_JSON);
  } catch (err) {
    const e = noteError(ctx, err, 'rest', 'delete');
    m.done(e.grpcCode);
    // An unread DELETE body is discarded by node:http once the answer is sent.
    sendError(res, e);
  }
}
