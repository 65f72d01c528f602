import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { relayInstanceId } from '../../src/compose/relay.js';
import { loadConfig } from '../../src/config/load.js';

test('relay instance id: relay.instanceId wins; else a random id kept in the data dir, the same after a restart', (t) => {
  const dataDir = join(mkdtempSync(join(tmpdir(), 'hashmail-id-')), 'fresh');
  t.after(() => rmSync(dataDir, { recursive: true, force: true }));
  const config = loadConfig({ env: {}, flags: { server: { dataDir } } });
  const first = relayInstanceId(config);
  assert.match(first, /^relay-[0-9a-f]{12}$/);
  assert.equal(readFileSync(join(dataDir, 'relay-id'), 'utf8').trim(), first);
  assert.equal(relayInstanceId(config), first);
  assert.equal(relayInstanceId(loadConfig({ env: {}, flags: { server: { dataDir }, relay: { instanceId: 'r-7' } } })), 'r-7');
});
