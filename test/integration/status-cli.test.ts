/**
 * `hashmail status` against a real etcd with two registered instances, and
 * against an etcd that is not there.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { REFUSING_PORT, startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { member, randomRoute, until } from '../helpers/etcd-directory.js';

const run = promisify(execFile);
const CLI = 'dist/cli/main.js';
/** `hashmail status` must give up on an absent etcd well within this (its call deadline is 2 s). */
const UNREACHABLE_EXIT_MS = 5000;

describe('hashmail status', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd(1);
  });
  after(async () => {
    await etcd.stop();
  });

  test('--json: one object with every registered instance and the etcd endpoints', async (t) => {
    const prefix = '/status/';
    const a = await member(etcd.endpoints, 'relay-a', { prefix }, 7101);
    const b = await member(etcd.endpoints, 'relay-b', { prefix }, 7102);
    t.after(() => Promise.all([a.close({ revoke: true }), b.close({ revoke: true })]));
    a.publishLoad({ sessions: 3, connections: 6 });
    await b.setDraining();
    await until(() => a.instances().find((i) => i.id === 'relay-b')?.draining === true, 3000, 'a sees b draining');
    for (let i = 0; i < 5; i++) await a.lookup(randomRoute(), { place: true });
    await until(() => a.instances().find((i) => i.id === 'relay-a')?.load.sessions === 3, 3000, 'load published');

    const { stdout } = await run(process.execPath, [CLI, 'status', '--etcd', etcd.etcdFlag, '--prefix', prefix, '--json']);
    const status = JSON.parse(stdout) as {
      instances: { id: string; role: string; address: string; sessions: number; draining: boolean; mappedSessions: number; leaseRemainingSeconds: number | null }[];
      etcd: { endpoints: { endpoint: string; reachable: boolean; version: string; isLeader: boolean; dbSize: number }[] };
    };
    assert.deepEqual(
      status.instances.map((i) => ({ id: i.id, role: i.role, address: i.address, sessions: i.sessions, draining: i.draining })),
      [
        { id: 'relay-a', role: 'relay', address: '127.0.0.1:7101', sessions: 3, draining: false },
        { id: 'relay-b', role: 'relay', address: '127.0.0.1:7102', sessions: 0, draining: true },
      ],
    );
    assert.equal(status.instances.reduce((n, i) => n + i.mappedSessions, 0), 5);
    assert.equal(status.instances[0].mappedSessions, 5, 'b drains: every placement went to a');
    assert.ok(status.instances.every((i) => i.leaseRemainingSeconds !== null && i.leaseRemainingSeconds > 0));
    assert.equal(status.etcd.endpoints.length, 1);
    assert.equal(status.etcd.endpoints[0].reachable, true);
    assert.equal(status.etcd.endpoints[0].isLeader, true);
    assert.match(status.etcd.endpoints[0].version, /^3\./);
    assert.ok(status.etcd.endpoints[0].dbSize > 0);

    const table = await run(process.execPath, [CLI, 'status', '--etcd', etcd.etcdFlag, '--prefix', prefix]);
    assert.match(table.stdout, /relay-a\s+relay\s+127\.0\.0\.1:7101\s+3\s+5/);
    assert.match(table.stdout, /relay-b.*yes/);
  });

  test('unreachable etcd: non-zero exit with a clear message, fast', async () => {
    const port = REFUSING_PORT;
    const started = Date.now();
    await assert.rejects(run(process.execPath, [CLI, 'status', '--etcd', `http://127.0.0.1:${port}`, '--json'], { timeout: UNREACHABLE_EXIT_MS * 2 }), (err: unknown) => {
      const e = err as { code: number; stdout: string; stderr: string };
      assert.equal(e.code, 1);
      assert.equal(e.stdout, '');
      assert.match(e.stderr, /etcd unreachable/);
      return true;
    });
    assert.ok(Date.now() - started < UNREACHABLE_EXIT_MS);
  });
});
