/**
 * The address a lookup gives out for the instance answering it when it
 * listens on every interface with nothing to advertise: the one the client
 * reached (Host / :authority), so a client on another machine dials back
 * what it dialed instead of its own loopback.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { HttpLookup } from '../../src/transport/http-lookup.js';
import { answeredAsReached, reachedAddress } from '../../src/transport/reached-address.js';
import { createLogger } from '../../src/observe/logger.js';
import { RelayStats } from '../../src/observe/stats.js';

test('reachedAddress: HOST:PORT of a Host or :authority value, the scheme\'s default port when none; null for anything else', () => {
  assert.equal(reachedAddress('mailbox.example.com:8443', true), 'mailbox.example.com:8443');
  assert.equal(reachedAddress('mailbox.example.com', true), 'mailbox.example.com:443');
  assert.equal(reachedAddress('mailbox.example.com', false), 'mailbox.example.com:80');
  assert.equal(reachedAddress('192.0.2.7:8080', false), '192.0.2.7:8080');
  assert.equal(reachedAddress('[2001:db8::1]:8443', true), '[2001:db8::1]:8443');
  assert.equal(reachedAddress('[2001:db8::1]', true), '[2001:db8::1]:443');
  for (const bad of [undefined, '', 'a b:1', 'host:0', 'host:99999', 'host:x', '[::1', 'evil/path:80', 'x'.repeat(300)]) {
    assert.equal(reachedAddress(bad, true), null, String(bad));
  }
});

test('answeredAsReached: only this instance\'s own derived address is answered as reached; other owners and configured addresses as registered', () => {
  const self = (): string => '127.0.0.1:8443';
  const derived = answeredAsReached(true, self, true);
  assert.equal(derived({ id: 'me', address: '127.0.0.1:8443', startedAt: 1 }, 'mailbox.example.com:8443'), 'mailbox.example.com:8443');
  assert.equal(derived({ id: 'me', address: '127.0.0.1:8443', startedAt: 1 }, undefined), '127.0.0.1:8443');
  assert.equal(derived({ id: 'me', address: '127.0.0.1:8443', startedAt: 1 }, 'bad host'), '127.0.0.1:8443');
  assert.equal(derived({ id: 'other', address: '10.0.0.2:8443', startedAt: 1 }, 'mailbox.example.com:8443'), '10.0.0.2:8443');
  assert.equal(answeredAsReached(false, self, true)({ id: 'me', address: '127.0.0.1:8443', startedAt: 1 }, 'mailbox.example.com:8443'), '127.0.0.1:8443');
});

test('GET /v2/relay answers this instance as the Host the request came with', async (t) => {
  const self = (): string => '127.0.0.1:1';
  const lookup = new HttpLookup(
    async () => ({ id: 'serve-1', address: self(), startedAt: 1 }),
    { logger: createLogger({ level: 'silent', format: 'json' }), stats: new RelayStats() },
    () => '127.0.0.1',
    answeredAsReached(true, self, false),
  );
  const server = http.createServer((req, res) => lookup.handleRequest(req, res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const answer = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: `/v2/relay?route=${'A'.repeat(43)}`, headers: { host: 'mailbox.example.com:8080' } }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.end();
  });
  assert.deepEqual(JSON.parse(answer), { id: 'serve-1', address: 'mailbox.example.com:8080', startedAt: 1 });
});
