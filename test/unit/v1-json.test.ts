/**
 * The legacy gateway's JSON (spec section 4): protojson-style input (both
 * field spellings, both base64 alphabets, padding optional, unknown fields
 * and bad base64 rejected as MALFORMED_REQUEST), several objects per message,
 * and output frames byte for byte as the deployed client matches them.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { HashmailError } from '../../src/session/errors.js';
import {
  cipherBoxDescJson,
  CREATE_SUCCESS_JSON,
  decodeBase64,
  errorFrame,
  maxCipherBoxJsonBytes,
  parseCipherBox as parseBoundedCipherBox,
  parseCipherBoxAuth as parseBoundedCipherBoxAuth,
  parseCipherBoxDesc as parseBoundedCipherBoxDesc,
  resultFrame,
  resultFramePrefix,
  statusJson,
} from '../../src/transport/rest-ws-v1/json-codec.js';
import {
  JsonObjectSplitter,
  MAX_JSON_DEPTH,
  MAX_JSON_FIELDS,
  onlyJsonObject,
  splitJsonObjects,
  type BoundedJson,
} from '../../src/transport/rest-ws-v1/json-splitter.js';

/** 64 bytes whose base64 holds '+' and '/' (standard) or '-' and '_' (URL-safe). */
const SID = Buffer.from(Array.from({ length: 64 }, (_, i) => (i * 251 + 0xfb) & 0xff));
const SID_STD = SID.toString('base64');
const SID_URL = SID.toString('base64url');
const SID_STD_RAW = SID_STD.replace(/=+$/, '');

/** Bound on test inputs (bytes). */
const TEST_MAX_OBJECT_BYTES = 64 * 1024;

/** `text` as the gateway hands it to the codec: through the splitter's bounds, one object (none: null). */
function bounded(text: string): BoundedJson | null {
  return onlyJsonObject(Buffer.from(text), TEST_MAX_OBJECT_BYTES, 'test');
}

/** Exactly one object, as a stream request must be. */
function one(text: string): BoundedJson {
  const json = bounded(text);
  if (json === null) throw new HashmailError('MALFORMED_REQUEST', 'no object');
  return json;
}

const parseCipherBoxDesc = (text: string) => parseBoundedCipherBoxDesc(one(text));
const parseCipherBox = (text: string) => parseBoundedCipherBox(one(text));
const parseCipherBoxAuth = (text: string) => parseBoundedCipherBoxAuth(bounded(text));

function isMalformed(err: unknown): boolean {
  return err instanceof HashmailError && err.code === 'MALFORMED_REQUEST' && err.grpcCode === 3;
}

function isTooLarge(err: unknown): boolean {
  return err instanceof HashmailError && err.code === 'MESSAGE_TOO_LARGE' && err.grpcCode === 8;
}

describe('base64 input', () => {
  test('the test SID exercises both alphabets and padding', () => {
    assert.match(SID_STD, /[+/]/);
    assert.match(SID_URL, /[-_]/);
    assert.ok(SID_STD.endsWith('='));
  });

  test('standard and URL-safe, padded or not, decode alike', () => {
    for (const text of [SID_STD, SID_STD_RAW, SID_URL, `${SID_URL}==`]) {
      assert.deepEqual(decodeBase64(text, 'f'), SID, text);
    }
    assert.deepEqual(decodeBase64('QQ==', 'f'), Buffer.from('A'));
    assert.deepEqual(decodeBase64('QQ', 'f'), Buffer.from('A'));
    assert.deepEqual(decodeBase64('QUI=', 'f'), Buffer.from('AB'));
    assert.deepEqual(decodeBase64('QUI', 'f'), Buffer.from('AB'));
    assert.deepEqual(decodeBase64('', 'f'), Buffer.alloc(0));
  });

  test('invalid base64 is rejected, not silently skipped', () => {
    for (const text of ['QQ=', 'Q===', 'QUJDR', 'QU!D', 'QU D', 'a+b-', 'QQ==QQ==', '====', 'QU\nJD']) {
      assert.throws(() => decodeBase64(text, 'f'), isMalformed, JSON.stringify(text));
    }
  });
});

describe('parsing requests', () => {
  test('CipherBoxDesc accepts stream_id and streamId', () => {
    assert.deepEqual(parseCipherBoxDesc(`{"stream_id":"${SID_STD}"}`), { streamId: SID });
    assert.deepEqual(parseCipherBoxDesc(`{"streamId":"${SID_URL}"}`), { streamId: SID });
    assert.deepEqual(parseCipherBoxDesc(` { "stream_id" : "${SID_STD_RAW}" } `), { streamId: SID });
  });

  test('CipherBoxDesc: unset and null give an empty stream_id', () => {
    assert.deepEqual(parseCipherBoxDesc('{}'), { streamId: Buffer.alloc(0) });
    assert.deepEqual(parseCipherBoxDesc('{"stream_id":null}'), { streamId: Buffer.alloc(0) });
  });

  test('CipherBoxDesc rejects unknown fields, wrong types, both spellings at once, bad base64, bad JSON', () => {
    const bad = [
      `{"stream_id":"${SID_STD}","extra":1}`,
      '{"streamID":"QQ=="}',
      '{"stream_id":5}',
      '{"stream_id":["QQ=="]}',
      '{"stream_id":{}}',
      `{"stream_id":"${SID_STD}","streamId":"${SID_STD}"}`,
      '{"stream_id":"not base64!"}',
      '{"stream_id":"QQ==",}',
      '{"stream_id":',
      '[]',
      'null',
      '"QQ=="',
      '',
    ];
    for (const text of bad) assert.throws(() => parseCipherBoxDesc(text), isMalformed, text);
  });

  test('CipherBox: desc and msg in either alphabet; missing parts', () => {
    const msg = Buffer.from([0xfb, 0xff, 0xfe, 0x00, 0x01]);
    assert.deepEqual(parseCipherBox(`{"desc":{"stream_id":"${SID_STD}"},"msg":"${msg.toString('base64')}"}`), {
      desc: { streamId: SID },
      msg,
    });
    assert.deepEqual(parseCipherBox(`{"msg":"${msg.toString('base64url')}","desc":{"streamId":"${SID_URL}"}}`), {
      desc: { streamId: SID },
      msg,
    });
    assert.deepEqual(parseCipherBox('{"msg":"QQ"}'), { desc: null, msg: Buffer.from('A') });
    assert.deepEqual(parseCipherBox('{"desc":null,"msg":null}'), { desc: null, msg: Buffer.alloc(0) });
    assert.deepEqual(parseCipherBox('{"desc":{},"msg":""}'), { desc: { streamId: Buffer.alloc(0) }, msg: Buffer.alloc(0) });
  });

  test('CipherBox rejects unknown fields (also inside desc) and wrong types', () => {
    const bad = [
      '{"msg":"QQ==","message":"QQ=="}',
      '{"desc":{"stream_id":"QQ==","x":true}}',
      '{"desc":"QQ=="}',
      '{"desc":[]}',
      '{"msg":1}',
      '{"msg":"Q"}',
      '{"msg":"QQ=="} trailing',
    ];
    for (const text of bad) assert.throws(() => parseCipherBox(text), isMalformed, text);
  });

  test('CipherBoxAuth: lnd_auth and lndAuth set the oneof, null leaves it unset', () => {
    assert.deepEqual(parseCipherBoxAuth(`{"desc":{"stream_id":"${SID_STD}"},"lnd_auth":{}}`), {
      desc: { streamId: SID },
      hasAuth: true,
    });
    assert.deepEqual(parseCipherBoxAuth(`{"desc":{"streamId":"${SID_URL}"},"lndAuth":{}}`), {
      desc: { streamId: SID },
      hasAuth: true,
    });
    assert.deepEqual(parseCipherBoxAuth('{"lnd_auth":null}'), { desc: null, hasAuth: false });
    assert.deepEqual(parseCipherBoxAuth('{}'), { desc: null, hasAuth: false });
    assert.deepEqual(parseCipherBoxAuth(''), { desc: null, hasAuth: false });
  });

  test('CipherBoxAuth rejects unknown fields, a non-empty LndAuth, wrong types', () => {
    const bad = [
      '{"auth":{}}',
      '{"lnd_auth":{"macaroon":"x"}}',
      '{"lnd_auth":true}',
      '{"lnd_auth":{},"lndAuth":{}}',
      '{"desc":5}',
      '{',
    ];
    for (const text of bad) assert.throws(() => parseCipherBoxAuth(text), isMalformed, text);
  });
});

describe('several objects per message', () => {
  test('concatenated, newline- and whitespace-separated objects split in order', () => {
    const a = '{"desc":{"stream_id":"QQ=="},"msg":"QUI="}';
    const b = '{"msg":"e30="}';
    const c = '{"msg":"In0ie30="}';
    const data = Buffer.from(` \n${a}${b}\r\n\t ${c}\n\n`);
    assert.deepEqual(splitJsonObjects(data, 1024), [a, b, c]);
  });

  test('braces, quotes and backslashes inside strings do not cut objects', () => {
    const a = '{"msg":"}{\\"\\\\"}';
    const b = '{"x":{"y":[1,{"z":"]"}]}}';
    assert.deepEqual(splitJsonObjects(Buffer.from(a + b), 1024), [a, b]);
  });

  test('whitespace alone gives no object', () => {
    assert.deepEqual(splitJsonObjects(Buffer.from(' \r\n\t'), 1024), []);
    assert.deepEqual(splitJsonObjects(Buffer.alloc(0), 1024), []);
  });

  test('non-object values, unfinished objects and deep nesting are malformed', () => {
    for (const text of ['[1]', '"x"', '1', '{"a":1} x', '{"a":1', '{"a":"}', `{"a":${'['.repeat(40)}`]) {
      assert.throws(() => splitJsonObjects(Buffer.from(text), 1024), isMalformed, text);
    }
  });

  test('an object over the bound is RESOURCE_EXHAUSTED', () => {
    const big = `{"msg":"${'A'.repeat(100)}"}`;
    assert.throws(() => splitJsonObjects(Buffer.from(big), 50), isTooLarge);
    assert.deepEqual(splitJsonObjects(Buffer.from(big), big.length), [big]);
  });

  test('the incremental splitter joins objects cut across chunks, at every cut point', () => {
    const objects = ['{"desc":{"stream_id":"QQ=="},"msg":"QUI="}', '{"msg":"\\"}{"}', '{"msg":""}'];
    const text = Buffer.from(`${objects[0]}\n${objects[1]}  ${objects[2]}`);
    for (let cut = 0; cut <= text.length; cut++) {
      for (let cut2 = cut; cut2 <= text.length; cut2 += 7) {
        const out: string[] = [];
        const splitter = new JsonObjectSplitter(1024);
        splitter.push(text.subarray(0, cut), (o) => out.push(o));
        splitter.push(text.subarray(cut, cut2), (o) => out.push(o));
        splitter.push(text.subarray(cut2), (o) => out.push(o));
        splitter.end();
        assert.deepEqual(out, objects, `cut at ${cut}/${cut2}`);
      }
    }
  });

  test('the incremental splitter bounds an object spread over chunks', () => {
    const splitter = new JsonObjectSplitter(20);
    splitter.push(Buffer.from('{"msg":"AAAA'), () => {});
    assert.throws(() => splitter.push(Buffer.from('AAAAAAAAAAAA'), () => {}), isTooLarge);
  });

  test('end() in the middle of an object is malformed', () => {
    const splitter = new JsonObjectSplitter(1024);
    splitter.push(Buffer.from('{"msg":'), () => {});
    assert.throws(() => splitter.end(), isMalformed);
  });

  test('the bound fits a maximal message', () => {
    const maxMessageBytes = 1000;
    const msg = Buffer.alloc(maxMessageBytes, 0xff);
    const json = `{"desc":{"stream_id":"${SID_STD}"},\n  "msg": "${msg.toString('base64')}"}`;
    assert.ok(json.length <= maxCipherBoxJsonBytes(maxMessageBytes));
  });
});

/** `{"k0":0,"k1":0,...}` with `n` keys. */
function objectOfKeys(n: number): string {
  return `{${Array.from({ length: n }, (_, i) => `"k${i}":0`).join(',')}}`;
}

/** `depth` objects nested in each other, the outer one counting 1. */
function nested(depth: number): string {
  return '{"a":'.repeat(depth - 1) + '{}' + '}'.repeat(depth - 1);
}

function isOverBound(what: RegExp): (err: unknown) => boolean {
  return (err) => isMalformed(err) && what.test((err as Error).message);
}

const OVER_FIELDS = isOverBound(new RegExp(`more than ${MAX_JSON_FIELDS} fields`));
const OVER_DEPTH = isOverBound(new RegExp(`deeper than ${MAX_JSON_DEPTH} levels`));

describe('parse bounds: fields and depth, checked while scanning', () => {
  test('the bounds leave room over the largest legal requests', () => {
    const legal = [
      `{"desc":{"stream_id":"${SID_STD}"},"msg":"QQ=="}`,
      `{"desc":{"stream_id":"${SID_STD}"},"lnd_auth":{}}`,
      '{"desc":null,"msg":null}',
    ];
    for (const text of legal) assert.deepEqual(splitJsonObjects(Buffer.from(text), 1024), [text]);
    assert.ok(MAX_JSON_FIELDS >= 8 && MAX_JSON_DEPTH >= 3);
  });

  test(`up to ${MAX_JSON_FIELDS} fields pass the scan; one more is INVALID_ARGUMENT naming the bound`, () => {
    const atLimit = objectOfKeys(MAX_JSON_FIELDS);
    assert.deepEqual(splitJsonObjects(Buffer.from(atLimit), 1024), [atLimit]);
    // Past the scan, the codec names the first unknown key.
    assert.throws(() => parseCipherBox(atLimit), isOverBound(/unknown field "k0" in CipherBox/));
    assert.throws(() => splitJsonObjects(Buffer.from(objectOfKeys(MAX_JSON_FIELDS + 1)), 1024), OVER_FIELDS);
  });

  test('fields are counted at every level, array elements included, separators in strings not', () => {
    const perLevel = Math.floor(MAX_JSON_FIELDS / 2);
    const inner = objectOfKeys(perLevel);
    const spread = `{${Array.from({ length: perLevel - 1 }, (_, i) => `"o${i}":0`).join(',')},"in":${inner}}`;
    assert.equal(splitJsonObjects(Buffer.from(spread), 1024).length, 1);
    const spreadOver = spread.replace('"o0":0', '"o0":0,"extra":0');
    assert.throws(() => splitJsonObjects(Buffer.from(spreadOver), 1024), OVER_FIELDS);
    const array = (n: number): string => `{"msg":[${Array.from({ length: n }, () => '0').join(',')}]}`;
    // One key plus n - 1 separators.
    assert.equal(splitJsonObjects(Buffer.from(array(MAX_JSON_FIELDS)), 1024).length, 1);
    assert.throws(() => splitJsonObjects(Buffer.from(array(MAX_JSON_FIELDS + 1)), 1024), OVER_FIELDS);
    const punctuation = `{"msg":"${',:'.repeat(1000)}"}`;
    assert.equal(splitJsonObjects(Buffer.from(punctuation), 4096).length, 1);
  });

  test('each object of a message has its own field count', () => {
    const text = objectOfKeys(MAX_JSON_FIELDS).repeat(3);
    assert.equal(splitJsonObjects(Buffer.from(text), 1024).length, 3);
  });

  test(`nesting up to ${MAX_JSON_DEPTH} levels passes; one more is INVALID_ARGUMENT naming the bound`, () => {
    assert.equal(splitJsonObjects(Buffer.from(nested(MAX_JSON_DEPTH)), 1024).length, 1);
    assert.throws(() => splitJsonObjects(Buffer.from(nested(MAX_JSON_DEPTH + 1)), 1024), OVER_DEPTH);
    const arrays = `{"a":${'['.repeat(MAX_JSON_DEPTH - 1)}${']'.repeat(MAX_JSON_DEPTH - 1)}}`;
    assert.equal(splitJsonObjects(Buffer.from(arrays), 1024).length, 1);
    assert.throws(() => splitJsonObjects(Buffer.from(`{"a":${'['.repeat(MAX_JSON_DEPTH)}`), 1024), OVER_DEPTH);
  });

  test('450,000 keys: refused at the first excess, before the size bound or the end is seen', () => {
    const storm = Buffer.from(objectOfKeys(450_000));
    assert.ok(storm.length > 5_000_000);
    assert.throws(() => splitJsonObjects(storm, storm.length), OVER_FIELDS);
    // Streamed: the first chunk already fails, though the bound on size is far smaller than the object.
    const splitter = new JsonObjectSplitter(1024);
    assert.throws(() => splitter.push(storm.subarray(0, 512), () => assert.fail('no object completes')), OVER_FIELDS);
  });

  test('a string of escapes is scanned in linear time (quotes and backslashes searched once)', { timeout: 20_000 }, () => {
    const escapes = '\\"\\\\'.repeat(1_000_000);
    const text = `{"msg":"${escapes}"}{"msg":"QQ=="}`;
    const out = splitJsonObjects(Buffer.from(text), text.length);
    assert.deepEqual(out, [`{"msg":"${escapes}"}`, '{"msg":"QQ=="}']);
  });

  test('non-ASCII text is decoded as UTF-8, also when cut across chunks', () => {
    const text = '{"msg":"\u00e9\u{1F600}"}';
    assert.deepEqual(splitJsonObjects(Buffer.from(text), 1024), [text]);
    const bytes = Buffer.from(text);
    const out: string[] = [];
    const splitter = new JsonObjectSplitter(1024);
    splitter.push(bytes.subarray(0, 10), (o) => out.push(o));
    splitter.push(bytes.subarray(10), (o) => out.push(o));
    assert.deepEqual(out, [text]);
  });

  test('a request body holds one object: several are INVALID_ARGUMENT, whitespace is none', () => {
    assert.equal(onlyJsonObject(Buffer.from(' \n'), 1024, 'CipherBoxAuth'), null);
    assert.equal(onlyJsonObject(Buffer.from('{} '), 1024, 'CipherBoxAuth'), '{}');
    assert.throws(() => onlyJsonObject(Buffer.from('{}{}'), 1024, 'CipherBoxAuth'), isOverBound(/one CipherBoxAuth object/));
  });
});

describe('client text in errors', () => {
  test('an unknown key is quoted short to the client and only counted in the log text', () => {
    const key = `${SID_STD}${'x'.repeat(5 * 1024 * 1024)}`;
    let caught: unknown;
    try {
      const text = `{${JSON.stringify(key)}:1}`;
      parseBoundedCipherBox(onlyJsonObject(Buffer.from(text), text.length, 'CipherBox') as BoundedJson);
    } catch (err) {
      caught = err;
    }
    assert.ok(caught instanceof HashmailError && isMalformed(caught));
    assert.ok(caught.message.length < 200, caught.message);
    assert.match(caught.message, new RegExp(`^unknown field "${SID_STD.slice(0, 32).replace(/[+/]/g, '\\$&')}"\\.\\.\\. \\(${key.length} chars\\) in CipherBox$`));
    assert.equal(caught.logMessage, `unknown field <${key.length} chars of client input> in CipherBox`);
  });
});

describe('output frames', () => {
  test('result frame: exactly desc as sent and msg, standard padded base64', () => {
    const prefix = resultFramePrefix({ streamId: SID });
    const msg = Buffer.from([0xfb, 0xff]);
    assert.equal(resultFrame(prefix, msg), `{"result":{"desc":{"stream_id":"${SID_STD}"},"msg":"+/8="}}`);
    assert.deepEqual(Object.keys(JSON.parse(resultFrame(prefix, msg))), ['result']);
    assert.deepEqual(Object.keys(JSON.parse(resultFrame(prefix, msg)).result), ['desc', 'msg']);
  });

  test('a 0-byte message is "msg":""', () => {
    const prefix = resultFramePrefix({ streamId: SID });
    assert.equal(resultFrame(prefix, Buffer.alloc(0)), `{"result":{"desc":{"stream_id":"${SID_STD}"},"msg":""}}`);
  });

  test('a desc sent URL-safe comes back in standard base64', () => {
    const desc = parseCipherBoxDesc(`{"streamId":"${SID_URL}"}`);
    assert.equal(resultFrame(resultFramePrefix(desc), Buffer.from('A')), `{"result":{"desc":{"stream_id":"${SID_STD}"},"msg":"QQ=="}}`);
  });

  test('error frame and unwrapped status', () => {
    const notFound = new HashmailError('STREAM_NOT_FOUND');
    assert.equal(errorFrame(notFound), '{"error":{"code":5,"message":"stream not found","details":[]}}');
    assert.equal(statusJson(notFound), '{"code":5,"message":"stream not found","details":[]}');
    assert.equal(
      errorFrame(new HashmailError('SERVER_SHUTTING_DOWN')),
      '{"error":{"code":14,"message":"server shutting down","details":[]}}',
    );
    assert.equal(statusJson(new HashmailError('METHOD_NOT_ALLOWED')), '{"code":12,"message":"Method Not Allowed","details":[]}');
    assert.equal(statusJson(new HashmailError('STREAM_EXISTS')), '{"code":6,"message":"stream already active","details":[]}');
  });

  test('error text is JSON-escaped', () => {
    const err = new HashmailError('MALFORMED_REQUEST', 'bad "field"\n');
    assert.equal(statusJson(err), '{"code":3,"message":"bad \\"field\\"\\n","details":[]}');
    assert.deepEqual(JSON.parse(errorFrame(err)), { error: { code: 3, message: 'bad "field"\n', details: [] } });
  });

  test('create answer and CipherBoxDesc answer', () => {
    assert.equal(CREATE_SUCCESS_JSON, '{"success":{"desc":null}}');
    assert.equal(cipherBoxDescJson({ streamId: SID }), `{"stream_id":"${SID_STD}"}`);
  });
});
