import assert from 'node:assert/strict';
import { createServer, type AddressInfo } from 'node:net';
import { test } from 'node:test';
import { probeListening } from '../../src/directory/refused-probe.js';

test('an address where a process listens answers "listening"; the same port once closed answers "refused"', async () => {
  const server = createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  assert.equal(await probeListening(address, 2_000), 'listening');
  await new Promise<void>((resolve) => server.close(() => resolve()));
  assert.equal(await probeListening(address, 2_000), 'refused');
});

test('an address that does not parse proves nothing', async () => {
  assert.equal(await probeListening('not an address', 2_000), 'unknown');
  assert.equal(await probeListening('127.0.0.1:99999', 2_000), 'unknown');
});
