/**
 * Legacy (v1) REST/WebSocket gateway clients for integration tests, speaking
 * the wire of spec section 4 as the deployed LNC browser client does: one
 * JSON request per WebSocket message, one JSON frame per response beginning
 * `{"result":` or `{"error":`.
 */
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import WebSocket from 'ws';
import { AsyncQueue, DEFAULT_WAIT_MS } from './async-queue.js';

export const HASHMAIL_PATH = '/v1/lightning-node-connect/hashmail';
export const RECEIVE_PATH = `${HASHMAIL_PATH}/receive`;
export const SEND_PATH = `${HASHMAIL_PATH}/send`;

/** Standard base64, padded: what the server emits. */
export const b64 = (buf: Buffer): string => buf.toString('base64');
/** URL-safe base64 without padding: a spelling the server must accept. */
export const b64url = (buf: Buffer): string => buf.toString('base64url');

export type WsEvent =
  | { kind: 'frame'; text: string; isBinary: boolean }
  | { kind: 'close'; code: number; reason: string };

export interface WsConn {
  ws: WebSocket;
  /** Frames and, last and repeated, the close. */
  events: AsyncQueue<WsEvent>;
  /** Resolves with the close whenever the socket ends (any cause). */
  closed: Promise<{ code: number; reason: string }>;
  isClosed(): boolean;
  /** Pings received from the server (payload text each). */
  pings: string[];
  /** Response headers of the handshake. */
  upgradeHeaders: Record<string, string | string[] | undefined>;
  /** Next frame text; fails if the socket closes first. */
  nextFrame(timeoutMs?: number): Promise<string>;
  /** Waits for the close, failing if a frame that is not an error arrives first. */
  awaitEnd(timeoutMs?: number): Promise<{ code: number; reason: string; frames: string[] }>;
  /** Closes (if open) and waits for the close; hard-terminates if it does not come. */
  close(): Promise<void>;
}

export interface DialOptions {
  /** Value of the `method` query parameter; null omits it. Default POST. */
  method?: string | null;
  headers?: Record<string, string>;
  /** ws >= 8.16: false leaves pings unanswered. */
  autoPong?: boolean;
}

export type DialResult = { ok: true; conn: WsConn } | { ok: false; status: number; body: string };

export function wsUrl(port: number, path: string, method: string | null = 'POST'): string {
  return `ws://127.0.0.1:${port}${path}${method === null ? '' : `?method=${method}`}`;
}

/** Dials a WebSocket; a refused handshake is returned (status, body), not thrown. */
export function dialWs(port: number, path: string, options: DialOptions = {}, timeoutMs = DEFAULT_WAIT_MS): Promise<DialResult> {
  const url = wsUrl(port, path, options.method === undefined ? 'POST' : options.method);
  const ws = new WebSocket(url, { headers: options.headers, autoPong: options.autoPong ?? true, handshakeTimeout: timeoutMs });
  const events = new AsyncQueue<WsEvent>();
  const pings: string[] = [];
  let upgradeHeaders: Record<string, string | string[] | undefined> = {};
  let closedFlag = false;
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.on('close', (code, reason) => {
      closedFlag = true;
      const c = { code, reason: reason.toString() };
      events.end({ kind: 'close', ...c });
      resolve(c);
    });
  });
  ws.on('message', (data, isBinary) => {
    const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer);
    events.push({ kind: 'frame', text: buf.toString('utf8'), isBinary });
  });
  ws.on('ping', (data) => pings.push(data.toString('utf8')));
  ws.on('upgrade', (res) => {
    upgradeHeaders = res.headers;
  });

  const conn: WsConn = {
    ws,
    events,
    closed,
    pings,
    get upgradeHeaders() {
      return upgradeHeaders;
    },
    isClosed: () => closedFlag,
    async nextFrame(t = DEFAULT_WAIT_MS) {
      const ev = await events.next(t, 'WebSocket frame');
      if (ev.kind === 'close') assert.fail(`socket closed (${ev.code} ${ev.reason}) instead of sending a frame`);
      return ev.text;
    },
    async awaitEnd(t = DEFAULT_WAIT_MS) {
      const frames: string[] = [];
      for (let i = 0; i < 100; i++) {
        const ev = await events.next(t, 'WebSocket close');
        if (ev.kind === 'close') return { ...ev, frames };
        frames.push(ev.text);
        assert.ok(ev.text.startsWith('{"error":') || ev.text.startsWith('{"code":'), `expected the socket to end, got frame ${ev.text.slice(0, 200)}`);
      }
      return assert.fail('socket kept sending frames instead of ending');
    },
    async close() {
      if (closedFlag) return;
      if (ws.readyState === WebSocket.OPEN) ws.close();
      else ws.terminate();
      const timer = setTimeout(() => ws.terminate(), 2_000);
      await closed;
      clearTimeout(timer);
    },
  };

  return new Promise<DialResult>((resolve, reject) => {
    let settled = false;
    ws.once('open', () => {
      settled = true;
      resolve({ ok: true, conn });
    });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        settled = true;
        resolve({ ok: false, status: res.statusCode ?? 0, body });
        ws.terminate();
      });
      res.on('error', () => undefined);
    });
    ws.on('error', (err) => {
      // After the handshake, errors are followed by 'close', which the reader reports.
      if (!settled) {
        settled = true;
        reject(err);
      }
    });
  });
}

/** Dials and requires the handshake to succeed. */
export async function openWs(port: number, path: string, options: DialOptions = {}): Promise<WsConn> {
  const res = await dialWs(port, path, options);
  if (!res.ok) assert.fail(`WebSocket handshake to ${path} refused: ${res.status} ${res.body}`);
  return res.conn;
}

/** A receive socket that asked for `sid` (spelling: standard base64 under `stream_id` unless told). */
export async function openReceive(
  port: number,
  sid: Buffer,
  options: DialOptions & { field?: 'stream_id' | 'streamId'; encode?: (b: Buffer) => string } = {},
): Promise<WsConn> {
  const conn = await openWs(port, RECEIVE_PATH, options);
  conn.ws.send(JSON.stringify({ [options.field ?? 'stream_id']: (options.encode ?? b64)(sid) }));
  return conn;
}

export const openSendSocket = (port: number, options: DialOptions = {}): Promise<WsConn> => openWs(port, SEND_PATH, options);

/** The JSON text of one CipherBox send request. */
export function sendRequest(sid: Buffer, msg: Buffer, field: 'stream_id' | 'streamId' = 'stream_id', encode = b64): string {
  return JSON.stringify({ desc: { [field]: encode(sid) }, msg: encode(msg) });
}

export function sendMessage(conn: WsConn, sid: Buffer, msg: Buffer): Promise<void> {
  return new Promise((resolve, reject) => conn.ws.send(sendRequest(sid, msg), (err) => (err ? reject(err) : resolve())));
}

/** The exact frame the server must send for `msg` read from `sid`. */
export function expectedResultFrame(sid: Buffer, msg: Buffer): string {
  return `{"result":{"desc":{"stream_id":"${b64(sid)}"},"msg":"${b64(msg)}"}}`;
}

/** Asserts a result frame: exact prefix, compact, only desc and msg; returns the message bytes. */
export function parseResult(text: string, sid?: Buffer): Buffer {
  assert.ok(text.startsWith('{"result":'), `expected {"result": frame, got ${text.slice(0, 200)}`);
  const parsed = JSON.parse(text) as { result: { desc: { stream_id: string }; msg: string } };
  assert.deepEqual(Object.keys(parsed), ['result']);
  assert.deepEqual(Object.keys(parsed.result), ['desc', 'msg']);
  assert.deepEqual(Object.keys(parsed.result.desc), ['stream_id']);
  assert.equal(typeof parsed.result.msg, 'string');
  if (sid) assert.equal(parsed.result.desc.stream_id, b64(sid));
  const msg = Buffer.from(parsed.result.msg, 'base64');
  assert.equal(JSON.stringify(parsed), text, 'frame is not compact JSON');
  return msg;
}

export interface ErrorBody {
  code: number;
  message: string;
  details: unknown[];
}

/** Asserts an error frame: exact prefix, compact, code/message/details; returns the error. */
export function parseError(text: string): ErrorBody {
  assert.ok(text.startsWith('{"error":'), `expected {"error": frame, got ${text.slice(0, 200)}`);
  const parsed = JSON.parse(text) as { error: ErrorBody };
  assert.deepEqual(Object.keys(parsed), ['error']);
  assert.equal(JSON.stringify(parsed), text, 'frame is not compact JSON');
  assert.equal(typeof parsed.error.code, 'number');
  assert.equal(typeof parsed.error.message, 'string');
  assert.deepEqual(parsed.error.details, []);
  return parsed.error;
}

/** Reads the next frame as a result carrying `sid`; returns the message. */
export async function readMessage(conn: WsConn, sid: Buffer, timeoutMs = DEFAULT_WAIT_MS): Promise<Buffer> {
  return parseResult(await conn.nextFrame(timeoutMs), sid);
}

/** Reads an error frame and then the end of the socket; returns the error. */
export async function readErrorAndEnd(conn: WsConn, timeoutMs = DEFAULT_WAIT_MS): Promise<ErrorBody> {
  const err = parseError(await conn.nextFrame(timeoutMs));
  const end = await conn.awaitEnd(timeoutMs);
  assert.deepEqual(end.frames, [], 'frames after the error frame');
  return err;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** One plain HTTP/1.1 request on its own connection. */
export function http(
  port: number,
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, method, path, headers: options.headers, agent: false, timeout: options.timeoutMs ?? DEFAULT_WAIT_MS },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer`)));
    req.on('error', reject);
    req.end(options.body);
  });
}

/** REST NewCipherBox (body = CipherBoxAuth with lnd_auth). */
export function restCreateBox(port: number, sid: Buffer, headers: Record<string, string> = {}): Promise<HttpResponse> {
  return http(port, 'POST', HASHMAIL_PATH, {
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ desc: { stream_id: b64(sid) }, lnd_auth: {} }),
  });
}

/** Splits a comma-separated header into lower-cased tokens. */
export function headerTokens(value: string | string[] | undefined): string[] {
  const s = Array.isArray(value) ? value.join(',') : (value ?? '');
  return s
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t.length > 0);
}

/** The sockets a test opened and still holds, so its `after` closes whatever is left open. */
export class OpenSockets {
  private readonly open = new Set<WsConn>();

  async track(opening: Promise<WsConn>): Promise<WsConn> {
    const conn = await opening;
    this.open.add(conn);
    return conn;
  }

  forget(...conns: WsConn[]): void {
    for (const c of conns) this.open.delete(c);
  }

  async closeAll(): Promise<void> {
    const all = [...this.open];
    this.open.clear();
    await Promise.all(all.map((s) => s.close()));
  }
}
