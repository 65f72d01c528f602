/**
 * protojson-style JSON for the legacy hashmailrpc messages, as the reference's
 * grpc-gateway speaks it (spec section 4). Input is lenient where protojson is
 * (`stream_id` or `streamId`, standard or URL-safe base64, padded or not,
 * `null` for an unset field) and strict where it is (unknown field, wrong
 * type, invalid base64: INVALID_ARGUMENT). Output is compact and carries
 * exactly the fields the deployed client expects: it fails hard on anything
 * else, including an unknown field inside a CipherBox. Input text comes from
 * json-splitter (BoundedJson): its scan has bounded what JSON.parse may do.
 */
import { clientInputError, HashmailError } from '../../session/errors.js';
import type { CipherBox, CipherBoxAuth, CipherBoxDesc } from '../grpc-v1/codec.js';
import type { BoundedJson } from './json-splitter.js';

export type { CipherBox, CipherBoxAuth, CipherBoxDesc };

/**
 * JSON around one CipherBox besides its base64 `msg`: keys, the 88-character
 * stream_id, quotes and whitespace a client may put between them (bytes).
 */
export const CIPHER_BOX_JSON_OVERHEAD_BYTES = 4096;

/** Body of a successful NewCipherBox: `success` present, its `desc` unset (emitted as null). */
export const CREATE_SUCCESS_JSON = '{"success":{"desc":null}}';
/** Body of a successful DelCipherBox (DelCipherBoxResp is empty). */
export const EMPTY_OBJECT_JSON = '{}';

const EMPTY: Buffer = Buffer.alloc(0);
const EQUALS = 0x3d;
const STD_BASE64 = /^[A-Za-z0-9+/]*$/;
const URL_BASE64 = /^[A-Za-z0-9_-]*$/;
const RESULT_FRAME_SUFFIX = '"}}';

function malformed(what: string): HashmailError {
  return new HashmailError('MALFORMED_REQUEST', what);
}

/** Largest JSON text of one CipherBox carrying a message of `maxMessageBytes` (bytes). */
export function maxCipherBoxJsonBytes(maxMessageBytes: number): number {
  return 4 * Math.ceil(maxMessageBytes / 3) + CIPHER_BOX_JSON_OVERHEAD_BYTES;
}

/**
 * Decodes base64 the way protojson does: URL-safe if it holds `-` or `_`,
 * standard otherwise, padding optional (but correct if present). Node's
 * decoder skips invalid characters silently, so the alphabet is checked first.
 */
export function decodeBase64(text: string, field: string): Buffer {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === EQUALS) end--;
  const padding = text.length - end;
  const bad = (): HashmailError => malformed(`invalid base64 in ${field}`);
  if (padding > 2 || (padding > 0 && text.length % 4 !== 0) || end % 4 === 1) throw bad();
  const body = padding === 0 ? text : text.slice(0, end);
  if (!STD_BASE64.test(body) && !URL_BASE64.test(body)) throw bad();
  return Buffer.from(body, 'base64');
}

/** Parses one JSON text that must be an object. */
function parseJsonObject(text: BoundedJson, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw malformed(`invalid JSON in ${what}`);
  }
  return expectObject(value, what);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function expectObject(value: unknown, what: string): Record<string, unknown> {
  if (!isObject(value)) throw malformed(`${what}: expected a JSON object`);
  return value;
}

function readBytes(value: unknown, field: string): Buffer {
  if (value === null) return EMPTY;
  if (typeof value !== 'string') throw malformed(`${field}: expected a base64 string`);
  return value.length === 0 ? EMPTY : decodeBase64(value, field);
}

function unknownField(key: string, what: string): HashmailError {
  // The key is client text: quoted short to the client, only its length logged.
  return clientInputError('MALFORMED_REQUEST', key, (quoted) => `unknown field ${quoted} in ${what}`);
}

function duplicateField(field: string, what: string): HashmailError {
  return malformed(`field "${field}" given twice in ${what}`);
}

/** CipherBoxDesc from a parsed JSON value; null stands for "unset". */
export function readCipherBoxDesc(value: unknown, what: string): CipherBoxDesc | null {
  if (value === null) return null;
  const obj = expectObject(value, what);
  let streamId: Buffer = EMPTY;
  let seen = false;
  for (const key of Object.keys(obj)) {
    if (key !== 'stream_id' && key !== 'streamId') throw unknownField(key, what);
    if (seen) throw duplicateField('stream_id', what);
    seen = true;
    streamId = readBytes(obj[key], `${what}.stream_id`);
  }
  return { streamId };
}

/** CipherBoxDesc from JSON text (RecvStream request). `{}` gives an empty stream_id. */
export function parseCipherBoxDesc(text: BoundedJson): CipherBoxDesc {
  return readCipherBoxDesc(parseJsonObject(text, 'CipherBoxDesc'), 'CipherBoxDesc') as CipherBoxDesc;
}

/** CipherBox from JSON text (SendStream message). */
export function parseCipherBox(text: BoundedJson): CipherBox {
  const obj = parseJsonObject(text, 'CipherBox');
  let desc: CipherBoxDesc | null = null;
  let msg: Buffer = EMPTY;
  for (const key of Object.keys(obj)) {
    if (key === 'desc') desc = readCipherBoxDesc(obj[key], 'CipherBox.desc');
    else if (key === 'msg') msg = readBytes(obj[key], 'CipherBox.msg');
    else throw unknownField(key, 'CipherBox');
  }
  return { desc, msg };
}

/** CipherBoxAuth from a parsed JSON object (NewCipherBox body). */
export function readCipherBoxAuth(obj: Record<string, unknown>): CipherBoxAuth {
  let desc: CipherBoxDesc | null = null;
  let hasAuth = false;
  let authSeen = false;
  for (const key of Object.keys(obj)) {
    if (key === 'desc') {
      desc = readCipherBoxDesc(obj[key], 'CipherBoxAuth.desc');
    } else if (key === 'lnd_auth' || key === 'lndAuth') {
      if (authSeen) throw duplicateField('lnd_auth', 'CipherBoxAuth');
      authSeen = true;
      const value = obj[key];
      // LndAuth is empty: `{}` sets the oneof, `null` leaves it unset.
      if (value === null) continue;
      const auth = expectObject(value, 'CipherBoxAuth.lnd_auth');
      for (const inner of Object.keys(auth)) throw unknownField(inner, 'CipherBoxAuth.lnd_auth');
      hasAuth = true;
    } else {
      throw unknownField(key, 'CipherBoxAuth');
    }
  }
  return { desc, hasAuth };
}

/** CipherBoxAuth from JSON text; null (an empty body) is the empty message, as grpc-gateway reads it. */
export function parseCipherBoxAuth(text: BoundedJson | null): CipherBoxAuth {
  if (text === null) return { desc: null, hasAuth: false };
  return readCipherBoxAuth(parseJsonObject(text, 'CipherBoxAuth'));
}

/**
 * The constant head of every result frame of one receive stream:
 * `{"result":{"desc":{"stream_id":"<sid>"},"msg":"`. Computed once per stream
 * so each message costs one base64 encode and one concatenation.
 */
export function resultFramePrefix(desc: CipherBoxDesc): string {
  return `{"result":{"desc":{"stream_id":"${desc.streamId.toString('base64')}"},"msg":"`;
}

/** `{"result":{"desc":{...},"msg":"<base64>"}}` from a prefix made by resultFramePrefix. */
export function resultFrame(prefix: string, msg: Buffer): string {
  return prefix + msg.toString('base64') + RESULT_FRAME_SUFFIX;
}

/** The gRPC-gateway status body: `{"code":N,"message":"...","details":[]}`. */
export function statusJson(err: HashmailError): string {
  return `{"code":${err.grpcCode},"message":${JSON.stringify(err.message)},"details":[]}`;
}

/** A stream's failure frame: `{"error":{"code":N,"message":"...","details":[]}}`. */
export function errorFrame(err: HashmailError): string {
  return `{"error":${statusJson(err)}}`;
}

/** CipherBoxDesc as JSON: `{"stream_id":"<base64>"}` (the SendStream answer). */
export function cipherBoxDescJson(desc: CipherBoxDesc): string {
  return `{"stream_id":"${desc.streamId.toString('base64')}"}`;
}
