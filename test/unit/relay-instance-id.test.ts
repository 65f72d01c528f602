import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

test('the state dir is locked: a live other process holding it refuses the open; a dead holder\'s lock, or one whose pid another process now has, is taken over', async (t) => {
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
  const holderStarted = readFileSync(`/proc/${holder.pid}/stat`, 'utf8').split(') ')[1].split(' ')[19];
  writeFileSync(lock, `${holder.pid} ${holderStarted}\n`);
  assert.throws(() => InstanceState.open(config, 'relay'), InstanceStateInUseError, 'the live holder, start time and all');
  // The pid alive but started at another time: an unrelated process reusing a dead holder's pid.
  writeFileSync(lock, `${holder.pid} ${Number(holderStarted) + 1}\n`);
  const reused = InstanceState.open(config, 'relay');
  assert.match(readFileSync(lock, 'utf8'), new RegExp(`^${process.pid} \\d+\n$`));
  reused.release();

  writeFileSync(lock, `${holder.pid}\n`);
  holder.kill('SIGKILL');
  await once(holder, 'exit');
  const taken = InstanceState.open(config, 'relay');
  assert.equal(readFileSync(lock, 'utf8').split(' ')[0], String(process.pid));
  taken.release();
  assert.throws(() => readFileSync(lock), /ENOENT/);
});

test('starts racing for one state dir (a stale lock there): exactly one takes it', async (t) => {
  const dataDir = tempDir(t);
  const config = loadConfig({ env: {}, flags: { server: { dataDir, listen: '127.0.0.1:7004' } } });
  const first = InstanceState.open(config, 'relay');
  first.release();
  const dead = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await once(dead, 'exit');
  writeFileSync(join(first.dir, 'lock'), `${dead.pid}\n`);
  const go = join(dataDir, 'go');
  const moduleUrl = new URL('../../src/compose/instance-state.ts', import.meta.url).href;
  const loadUrl = new URL('../../src/config/load.ts', import.meta.url).href;
  // Each racer waits for the go file (bounded), tries the lock, reports, and holds it until its stdin closes.
  const script = `
    const { existsSync } = await import('node:fs');
    const { InstanceState } = await import(${JSON.stringify(moduleUrl)});
    const { loadConfig } = await import(${JSON.stringify(loadUrl)});
    const config = loadConfig({ env: {}, flags: { server: { dataDir: ${JSON.stringify(dataDir)}, listen: '127.0.0.1:7004' } } });
    process.stdout.write('ready\\n');
    for (let i = 0; i < 2000 && !existsSync(${JSON.stringify(go)}); i++) await new Promise((r) => setTimeout(r, 2));
    let verdict = 'locked';
    try { InstanceState.open(config, 'relay'); } catch (err) { verdict = err.constructor.name; }
    process.stdout.write(verdict + '\\n');
    process.stdin.resume();
    process.stdin.on('end', () => process.exit(0));
  `;
  const racers = Array.from({ length: 4 }, () => spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] }));
  t.after(() => racers.forEach((r) => r.kill('SIGKILL')));
  const lines = racers.map((r) => {
    const got: string[] = [];
    const waiters: (() => void)[] = [];
    let buffer = '';
    r.stdout.on('data', (d: Buffer) => {
      buffer += d.toString();
      for (let at = buffer.indexOf('\n'); at >= 0; at = buffer.indexOf('\n')) {
        got.push(buffer.slice(0, at));
        buffer = buffer.slice(at + 1);
      }
      waiters.splice(0).forEach((w) => w());
    });
    r.once('exit', () => waiters.splice(0).forEach((w) => w()));
    /** The `n`th line the racer printed ('exited' if it ended first). */
    return async (n: number): Promise<string> => {
      while (got.length <= n && r.exitCode === null && r.signalCode === null) await new Promise<void>((resolve) => waiters.push(resolve));
      return got[n] ?? 'exited';
    };
  });
  // Every racer loaded and waiting, then the go.
  assert.deepEqual(await Promise.all(lines.map((line) => line(0))), ['ready', 'ready', 'ready', 'ready']);
  writeFileSync(go, '');
  const verdicts = lines.map((line) => line(1));
  const results = await Promise.all(verdicts);
  for (const r of racers) r.stdin.end();
  assert.equal(results.filter((v) => v === 'locked').length, 1, `verdicts: ${results.join(', ')}`);
  assert.equal(results.filter((v) => v === 'InstanceStateInUseError').length, 3, `verdicts: ${results.join(', ')}`);
});

test('--listen HOST:0 names no instance: each process gets a state dir of its own, removed at stop; one a killed process left is removed by the next', async (t) => {
  const dataDir = tempDir(t);
  const config = loadConfig({ env: {}, flags: { server: { dataDir, listen: '127.0.0.1:0' } } });
  const stem = join(dataDir, 'relay-127.0.0.1-0-pid');
  const ours = InstanceState.open(config, 'relay');
  assert.equal(ours.dir, `${stem}${process.pid}`);
  const firstId = ours.instanceId(config);

  // Another process on port 0 beside us (same data dir) and one that was killed: their dirs, by hand.
  const other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60_000)'], { stdio: 'ignore' });
  t.after(() => other.kill('SIGKILL'));
  const dead = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await once(dead, 'exit');
  for (const pid of [other.pid, dead.pid]) {
    mkdirSync(`${stem}${pid}`);
    writeFileSync(join(`${stem}${pid}`, 'lock'), `${pid}\n`);
  }
  ours.release();
  assert.equal(existsSync(ours.dir), false, 'removed at stop: nobody starts on it again');

  const again = InstanceState.open(config, 'relay');
  assert.notEqual(again.instanceId(config), firstId, 'a new instance each start');
  assert.equal(existsSync(`${stem}${dead.pid}`), false, 'the killed process\'s dir is gone');
  assert.equal(existsSync(`${stem}${other.pid}`), true, 'the live one\'s is kept');
  again.release();
});
