import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeGrpcMessage } from '../../src/transport/grpc-message.js';

test('printable ASCII passes unchanged, so clients read the text as written', () => {
  const text = 'limit reached: limits.maxConnectionsPerAddress (2000)';
  assert.equal(encodeGrpcMessage(text), text);
  assert.equal(encodeGrpcMessage(' ~!"#$&\'()*+,-./:;<=>?@[\\]^_`{|}'), ' ~!"#$&\'()*+,-./:;<=>?@[\\]^_`{|}');
});

test("'%', control bytes and UTF-8 bytes are percent-encoded, upper-case hex", () => {
  assert.equal(encodeGrpcMessage('100%'), '100%25');
  assert.equal(encodeGrpcMessage('a\nb\tc\x7f'), 'a%0Ab%09c%7F');
  assert.equal(encodeGrpcMessage('é€'), '%C3%A9%E2%82%AC');
});

test('what grpc-js decodes (decodeURI) is the original text', () => {
  for (const text of ['limit reached: x (1)', '50% off', 'line\nbreak', 'naïve ☃']) {
    assert.equal(decodeURI(encodeGrpcMessage(text)), text);
  }
});
