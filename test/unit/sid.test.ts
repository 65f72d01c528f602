import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { HashmailError } from '../../src/session/errors.js';
import { boxIndex, boxKey, checkSid, peerSid, sessionKey, shortHash, SID_BYTES } from '../../src/session/sid.js';
import { PHRASE_VECTORS, type PhraseVector } from '../helpers/phrase-vectors.js';

const vectors = PHRASE_VECTORS;
const specVectors = new URL('../../../shared/spec/vectors/phrase.json', import.meta.url);

function sidOf(fill: number, last: number): Buffer {
  const sid = Buffer.alloc(SID_BYTES, fill);
  sid[SID_BYTES - 1] = last;
  return sid;
}

test('peerSid flips bit 0 of byte 63 and nothing else', () => {
  const sid = sidOf(0xab, 0x42);
  const peer = peerSid(sid);
  assert.equal(peer.length, SID_BYTES);
  assert.equal(peer[63], 0x43);
  assert.deepEqual(peer.subarray(0, 63), sid.subarray(0, 63));
  assert.deepEqual(peerSid(peer), sid, 'flipping twice gives the SID back');
  assert.equal(sid[63], 0x42, 'the input is not modified');
});

test('sessionKey is equal for both SIDs of a pair and differs between pairs', () => {
  const sid = sidOf(0x11, 0x7f);
  assert.equal(sessionKey(sid), sessionKey(peerSid(sid)));
  assert.notEqual(sessionKey(sid), sessionKey(sidOf(0x11, 0x7d)));
  assert.equal(sid[63], 0x7f, 'the input is not modified');
  // the key is the SID with bit 0 cleared
  assert.equal(sessionKey(sid), boxKey(sidOf(0x11, 0x7e)));
});

test('boxIndex is bit 0 of byte 63', () => {
  assert.equal(boxIndex(sidOf(0xff, 0xfe)), 0);
  assert.equal(boxIndex(sidOf(0x00, 0x01)), 1);
  const sid = sidOf(0x5a, 0x10);
  assert.notEqual(boxIndex(sid), boxIndex(peerSid(sid)));
});

test('boxKey distinguishes the two SIDs of a pair and respects subarray views', () => {
  const sid = sidOf(0x33, 0x00);
  assert.notEqual(boxKey(sid), boxKey(peerSid(sid)));
  const backing = Buffer.concat([Buffer.from([9, 9, 9]), sid, Buffer.from([7])]);
  const view = new Uint8Array(backing.buffer, backing.byteOffset + 3, SID_BYTES);
  assert.equal(boxKey(view), boxKey(sid));
});

test('checkSid accepts 64 bytes and rejects 63 and 65 with INVALID_STREAM_ID', () => {
  const ok = checkSid(new Uint8Array(64));
  assert.equal(ok.length, 64);
  assert.ok(Buffer.isBuffer(ok));
  for (const len of [0, 63, 65]) {
    assert.throws(
      () => checkSid(new Uint8Array(len)),
      (err: unknown) => {
        assert.ok(err instanceof HashmailError);
        assert.equal(err.code, 'INVALID_STREAM_ID');
        assert.equal(err.grpcCode, 3);
        return true;
      },
      `length ${len}`,
    );
  }
});

test('shortHash is 12 hex digits, stable, not the SID, and differs between a pair', () => {
  const sid = sidOf(0xab, 0xcd);
  const h = shortHash(sid);
  assert.match(h, /^[0-9a-f]{12}$/);
  assert.equal(shortHash(Buffer.from(sid)), h);
  assert.ok(!sid.toString('hex').includes(h));
  assert.notEqual(h, sid.toString('hex').slice(0, 12));
  assert.notEqual(shortHash(peerSid(sid)), h);
});

test('the embedded phrase vectors match spec/vectors/phrase.json when it is present', (t) => {
  if (!existsSync(specVectors)) {
    t.skip('spec/vectors/phrase.json not next to this checkout');
    return;
  }
  const file = JSON.parse(readFileSync(specVectors, 'utf8')) as { vectors: PhraseVector[] };
  assert.deepEqual(file.vectors, vectors);
});

test('phrase vectors: s2c = SHA-512(entropy); c2s differs only in the last bit; both share a session', () => {
  assert.ok(vectors.length >= 3);
  for (const v of vectors) {
    const entropy = Buffer.from(v.entropy, 'hex');
    const s2c = Buffer.from(v.s2c, 'hex');
    const c2s = Buffer.from(v.c2s, 'hex');
    assert.equal(entropy.length, 14, v.words);
    assert.equal(s2c.length, SID_BYTES);
    assert.deepEqual(createHash('sha512').update(entropy).digest(), s2c, v.words);
    assert.deepEqual(peerSid(s2c), c2s, v.words);
    assert.deepEqual(s2c.subarray(0, 63), c2s.subarray(0, 63));
    assert.equal(s2c[63] ^ c2s[63], 0x01);
    assert.equal(sessionKey(s2c), sessionKey(c2s));
    assert.notEqual(boxIndex(s2c), boxIndex(c2s));
    assert.equal(checkSid(s2c).length, 64);
  }
});
