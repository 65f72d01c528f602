/**
 * Relays started side by side from one data dir (the default `.data` of one
 * working directory) are distinct instances: each keeps its id and leases in
 * a directory of its own, named by its listen address. A second process
 * with the same listen address and data dir is refused before it touches
 * etcd, so it cannot revoke the first one's leases.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { promisify } from 'node:util';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { BIN, ROOT, startRelay, type RunningServer } from '../helpers/server.js';

const run = promisify(execFile);
/** The refused process must exit well within this (it gives up before any etcd call). */
const REFUSED_EXIT_MS = 30_000;

let etcd: EtcdCluster;
const shared = mkdtempSync(join(tmpdir(), 'hashmail-shared-'));
const relays: RunningServer[] = [];

before(async () => {
  etcd = await startEtcd(1);
});

after(async () => {
  await Promise.all(relays.map((r) => r.stop()));
  await etcd?.stop();
  rmSync(shared, { recursive: true, force: true });
});

interface StatusJson {
  instances: { id: string; address: string; leaseRemainingSeconds: number | null }[];
}

async function status(): Promise<StatusJson> {
  const { stdout } = await run(process.execPath, [BIN, 'status', '--etcd', etcd.etcdFlag, '--json'], { cwd: ROOT });
  return JSON.parse(stdout) as StatusJson;
}

test('two relays sharing one data dir register as two instances; a third on the first one\'s listen address is refused and revokes nothing', async () => {
  relays.push(await startRelay({ etcd: etcd.etcdFlag, dataDir: shared }));
  relays.push(await startRelay({ etcd: etcd.etcdFlag, dataDir: shared }));
  const [a, b] = relays;
  const registered = (await status()).instances;
  assert.deepEqual(registered.map((i) => i.address).sort(), [a.address, b.address].sort());
  assert.notEqual(registered[0].id, registered[1].id, 'one id for two relays');

  const dup = run(
    process.execPath,
    [BIN, 'relay', '--etcd', etcd.etcdFlag, '--listen', a.address, '--advertise', a.address, '--admin-listen', '127.0.0.1:0', '--insecure', '--data-dir', shared],
    { cwd: ROOT, timeout: REFUSED_EXIT_MS },
  );
  const refused = await dup.then(
    () => assert.fail('a second relay on the same listen address and data dir started'),
    (err: { code?: number; stdout?: string; stderr?: string }) => err,
  );
  assert.equal(refused.code, 1);
  assert.match(`${refused.stdout ?? ''}${refused.stderr ?? ''}`, /is in use by process \d+ \(another relay with --listen 127\.0\.0\.1:\d+\?\)/);

  // The first relay's registration and lease are untouched.
  const after = (await status()).instances;
  assert.deepEqual(after.map((i) => i.id).sort(), registered.map((i) => i.id).sort());
  assert.ok(after.every((i) => i.leaseRemainingSeconds !== null && i.leaseRemainingSeconds > 0));
  assert.equal((await a.admin('/healthz')).status, 200);
});
