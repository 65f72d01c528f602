/**
 * The hop's wire: HopBox / HopMessage codecs (round trips, proto3 empty
 * fields, malformed input), the error mapping both ways (every code of ours
 * crosses the hop unchanged; a status without our trailer becomes
 * UNAVAILABLE), and the token compare.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Metadata } from '@grpc/grpc-js';
import { HashmailError, limitReached, servedElsewhere, type HashmailErrorCode } from '../../src/session/errors.js';
import { decodeHopBox, decodeHopMessage, encodeHopBox, encodeHopMessage, encodeHopPayload } from '../../src/transport/grpc-hop/codec.js';
import { hopError, hopStatus } from '../../src/transport/grpc-hop/hop-status.js';
import { HopToken } from '../../src/transport/grpc-hop/hop-token.js';
import { HOP_ERROR_TRAILER } from '../../src/transport/grpc-hop/service.js';
import { GrpcStatus } from '../../src/wire/grpc-status.js';

describe('hop codec', () => {
  test('HopBox round-trips; an empty stream_id encodes to nothing', () => {
    const sid = randomBytes(64);
    const enc = encodeHopBox({ streamId: sid });
    assert.deepEqual(enc.subarray(0, 2), Buffer.from([0x0a, 64]));
    assert.deepEqual(decodeHopBox(enc).streamId, sid);
    assert.equal(encodeHopBox({ streamId: Buffer.alloc(0) }).length, 0);
    assert.equal(decodeHopBox(Buffer.alloc(0)).streamId.length, 0);
  });

  test('HopMessage round-trips with and without stream_id; a payload-only message is field 2 alone', () => {
    const sid = randomBytes(64);
    const msg = randomBytes(300);
    assert.deepEqual(decodeHopMessage(encodeHopMessage({ streamId: sid, msg: Buffer.alloc(0) })), { streamId: sid, msg: Buffer.alloc(0) });
    assert.deepEqual(decodeHopMessage(encodeHopMessage({ streamId: sid, msg })), { streamId: sid, msg });
    const payload = encodeHopPayload(msg);
    assert.deepEqual(payload.subarray(0, 3), Buffer.from([0x12, 0xac, 0x02]));
    assert.deepEqual(payload, encodeHopMessage({ streamId: Buffer.alloc(0), msg }));
    assert.deepEqual(decodeHopMessage(payload), { streamId: Buffer.alloc(0), msg });
    // A 0-byte legacy message is an empty HopMessage (proto3 omits empty bytes).
    assert.equal(encodeHopPayload(Buffer.alloc(0)).length, 0);
    assert.equal(decodeHopMessage(Buffer.alloc(0)).msg.length, 0);
  });

  test('unknown fields are skipped; malformed input throws MALFORMED_REQUEST', () => {
    const withUnknown = Buffer.concat([Buffer.from([0x18, 0x05]), encodeHopPayload(Buffer.from('hi'))]);
    assert.equal(decodeHopMessage(withUnknown).msg.toString(), 'hi');
    for (const bad of [Buffer.from([0x12, 0x05, 0x01]), Buffer.from([0x0a]), Buffer.from([0x00, 0x00]), Buffer.from([0x0f])]) {
      assert.throws(() => decodeHopMessage(bad), (err: unknown) => err instanceof HashmailError && err.code === 'MALFORMED_REQUEST');
      assert.throws(() => decodeHopBox(bad), (err: unknown) => err instanceof HashmailError && err.code === 'MALFORMED_REQUEST');
    }
  });
});

describe('hop error mapping', () => {
  const codes: HashmailErrorCode[] = [
    'STREAM_EXISTS',
    'STREAM_NOT_FOUND',
    'READ_OCCUPIED',
    'WRITE_OCCUPIED',
    'BOX_DELETED_EOF',
    'BOX_DELETED_PIPE',
    'STREAM_SHUTTING_DOWN',
    'SERVER_SHUTTING_DOWN',
    'INVALID_STREAM_ID',
    'ROUTE_LOST',
    'RELAY_DRAINING',
    'FENCE_LOST',
    'HOP_UNAUTHENTICATED',
    'CANCELLED',
  ];

  test('every code crosses the hop as the same error: code, text, gRPC status, HTTP status', () => {
    for (const code of [...codes.map((c) => new HashmailError(c)), limitReached('limits.maxBoxesPerAddress', 3), new HashmailError('MESSAGE_TOO_LARGE', 'message too large: 9 bytes, limit mailbox.maxMessageBytes (8)')]) {
      const status = hopStatus(code);
      assert.equal(status.code, code.grpcCode);
      assert.equal(status.metadata.get(HOP_ERROR_TRAILER)[0], code.code);
      const back = hopError(status);
      assert.equal(back.code, code.code);
      assert.equal(back.message, code.message);
      assert.equal(back.grpcCode, code.grpcCode);
      assert.equal(back.httpStatus, code.httpStatus);
      assert.deepEqual(back.toStatusJson(), code.toStatusJson());
    }
  });

  test('SERVED_ELSEWHERE carries the owner address in hashmail-relay-address', () => {
    const back = hopError(hopStatus(servedElsewhere('127.0.0.1:4567')));
    assert.equal(back.code, 'SERVED_ELSEWHERE');
    assert.equal(back.relayAddress, '127.0.0.1:4567');
  });

  test('a status without our trailer (connection lost, relay gone) is UNAVAILABLE; an unknown code too; CANCELLED stays', () => {
    const lost = hopError({ code: GrpcStatus.UNAVAILABLE, details: 'Connection dropped', metadata: new Metadata() });
    assert.equal(lost.code, 'RELAY_UNREACHABLE');
    assert.equal(lost.grpcCode, GrpcStatus.UNAVAILABLE);
    assert.equal(lost.httpStatus, 503);
    assert.equal(lost.message, 'gateway: relay unreachable (UNAVAILABLE: Connection dropped)');
    const md = new Metadata();
    md.set(HOP_ERROR_TRAILER, 'NO_SUCH_CODE');
    assert.equal(hopError({ code: GrpcStatus.INTERNAL, details: 'x', metadata: md }).code, 'RELAY_UNREACHABLE');
    assert.equal(hopError({ code: GrpcStatus.DEADLINE_EXCEEDED, details: 'Deadline exceeded' }).grpcCode, GrpcStatus.UNAVAILABLE);
    assert.equal(hopError({ code: GrpcStatus.CANCELLED, details: 'Cancelled on client' }).code, 'CANCELLED');
    // A redirect without a usable address is not believed.
    const bad = new Metadata();
    bad.set(HOP_ERROR_TRAILER, 'SERVED_ELSEWHERE');
    assert.equal(hopError({ code: GrpcStatus.UNAVAILABLE, details: '', metadata: bad }).code, 'RELAY_UNREACHABLE');
  });
});

describe('hop token', () => {
  test('matches only the exact token, whatever the length or type presented', () => {
    const token = new HopToken('a'.repeat(43));
    assert.equal(token.matches('a'.repeat(43)), true);
    assert.equal(token.matches('a'.repeat(42)), false);
    assert.equal(token.matches('a'.repeat(44)), false);
    assert.equal(token.matches(''), false);
    assert.equal(token.matches(undefined), false);
    assert.equal(token.matches(Buffer.from('a'.repeat(43))), false);
    assert.throws(() => new HopToken(''));
  });
});
