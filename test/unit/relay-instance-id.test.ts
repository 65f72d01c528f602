import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { InstanceState, InstanceStateInUseError, instanceStateDir } from '../../src/compose/instance-state.js';
import { loadConfig } from '../../src/config/load.js';

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'hashmail-id-')), 'fresh');
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('instance id: relay.instanceId wins; else a random id kept in the instance\'s state dir, the same after a restart', (t) => {
  const dataDir = tempDir(t);
  const config = loadConfig({ env: {}, flags: { server: { dataDir, listen: '127.0.0.1:7001' } } });
  const state = InstanceState.open(config, 'relay');
  t.after(() => state.release());
  assert.equal(state.dir, join(dataDir, 'relay-127.0.0.1-7001'));
  const first = state.instanceId(config);
  assert.match(first, /^relay-[0-9a-f]{12}$/);
  assert.equal(readFileSync(join(state.dir, 'relay-id'), 'utf8').trim(), first);
  assert.equal(state.instanceId(config), first);
  const named = loadConfig({ env: {}, flags: { server: { dataDir, listen: '127.0.0.1:7001' }, relay: { instanceId: 'r-7' } } });
  assert.equal(state.instanceId(named), 'r-7');
  // Given an id, the state is the id's, whatever port it restarts on ('..' stays inside the data dir).
  assert.equal(instanceStateDir(named, 'relay'), join(dataDir, 'id-r-7'));
  assert.equal(instanceStateDir(loadConfig({ env: {}, flags: { server: { dataDir }, relay: { instanceId: '..' } } }), 'relay'), join(dataDir, 'id-..'));
  assert.equal(state.leaseFile, join(state.dir, 'relay-leases.json'));
});

test('instance state dirs: one per role and listen address (IPv6 and wildcards included), so side-by-side instances never share an id', (t) => {
  const dataDir = tempDir(t);
  const dir = (role: 'relay' | 'gateway', listen: string): string => instanceStateDir(loadConfig({ env: {}, flags: { server: { dataDir, listen } } }), role);
  assert.equal(dir('relay', '0.0.0.0:8443'), join(dataDir, 'relay-0.0.0.0-8443'));
  assert.equal(dir('gateway', '0.0.0.0:8443'), join(dataDir, 'gateway-0.0.0.0-8443'));
  assert.equal(dir('relay', '[::1]:7001'), join(dataDir, 'relay-__1-7001'));
  const ids = ['127.0.0.1:7001', '127.0.0.1:7002'].map((listen) => {
    const config = loadConfig({ env: {}, flags: { server: { dataDir, listen } } });
    const state = InstanceState.open(config, 'relay');
    t.after(() => state.release());
    return state.instanceId(config);
  });
  assert.notEqual(ids[0], ids[1]);
});

test('the state dir is locked: a live other process holding it refuses the open; a dead holder\'s lock is taken over', async (t) => {
  const dataDir = tempDir(t);
  const config = loadConfig({ env: {}, flags: { server: { dataDir, listen: '127.0.0.1:7003' } } });
  const first = InstanceState.open(config, 'relay');
  first.release();
  const lock = join(first.dir, 'lock');

  const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  t.after(() => holder.kill('SIGKILL'));
  writeFileSync(lock, `${holder.pid}\n`);
  assert.throws(() => InstanceState.open(config, 'relay'), (err: unknown) => {
    assert.ok(err instanceof InstanceStateInUseError);
    assert.match(err.message, new RegExp(`in use by process ${holder.pid} \\(another relay with --listen 127\\.0\\.0\\.1:7003\\?\\)`));
    return true;
  });
  holder.kill('SIGKILL');
  await once(holder, 'exit');
  const taken = InstanceState.open(config, 'relay');
  assert.equal(readFileSync(lock, 'utf8').trim(), String(process.pid));
  taken.release();
  assert.throws(() => readFileSync(lock), /ENOENT/);
});
