import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { ConfigError, configDefaults, envName, loadConfig } from '../../src/config/load.js';
import { renderConfigReference } from '../../src/config/reference.js';

const root = new URL('../../', import.meta.url);

test('config/hashmail.json holds every key at its schema default', () => {
  const file = JSON.parse(readFileSync(new URL('config/hashmail.json', root), 'utf8'));
  assert.deepEqual(file, configDefaults());
});

test('docs/configuration.md is generated from the current schema (npm run docs:config)', () => {
  assert.equal(readFileSync(new URL('docs/configuration.md', root), 'utf8'), renderConfigReference());
});

test('legacy defaults: 64 KiB buffer, 20 ms / 1000 rate limit, 1 h stale timeout, 250 ms acquire wait', () => {
  const d = configDefaults();
  assert.equal(d.mailbox.bufferBytes, 65536);
  assert.equal(d.mailbox.rateLimitIntervalMs, 20);
  assert.equal(d.mailbox.rateLimitBurst, 1000);
  assert.equal(d.mailbox.staleTimeoutMs, 3_600_000);
  assert.equal(d.mailbox.acquireWaitMs, 250);
  assert.equal(d.websocket.pingIntervalMs, 30_000);
  assert.equal(d.websocket.pongTimeoutMs, 15_000);
  assert.equal(d.server.adminListen.startsWith('127.0.0.1:'), true);
});

test('precedence: file < environment < flags', () => {
  const dir = mkdtempSync(join(tmpdir(), 'hashmail-config-'));
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ limits: { maxBoxes: 10, maxBoxesPerAddress: 5 }, server: { listen: '127.0.0.1:1' } }));
  const env = { [envName('limits', 'maxBoxes')]: '20', HASHMAIL_SERVER__INSECURE: 'true' };
  const c = loadConfig({ file, env, flags: { server: { listen: '127.0.0.1:2' } } });
  assert.equal(c.limits.maxBoxes, 20);
  assert.equal(c.limits.maxBoxesPerAddress, 5);
  assert.equal(c.server.insecure, true);
  assert.equal(c.server.listen, '127.0.0.1:2');
  assert.equal(envName('limits', 'maxBoxesPerAddress'), 'HASHMAIL_LIMITS__MAX_BOXES_PER_ADDRESS');
});

test('a bad value names the key and the expected form', () => {
  assert.throws(() => loadConfig({ env: {}, flags: { server: { listen: 'nowhere' } } }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /server\.listen: expected HOST:PORT/);
    return true;
  });
  assert.throws(() => loadConfig({ env: { HASHMAIL_LIMITS__MAX_BOXES: 'many' } }), /HASHMAIL_LIMITS__MAX_BOXES=many: expected a number/);
  assert.throws(
    () => loadConfig({ env: { HASHMAIL_LIMITS__MAX_BOXEZ: '1' } }),
    /HASHMAIL_LIMITS__MAX_BOXEZ: unknown configuration variable; did you mean HASHMAIL_LIMITS__MAX_BOXES\?/,
  );
  const dir = mkdtempSync(join(tmpdir(), 'hashmail-config-'));
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ mailbox: { bufferSize: 1 } }));
  assert.throws(() => loadConfig({ file, env: {} }), /mailbox\.bufferSize: unknown key/);
  // A typo gets the closest key or section; a name far from any gets none.
  writeFileSync(file, JSON.stringify({ mailbox: { bufferBytez: 1 }, limts: {}, zzzzzz: {} }));
  assert.throws(() => loadConfig({ file, env: {} }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /mailbox\.bufferBytez: unknown key; did you mean `bufferBytes`\?/);
    assert.match(err.message, /limts: unknown section; did you mean `limits`\?/);
    assert.match(err.message, /zzzzzz: unknown section\n|zzzzzz: unknown section$/);
    return true;
  });
  writeFileSync(file, '{ not json');
  assert.throws(() => loadConfig({ file, env: {} }), /not valid JSON/);
});
