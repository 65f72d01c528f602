/**
 * The hand-written v2 frame codec (src/wire/v2-frames.ts) against protobufjs
 * reading proto/hashmail/v2/mailbox.proto: the proto file is the contract
 * (docs/protocol-v2.md), so every frame must round-trip both ways (ours ->
 * protobufjs and protobufjs -> ours, byte for byte where proto3 has one
 * canonical form), and malformed input must fail as FrameDecodeError, never
 * as a crash or a silently short frame.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import protobuf from 'protobufjs';
import {
  Attach,
  decodeClientFrame,
  decodeServerFrame,
  encodeDataFrame,
  encodeErrorFrame,
  encodeHello,
  encodeWelcome,
  FrameDecodeError,
  PRESENCE_FRAMES,
  PROTOCOL_V2,
  type FrameError,
  type Hello,
} from '../../src/wire/v2-frames.js';

const PROTO_FILE = join(fileURLToPath(new URL('../..', import.meta.url)), 'proto/hashmail/v2/mailbox.proto');
const root = protobuf.loadSync(PROTO_FILE);
const PbClientFrame = root.lookupType('hashmail.v2.ClientFrame');
const PbServerFrame = root.lookupType('hashmail.v2.ServerFrame');

/** Deterministic filler so a failure shows the same bytes every run. */
function bytes(length: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

/** Length edges of a varint length prefix (1, 2, 3 bytes), the default v2 limit and past it. */
const PAYLOAD_LENGTHS = [0, 1, 127, 128, 16_383, 16_384, 65_536, 70_000, 1024 * 1024];
/** Edges of a varint: 1, 2, 3 and 5 bytes, uint32 max. */
const UINT32_VALUES = [0, 1, 2, 127, 128, 16_383, 16_384, 2 ** 31, 2 ** 32 - 1];
const SID = bytes(64, 9);

/**
 * proto3 leaves a field at its default (0, false, empty bytes or string,
 * empty repeated) off the wire; protobufjs writes any field that is set. So
 * the canonical encoding drops defaults first; the raw one keeps them, to
 * check that we also read what a non-canonical encoder sends. Sub-messages
 * stay even when empty: a set oneof member is on the wire either way.
 */
function withoutDefaults(value: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (v instanceof Uint8Array || Array.isArray(v) || typeof v === 'string') {
      if (v.length > 0) out[k] = v;
    } else if (v !== null && typeof v === 'object') out[k] = withoutDefaults(v as Record<string, unknown>);
    else if (v !== 0 && v !== false) out[k] = v;
  }
  return out;
}

function pbEncode(type: protobuf.Type, value: Record<string, unknown>, canonical = true): Buffer {
  const err = type.verify(value);
  assert.equal(err, null, `protobufjs rejects test value: ${err}`);
  const v = canonical ? withoutDefaults(value) : value;
  return Buffer.from(type.encode(type.create(v)).finish());
}

function pbDecode(type: protobuf.Type, buf: Uint8Array): Record<string, unknown> {
  return type.toObject(type.decode(buf), { bytes: Buffer as unknown as typeof String, oneofs: true, defaults: true, enums: Number }) as Record<
    string,
    unknown
  >;
}

const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a).equals(Buffer.from(b));

describe('v2 frames: Data', () => {
  for (const len of PAYLOAD_LENGTHS) {
    test(`${len}-byte payload: ours -> protobufjs (client and server frame)`, () => {
      const payload = bytes(len, len);
      const wire = encodeDataFrame(payload);
      for (const type of [PbClientFrame, PbServerFrame]) {
        const decoded = pbDecode(type, wire);
        assert.equal(decoded.frame, 'data');
        assert.ok(same((decoded.data as { payload: Uint8Array }).payload, payload));
      }
    });

    test(`${len}-byte payload: protobufjs -> ours, same bytes`, () => {
      const payload = bytes(len, len + 3);
      const wire = pbEncode(PbClientFrame, { data: { payload } });
      assert.ok(same(encodeDataFrame(payload), wire), 'same bytes as protobufjs');
      for (const input of [wire, pbEncode(PbClientFrame, { data: { payload } }, false)]) {
        const client = decodeClientFrame(input);
        assert.ok('data' in client && same(client.data, payload));
        const server = decodeServerFrame(input);
        assert.ok('data' in server && same(server.data, payload));
      }
    });
  }

  test('an empty payload is the 2-byte frame 12 00', () => {
    assert.deepEqual([...encodeDataFrame(new Uint8Array(0))], [0x12, 0x00]);
    const frame = decodeClientFrame(Uint8Array.from([0x12, 0x00]));
    assert.ok('data' in frame && frame.data.length === 0);
  });

  test('a decoded payload is a view into the received bytes, not a copy', () => {
    const wire = encodeDataFrame(bytes(100));
    const frame = decodeClientFrame(wire);
    assert.ok('data' in frame);
    assert.equal(frame.data.buffer, wire.buffer);
  });
});

describe('v2 frames: Hello', () => {
  const cases: { name: string; hello: Hello }[] = [
    { name: 'v2..v2, create', hello: { minVersion: 2, maxVersion: 2, sid: SID, attach: Attach.Create } },
    { name: 'v2..v2, existing', hello: { minVersion: 2, maxVersion: 2, sid: SID, attach: Attach.Existing } },
    { name: 'min 0 (means max)', hello: { minVersion: 0, maxVersion: PROTOCOL_V2, sid: SID, attach: Attach.Create } },
    { name: 'all defaults (empty hello)', hello: { minVersion: 0, maxVersion: 0, sid: new Uint8Array(0), attach: Attach.Create } },
    { name: 'short sid', hello: { minVersion: 1, maxVersion: 3, sid: bytes(10), attach: Attach.Existing } },
    { name: 'long sid', hello: { minVersion: 2, maxVersion: 2, sid: bytes(300), attach: Attach.Create } },
    ...UINT32_VALUES.map((v) => ({ name: `versions ${v}`, hello: { minVersion: v, maxVersion: v, sid: SID, attach: Attach.Create } })),
  ];
  const pbValue = (h: Hello): Record<string, unknown> => ({
    hello: { minVersion: h.minVersion, maxVersion: h.maxVersion, sid: h.sid, attach: h.attach },
  });

  for (const { name, hello } of cases) {
    test(`${name}: ours -> protobufjs`, () => {
      const decoded = pbDecode(PbClientFrame, encodeHello(hello));
      assert.equal(decoded.frame, 'hello');
      const h = decoded.hello as Record<string, unknown>;
      assert.equal(h.minVersion, hello.minVersion);
      assert.equal(h.maxVersion, hello.maxVersion);
      assert.ok(same(h.sid as Uint8Array, hello.sid));
      assert.equal(h.attach, hello.attach);
    });

    test(`${name}: protobufjs -> ours, same bytes`, () => {
      const wire = pbEncode(PbClientFrame, pbValue(hello));
      assert.ok(same(encodeHello(hello), wire), 'same bytes as protobufjs');
      for (const input of [wire, pbEncode(PbClientFrame, pbValue(hello), false)]) {
        const frame = decodeClientFrame(input);
        assert.ok('hello' in frame);
        assert.equal(frame.hello.minVersion, hello.minVersion);
        assert.equal(frame.hello.maxVersion, hello.maxVersion);
        assert.ok(same(frame.hello.sid, hello.sid));
        assert.equal(frame.hello.attach, hello.attach);
      }
    });
  }

  // The protobuf encoding spec; protobufjs is no reference here (it keeps both members and reports the first declared).
  test('the last oneof member on the wire wins, as in protobuf', () => {
    const hello = encodeHello({ minVersion: 2, maxVersion: 2, sid: SID, attach: Attach.Create });
    const data = encodeDataFrame(bytes(5));
    assert.ok('data' in decodeClientFrame(Buffer.concat([hello, data])));
    assert.ok('hello' in decodeClientFrame(Buffer.concat([data, hello])));
    assert.ok('presence' in decodeServerFrame(Buffer.concat([encodeWelcome(2, true), PRESENCE_FRAMES.present])));
  });
});

describe('v2 frames: Welcome', () => {
  const cases = [
    ...UINT32_VALUES.map((version) => ({ version, peerPresent: false, maxMessageBytes: 0 })),
    // max_message_bytes (field 3) over the same range of uint32 values.
    ...UINT32_VALUES.map((version) => ({ version, peerPresent: true, maxMessageBytes: version })),
  ];
  for (const welcome of cases) {
    test(`version ${welcome.version}, peer ${welcome.peerPresent ? 'present' : 'absent'}, max_message_bytes ${welcome.maxMessageBytes}: both ways, same bytes`, () => {
      const ours = encodeWelcome(welcome.version, welcome.peerPresent, welcome.maxMessageBytes);
      const decoded = pbDecode(PbServerFrame, ours);
      assert.equal(decoded.frame, 'welcome');
      assert.deepEqual(decoded.welcome, welcome);
      const wire = pbEncode(PbServerFrame, { welcome });
      assert.ok(same(ours, wire), 'same bytes as protobufjs');
      for (const input of [wire, pbEncode(PbServerFrame, { welcome }, false)]) assert.deepEqual(decodeServerFrame(input), { welcome });
    });
  }
});

describe('v2 frames: Presence', () => {
  for (const peerPresent of [true, false]) {
    const frame = peerPresent ? PRESENCE_FRAMES.present : PRESENCE_FRAMES.absent;
    test(`peer ${peerPresent ? 'present' : 'absent'}: constant frame both ways, same bytes`, () => {
      const decoded = pbDecode(PbServerFrame, frame);
      assert.equal(decoded.frame, 'presence');
      assert.deepEqual(decoded.presence, { peerPresent });
      const wire = pbEncode(PbServerFrame, { presence: { peerPresent } });
      assert.ok(same(frame, wire), 'same bytes as protobufjs');
      for (const input of [wire, pbEncode(PbServerFrame, { presence: { peerPresent } }, false)]) {
        assert.deepEqual(decodeServerFrame(input), { presence: { peerPresent } });
      }
    });
  }
});

describe('v2 frames: Error', () => {
  const cases: FrameError[] = [
    { code: 9, message: 'unsupported protocol version: client speaks 3..4, relay supports 2', supportedVersions: [2] },
    { code: 14, message: 'server shutting down', supportedVersions: [] },
    { code: 8, message: 'read stream occupied', supportedVersions: [] },
    { code: 0, message: '', supportedVersions: [] },
    { code: 3, message: 'non-ASCII: ünïcødé ✓ 🔑', supportedVersions: [] },
    { code: 2 ** 32 - 1, message: 'x'.repeat(300), supportedVersions: [1, 2, 127, 128, 16_384, 2 ** 32 - 1] },
    { code: 14, message: 'session is served by another relay: [::1]:8443', supportedVersions: [], relayAddress: '[::1]:8443' },
  ];
  for (const err of cases) {
    test(`code ${err.code}, ${err.supportedVersions.length} versions, ${err.message.length}-char message: both ways, same bytes`, () => {
      const ours = encodeErrorFrame(err);
      const decoded = pbDecode(PbServerFrame, ours);
      assert.equal(decoded.frame, 'error');
      // protobufjs reports an absent string field as ''; ours leaves relayAddress out.
      assert.deepEqual(decoded.error, { relayAddress: '', ...err });
      const wire = pbEncode(PbServerFrame, { error: err });
      assert.ok(same(ours, wire), 'same bytes as protobufjs (supported_versions packed)');
      for (const input of [wire, pbEncode(PbServerFrame, { error: err }, false)]) assert.deepEqual(decodeServerFrame(input), { error: err });
    });
  }

  test('unpacked supported_versions (a non-canonical encoder) are read too', () => {
    // error { code: 9, supported_versions: 2, supported_versions: 3 } with each version its own varint field.
    const inner = [0x08, 0x09, 0x18, 0x02, 0x18, 0x03];
    const decoded = decodeServerFrame(Uint8Array.from([0x22, inner.length, ...inner]));
    assert.deepEqual(decoded, { error: { code: 9, message: '', supportedVersions: [2, 3] } });
  });
});

describe('v2 frames: unknown fields', () => {
  // field 7 varint 300, field 8 fixed64, field 9 length-delimited (2 bytes), field 10 fixed32
  const unknown = Buffer.from([0x38, 0xac, 0x02, 0x41, 1, 2, 3, 4, 5, 6, 7, 8, 0x4a, 0x02, 0xaa, 0xbb, 0x55, 1, 2, 3, 4]);
  const wrap = (tag: number, inner: Uint8Array): Buffer => Buffer.concat([Buffer.from([tag, inner.length]), inner]);

  test('are skipped around and inside every frame', () => {
    const hello: Hello = { minVersion: 2, maxVersion: 2, sid: SID, attach: Attach.Existing };
    const helloInner = encodeHello(hello).subarray(2);
    const decodedHello = decodeClientFrame(Buffer.concat([unknown, wrap(0x0a, Buffer.concat([unknown, helloInner, unknown])), unknown]));
    assert.ok('hello' in decodedHello);
    assert.deepEqual({ ...decodedHello.hello, sid: Buffer.from(decodedHello.hello.sid) }, { ...hello, sid: SID });

    const data = decodeClientFrame(Buffer.concat([unknown, wrap(0x12, Buffer.concat([unknown, Buffer.from([0x0a, 0x03, 1, 2, 3])])), unknown]));
    assert.ok('data' in data && same(data.data, Buffer.from([1, 2, 3])));

    const welcome = decodeServerFrame(Buffer.concat([unknown, wrap(0x0a, Buffer.concat([unknown, encodeWelcome(2, true).subarray(2)]))]));
    assert.deepEqual(welcome, { welcome: { version: 2, peerPresent: true, maxMessageBytes: 0 } });

    const presence = decodeServerFrame(Buffer.concat([wrap(0x1a, Buffer.concat([unknown, Buffer.from([0x08, 0x01])])), unknown]));
    assert.deepEqual(presence, { presence: { peerPresent: true } });

    const errInner = encodeErrorFrame({ code: 5, message: 'stream not found', supportedVersions: [] }).subarray(2);
    const error = decodeServerFrame(wrap(0x22, Buffer.concat([errInner, unknown])));
    assert.deepEqual(error, { error: { code: 5, message: 'stream not found', supportedVersions: [] } });
  });

  test('a server frame member the client does not know (field 5) is skipped, like a client frame member', () => {
    assert.throws(() => decodeServerFrame(wrap(0x2a, Buffer.from([0x08, 0x01]))), FrameDecodeError, 'nothing known left: empty frame');
    assert.deepEqual(decodeServerFrame(Buffer.concat([wrap(0x2a, Buffer.from([0x08, 0x01])), PRESENCE_FRAMES.absent])), {
      presence: { peerPresent: false },
    });
  });
});

describe('v2 frames: malformed input throws FrameDecodeError', () => {
  const decoders: [string, (b: Uint8Array) => unknown][] = [
    ['ClientFrame', decodeClientFrame],
    ['ServerFrame', decodeServerFrame],
  ];
  const assertMalformed = (fn: () => unknown, what: string): void => {
    assert.throws(fn, (err: unknown) => {
      assert.ok(err instanceof FrameDecodeError, `${what}: not a FrameDecodeError: ${String(err)}`);
      return true;
    });
  };

  const both: [string, number[]][] = [
    ['empty input', []],
    ['only unknown fields', [0x38, 0x01]],
    ['truncated tag varint', [0x80]],
    ['truncated length varint', [0x12, 0x80]],
    ['truncated varint field value', [0x38, 0xff, 0xff]],
    ['varint longer than 10 bytes', [0x38, ...new Array<number>(11).fill(0xff), 0x01]],
    ['length past end', [0x12, 0x05, 0x01, 0x02]],
    ['huge length', [0x12, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]],
    ['field number 0', [0x02, 0x00]],
    ['wire type 3 (start group)', [0x3b]],
    ['wire type 4 (end group)', [0x3c]],
    ['wire type 6', [0x3e]],
    ['truncated fixed64', [0x41, 1, 2, 3]],
    ['truncated fixed32', [0x55, 1]],
    ['data as a varint', [0x10, 0x01]],
    ['data as fixed32', [0x15, 1, 2, 3, 4]],
    ['payload as a varint', [0x12, 0x02, 0x08, 0x01]],
    ['payload length past the data message', [0x12, 0x03, 0x0a, 0x05, 0x01]],
  ];
  for (const [name, input] of both) {
    test(name, () => {
      for (const [decoderName, decode] of decoders) assertMalformed(() => decode(Uint8Array.from(input)), `${decoderName} of ${name}`);
    });
  }

  const client: [string, number[]][] = [
    ['hello as a varint', [0x08, 0x02]],
    ['hello.min_version as bytes', [0x0a, 0x03, 0x0a, 0x01, 0x02]],
    ['hello.max_version as fixed32', [0x0a, 0x05, 0x15, 1, 2, 3, 4]],
    ['hello.sid as a varint', [0x0a, 0x02, 0x18, 0x01]],
    ['hello.sid past the hello', [0x0a, 0x03, 0x1a, 0x40, 0x01]],
    ['hello.attach as bytes', [0x0a, 0x02, 0x22, 0x00]],
    ['truncated varint inside hello', [0x0a, 0x02, 0x08, 0x80]],
  ];
  for (const [name, input] of client) test(`ClientFrame: ${name}`, () => assertMalformed(() => decodeClientFrame(Uint8Array.from(input)), name));

  const server: [string, number[]][] = [
    ['welcome as a varint', [0x08, 0x01]],
    ['welcome.version as bytes', [0x0a, 0x02, 0x0a, 0x00]],
    ['welcome.peer_present as bytes', [0x0a, 0x02, 0x12, 0x00]],
    ['presence as a varint', [0x18, 0x01]],
    ['presence.peer_present as fixed64', [0x1a, 0x09, 0x09, 1, 2, 3, 4, 5, 6, 7, 8]],
    ['error as a varint', [0x20, 0x01]],
    ['error.code as bytes', [0x22, 0x02, 0x0a, 0x00]],
    ['error.message as a varint', [0x22, 0x02, 0x10, 0x01]],
    ['error.supported_versions as fixed32', [0x22, 0x05, 0x1d, 1, 2, 3, 4]],
    ['truncated varint inside packed supported_versions', [0x22, 0x03, 0x1a, 0x01, 0x80]],
  ];
  for (const [name, input] of server) test(`ServerFrame: ${name}`, () => assertMalformed(() => decodeServerFrame(Uint8Array.from(input)), name));

  test('a frame cut at any byte either decodes or throws FrameDecodeError', () => {
    const frames: [string, Uint8Array, (b: Uint8Array) => unknown][] = [
      ['hello', encodeHello({ minVersion: 2, maxVersion: 2, sid: SID, attach: Attach.Existing }), decodeClientFrame],
      ['data', encodeDataFrame(bytes(300)), decodeClientFrame],
      ['welcome', encodeWelcome(2, true), decodeServerFrame],
      ['error', encodeErrorFrame({ code: 9, message: 'unsupported protocol version', supportedVersions: [2, 300] }), decodeServerFrame],
    ];
    for (const [name, wire, decode] of frames) {
      for (let cut = 0; cut < wire.length; cut++) {
        try {
          decode(wire.subarray(0, cut));
        } catch (err) {
          assert.ok(err instanceof FrameDecodeError, `${name} cut at ${cut}: ${String(err)}`);
        }
      }
      // The outer length covers the whole frame: one byte short is always malformed.
      assertMalformed(() => decode(wire.subarray(0, wire.length - 1)), `${name} minus one byte`);
    }
  });
});
