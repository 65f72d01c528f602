/**
 * The hand-written v1 codec against protobufjs reading proto/hashmailrpc.proto:
 * the proto file is the wire reference, so every message must round-trip both
 * ways (ours -> protobufjs and protobufjs -> ours), and malformed input must
 * fail as MALFORMED_REQUEST, never as a crash or a silently short message.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import protobuf from 'protobufjs';
import {
  CIPHER_INIT_SUCCESS,
  cipherBoxDescField,
  encodeOutgoingCipherBox,
  encodeOutgoingCipherBoxReused,
  decodeCipherBox,
  decodeCipherBoxAuth,
  decodeCipherBoxDesc,
  decodeCipherInitResp,
  decodeEmpty,
  EMPTY_MESSAGE,
  encodeCipherBox,
  encodeCipherBoxAuth,
  encodeCipherBoxDesc,
  type CipherBox,
  type CipherBoxAuth,
} from '../../src/transport/grpc-v1/codec.js';
import { HashmailError } from '../../src/session/errors.js';

const PROTO_FILE = join(fileURLToPath(new URL('../..', import.meta.url)), 'proto/hashmailrpc.proto');
const root = protobuf.loadSync(PROTO_FILE);
const pb = (name: string): protobuf.Type => root.lookupType(`hashmailrpc.${name}`);

const PbCipherBoxDesc = pb('CipherBoxDesc');
const PbCipherBox = pb('CipherBox');
const PbCipherBoxAuth = pb('CipherBoxAuth');
const PbCipherInitResp = pb('CipherInitResp');
const PbDelCipherBoxResp = pb('DelCipherBoxResp');
const PbLndAuth = pb('LndAuth');

/** Deterministic filler so a failure shows the same bytes every run. */
function bytes(length: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** Length edges of a varint length prefix (1, 2, 3 bytes) plus the gRPC limit. */
const MSG_LENGTHS = [0, 1, 127, 128, 4093, 16_383, 16_384, 70_000, 4 * 1024 * 1024];
const SID_LENGTHS = [0, 1, 63, 64, 65, 128];

/**
 * proto3 omits an empty bytes field on the wire (Go, which every deployed
 * peer runs, does); protobufjs writes any field that is set, even empty. So
 * the canonical encoding drops empty bytes first, and the raw one keeps them
 * to check that we also read what a non-canonical encoder sends.
 */
function withoutEmptyBytes(value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (v instanceof Uint8Array) {
      if (v.length > 0) out[k] = v;
    } else if (v !== null && typeof v === 'object') out[k] = withoutEmptyBytes(v as Record<string, unknown>);
    else out[k] = v;
  }
  return out;
}

function pbEncode(type: protobuf.Type, value: Record<string, unknown>, canonical = true): Buffer {
  const err = type.verify(value);
  assert.equal(err, null, `protobufjs rejects test value: ${err}`);
  const v = canonical ? withoutEmptyBytes(value) : value;
  return Buffer.from(type.encode(type.create(v)).finish());
}

function pbDecode(type: protobuf.Type, buf: Buffer): Record<string, unknown> {
  return type.toObject(type.decode(buf), { bytes: Buffer as unknown as typeof String, oneofs: true, defaults: false }) as Record<
    string,
    unknown
  >;
}

/** protobufjs leaves an absent proto3 bytes field undefined (defaults: false); an empty one reads the same. */
function pbBytes(obj: Record<string, unknown> | undefined, key: string): Buffer {
  const v = obj?.[key];
  return v === undefined ? Buffer.alloc(0) : Buffer.from(v as Uint8Array);
}

describe('v1 codec: CipherBoxDesc', () => {
  for (const len of SID_LENGTHS) {
    test(`stream_id of ${len} bytes: ours -> protobufjs -> ours`, () => {
      const streamId = bytes(len, len);
      const wire = encodeCipherBoxDesc({ streamId });
      const decoded = pbDecode(PbCipherBoxDesc, wire);
      assert.ok(pbBytes(decoded, 'streamId').equals(streamId));
      assert.ok(decodeCipherBoxDesc(wire).streamId.equals(streamId));
    });

    test(`stream_id of ${len} bytes: protobufjs -> ours`, () => {
      const streamId = bytes(len, len + 7);
      const wire = pbEncode(PbCipherBoxDesc, { streamId });
      assert.ok(decodeCipherBoxDesc(wire).streamId.equals(streamId));
      assert.ok(decodeCipherBoxDesc(pbEncode(PbCipherBoxDesc, { streamId }, false)).streamId.equals(streamId), 'non-canonical');
      assert.ok(encodeCipherBoxDesc({ streamId }).equals(wire), 'same bytes as protobufjs');
    });
  }
});

describe('v1 codec: CipherBox', () => {
  const sid = bytes(64, 9);
  const cases: { name: string; box: CipherBox }[] = [
    { name: 'no desc, empty msg', box: { desc: null, msg: Buffer.alloc(0) } },
    { name: 'no desc, 5-byte msg', box: { desc: null, msg: bytes(5) } },
    { name: 'desc with empty stream_id', box: { desc: { streamId: Buffer.alloc(0) }, msg: bytes(3) } },
    ...MSG_LENGTHS.map((len) => ({ name: `desc + ${len}-byte msg`, box: { desc: { streamId: sid }, msg: bytes(len, len) } })),
  ];

  for (const { name, box } of cases) {
    test(`${name}: ours -> protobufjs`, () => {
      const wire = encodeCipherBox(box);
      const decoded = pbDecode(PbCipherBox, wire);
      if (box.desc === null) assert.equal(decoded.desc, undefined, 'desc must be absent');
      else assert.ok(pbBytes(decoded.desc as Record<string, unknown>, 'streamId').equals(box.desc.streamId));
      assert.ok(pbBytes(decoded, 'msg').equals(box.msg));
    });

    test(`${name}: protobufjs -> ours`, () => {
      const value: Record<string, unknown> = { msg: box.msg };
      if (box.desc) value.desc = { streamId: box.desc.streamId };
      const wire = pbEncode(PbCipherBox, value);
      for (const input of [wire, pbEncode(PbCipherBox, value, false)]) {
        const decoded = decodeCipherBox(input);
        if (box.desc === null) assert.equal(decoded.desc, null);
        else assert.ok(decoded.desc?.streamId.equals(box.desc.streamId));
        assert.ok(decoded.msg.equals(box.msg));
      }
      assert.ok(encodeCipherBox(box).equals(wire), 'same bytes as protobufjs');
    });
  }

  for (const len of MSG_LENGTHS) {
    test(`encodeOutgoingCipherBox (RecvStream path), ${len}-byte msg, equals protobufjs`, () => {
      for (const streamId of [sid, Buffer.alloc(0), bytes(63)]) {
        const msg = bytes(len, 3);
        const wire = encodeOutgoingCipherBox({ descField: cipherBoxDescField({ streamId }), msg });
        assert.ok(wire.equals(pbEncode(PbCipherBox, { desc: { streamId }, msg })), `stream_id ${streamId.length} bytes`);
        const back = decodeCipherBox(wire);
        assert.ok(back.desc?.streamId.equals(streamId));
        assert.ok(back.msg.equals(msg));
      }
    });
  }

  test('the reused RecvStream encoder gives the same bytes, in one buffer it overwrites, up to its bound', () => {
    const descField = cipherBoxDescField({ streamId: sid });
    const seen = new Set<ArrayBufferLike>();
    // Growing sizes grow the reused buffer; the same size again reuses it.
    for (const len of [...MSG_LENGTHS, 40_000, 40_000, 200_000]) {
      const msg = bytes(len, 5);
      const wire = encodeOutgoingCipherBoxReused({ descField, msg });
      assert.ok(wire.equals(pbEncode(PbCipherBox, { desc: { streamId: sid }, msg })), `${len}-byte msg`);
      seen.add(wire.buffer);
    }
    const first = encodeOutgoingCipherBoxReused({ descField, msg: bytes(10, 1) });
    const second = encodeOutgoingCipherBoxReused({ descField, msg: bytes(10, 2) });
    assert.equal(first.buffer, second.buffer, 'one buffer, overwritten by the next call');
    assert.ok(decodeCipherBox(first).msg.equals(bytes(10, 2)));
    assert.ok(seen.size < MSG_LENGTHS.length + 3, 'the buffer is reused, not allocated per message');
    // Over the bound: a buffer of its own, which the next call leaves alone.
    const big = bytes(300 * 1024, 7);
    const own = encodeOutgoingCipherBoxReused({ descField, msg: big });
    encodeOutgoingCipherBoxReused({ descField, msg: bytes(300 * 1024, 8) });
    assert.ok(decodeCipherBox(own).msg.equals(big));
  });

  test('later duplicate msg field wins, as in protobuf', () => {
    const wire = Buffer.concat([pbEncode(PbCipherBox, { msg: bytes(4, 1) }), pbEncode(PbCipherBox, { msg: bytes(6, 2) })]);
    assert.ok(decodeCipherBox(wire).msg.equals(bytes(6, 2)));
    assert.ok(pbBytes(pbDecode(PbCipherBox, wire), 'msg').equals(bytes(6, 2)));
  });

  test('unknown fields of every wire type are skipped', () => {
    const known = pbEncode(PbCipherBox, { desc: { streamId: sid }, msg: bytes(10) });
    const unknown = Buffer.from([
      // field 7 varint 300
      0x38, 0xac, 0x02,
      // field 8 fixed64
      0x41, 1, 2, 3, 4, 5, 6, 7, 8,
      // field 9 length-delimited, 2 bytes
      0x4a, 0x02, 0xaa, 0xbb,
      // field 10 fixed32
      0x55, 1, 2, 3, 4,
    ]);
    const decoded = decodeCipherBox(Buffer.concat([unknown, known, unknown]));
    assert.ok(decoded.desc?.streamId.equals(sid));
    assert.ok(decoded.msg.equals(bytes(10)));
  });
});

describe('v1 codec: CipherBoxAuth', () => {
  const cases: { name: string; auth: CipherBoxAuth }[] = [
    { name: 'empty', auth: { desc: null, hasAuth: false } },
    { name: 'auth only', auth: { desc: null, hasAuth: true } },
    { name: 'desc only', auth: { desc: { streamId: bytes(64) }, hasAuth: false } },
    { name: 'desc with empty stream_id + auth', auth: { desc: { streamId: Buffer.alloc(0) }, hasAuth: true } },
    { name: 'desc + auth', auth: { desc: { streamId: bytes(64) }, hasAuth: true } },
  ];

  for (const { name, auth } of cases) {
    test(`${name}: ours -> protobufjs`, () => {
      const decoded = pbDecode(PbCipherBoxAuth, encodeCipherBoxAuth(auth));
      if (auth.desc === null) assert.equal(decoded.desc, undefined);
      else assert.ok(pbBytes(decoded.desc as Record<string, unknown>, 'streamId').equals(auth.desc.streamId));
      assert.equal(decoded.auth, auth.hasAuth ? 'lndAuth' : undefined);
      assert.equal(decoded.lndAuth !== undefined, auth.hasAuth);
    });

    test(`${name}: protobufjs -> ours`, () => {
      const value: Record<string, unknown> = {};
      if (auth.desc) value.desc = { streamId: auth.desc.streamId };
      if (auth.hasAuth) value.lndAuth = {};
      const wire = pbEncode(PbCipherBoxAuth, value);
      const decoded = decodeCipherBoxAuth(wire);
      assert.equal(decoded.hasAuth, auth.hasAuth);
      if (auth.desc === null) assert.equal(decoded.desc, null);
      else assert.ok(decoded.desc?.streamId.equals(auth.desc.streamId));
      assert.ok(encodeCipherBoxAuth(auth).equals(wire), 'same bytes as protobufjs');
    });
  }

  test('an LndAuth carrying unknown fields is still auth', () => {
    const wire = Buffer.concat([pbEncode(PbCipherBoxAuth, { desc: { streamId: bytes(64) } }), Buffer.from([0x12, 0x02, 0x08, 0x01])]);
    assert.equal(decodeCipherBoxAuth(wire).hasAuth, true);
  });
});

describe('v1 codec: CipherInitResp, empty messages', () => {
  test('success encodes as bytes 0a 00', () => {
    assert.deepEqual([...CIPHER_INIT_SUCCESS], [0x0a, 0x00]);
    assert.ok(pbEncode(PbCipherInitResp, { success: {} }).equals(CIPHER_INIT_SUCCESS), 'protobufjs agrees');
  });

  test('success: ours -> protobufjs', () => {
    const decoded = pbDecode(PbCipherInitResp, CIPHER_INIT_SUCCESS);
    assert.equal(decoded.resp, 'success');
    assert.deepEqual(decoded.success, {});
  });

  test('protobufjs -> ours: success, success with desc, challenge, error, empty', () => {
    assert.deepEqual(decodeCipherInitResp(pbEncode(PbCipherInitResp, { success: {} })), { success: true });
    assert.deepEqual(decodeCipherInitResp(pbEncode(PbCipherInitResp, { success: { desc: { streamId: bytes(64) } } })), {
      success: true,
    });
    assert.deepEqual(decodeCipherInitResp(pbEncode(PbCipherInitResp, { challenge: {} })), { success: false });
    assert.deepEqual(decodeCipherInitResp(pbEncode(PbCipherInitResp, { error: {} })), { success: false });
    assert.deepEqual(decodeCipherInitResp(Buffer.alloc(0)), { success: false });
  });

  test('DelCipherBoxResp and LndAuth: empty both ways', () => {
    assert.equal(EMPTY_MESSAGE.length, 0);
    assert.deepEqual(pbDecode(PbDelCipherBoxResp, EMPTY_MESSAGE), {});
    assert.deepEqual(pbDecode(PbLndAuth, EMPTY_MESSAGE), {});
    assert.deepEqual(decodeEmpty(pbEncode(PbDelCipherBoxResp, {})), {});
    assert.deepEqual(decodeEmpty(pbEncode(PbLndAuth, {})), {});
    // SendStream's answer is an empty CipherBoxDesc: protobufjs reads it as one.
    assert.deepEqual(pbDecode(PbCipherBoxDesc, EMPTY_MESSAGE), {});
  });
});

describe('v1 codec: malformed input throws MALFORMED_REQUEST', () => {
  const decoders: [string, (b: Buffer) => unknown][] = [
    ['CipherBoxDesc', decodeCipherBoxDesc],
    ['CipherBox', decodeCipherBox],
    ['CipherBoxAuth', decodeCipherBoxAuth],
    ['CipherInitResp', decodeCipherInitResp],
    ['empty message', decodeEmpty],
  ];
  const inputs: [string, Buffer][] = [
    ['truncated tag varint', Buffer.from([0x80])],
    ['truncated length varint', Buffer.from([0x0a, 0x80])],
    ['truncated varint field value', Buffer.from([0x38, 0xff, 0xff])],
    ['varint longer than 10 bytes', Buffer.from([0x38, ...new Array<number>(11).fill(0xff), 0x01])],
    ['length past end', Buffer.from([0x0a, 0x05, 0x01, 0x02])],
    ['huge length', Buffer.from([0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00])],
    ['wire type 3 (start group)', Buffer.from([0x0b, 0x00])],
    ['wire type 4 (end group)', Buffer.from([0x0c])],
    ['wire type 3 on an unknown field', Buffer.from([0x3b])],
    ['wire type 4 on an unknown field', Buffer.from([0x3c])],
    ['truncated fixed64', Buffer.from([0x41, 1, 2, 3])],
    ['truncated fixed32', Buffer.from([0x55, 1])],
  ];

  const assertMalformed = (fn: () => unknown): void => {
    assert.throws(fn, (err: unknown) => {
      assert.ok(err instanceof HashmailError, `not a HashmailError: ${String(err)}`);
      assert.equal(err.code, 'MALFORMED_REQUEST');
      return true;
    });
  };

  for (const [inputName, input] of inputs) {
    test(inputName, () => {
      for (const [decoderName, decode] of decoders) {
        assertMalformed(() => {
          decode(input);
          assert.fail(`${decoderName} accepted ${input.toString('hex')}`);
        });
      }
    });
  }

  test('malformed desc nested in CipherBox and CipherBoxAuth', () => {
    const badDesc = Buffer.from([0x0a, 0x02, 0x0a, 0x05]); // desc { stream_id length 5 past end }
    assertMalformed(() => decodeCipherBox(badDesc));
    assertMalformed(() => decodeCipherBoxAuth(badDesc));
    const badGroup = Buffer.from([0x0a, 0x01, 0x0b]); // desc { wire type 3 }
    assertMalformed(() => decodeCipherBox(badGroup));
    assertMalformed(() => decodeCipherBoxAuth(badGroup));
  });

  test('malformed LndAuth inside CipherBoxAuth', () => {
    assertMalformed(() => decodeCipherBoxAuth(Buffer.from([0x12, 0x01, 0x80])));
  });

  test('a message cut at every byte either decodes or throws MALFORMED_REQUEST', () => {
    const wire = pbEncode(PbCipherBox, { desc: { streamId: bytes(64) }, msg: bytes(300) });
    for (let cut = 1; cut < wire.length; cut++) {
      try {
        decodeCipherBox(wire.subarray(0, cut));
      } catch (err) {
        assert.ok(err instanceof HashmailError && err.code === 'MALFORMED_REQUEST', `cut at ${cut}: ${String(err)}`);
      }
    }
    // Every cut inside a field is malformed: only the cut right after a whole field decodes.
    assertMalformed(() => decodeCipherBox(wire.subarray(0, wire.length - 1)));
  });
});
