/** HOST:PORT of listen and advertised addresses (src/config/host-port.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatHostPort, parseHostPort } from '../../src/config/host-port.js';

test('HOST:PORT parses (IPv6 in brackets) and formats back', () => {
  for (const [text, host, port] of [
    ['127.0.0.1:8443', '127.0.0.1', 8443],
    ['[::1]:0', '::1', 0],
    ['relay.example.com:65535', 'relay.example.com', 65535],
  ] as const) {
    assert.deepEqual(parseHostPort(text), { host, port });
    assert.equal(formatHostPort(host, port), text);
  }
});

test('a value that is not HOST:PORT is refused, naming what it was for', () => {
  for (const bad of ['8443', ':8443', '127.0.0.1:', '127.0.0.1:65536', 'host:80x', '[::1]']) {
    assert.throws(() => parseHostPort(bad, 'admin listen address'), new RegExp(`^Error: admin listen address must be HOST:PORT, got ${JSON.stringify(bad).replace(/[[\]]/g, '\\$&')}$`));
  }
});
