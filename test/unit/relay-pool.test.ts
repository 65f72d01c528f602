/**
 * RelayPool without a relay (grpc-js clients dial lazily): calls pack onto a
 * connection up to hop.streamsPerConnection, the pool grows to
 * hop.maxConnectionsPerRelay per relay address and refuses at once past it,
 * released places are reused, idle connections close.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RelayPool } from '../../src/gateway/relay-pool.js';
import { HashmailError } from '../../src/session/errors.js';
import { until } from '../helpers/etcd-directory.js';

const IDLE_MS = 50;

function pool(limits: string[]): RelayPool {
  return new RelayPool({ streamsPerConnection: 2, maxConnectionsPerRelay: 2, idleConnectionMs: IDLE_MS, tls: null, maxMessageBytes: 1024, onLimit: (key) => limits.push(key) });
}

test('calls pack onto connections, the pool grows to its limit per relay and refuses at once past it', () => {
  const limits: string[] = [];
  const p = pool(limits);
  try {
    const a = [p.acquire('127.0.0.1:1'), p.acquire('127.0.0.1:1')];
    assert.equal(p.connectionsTo('127.0.0.1:1'), 1);
    assert.equal(a[0].client, a[1].client);
    a.push(p.acquire('127.0.0.1:1'), p.acquire('127.0.0.1:1'));
    assert.equal(p.connectionsTo('127.0.0.1:1'), 2);
    assert.notEqual(a[2].client, a[0].client);
    assert.throws(
      () => p.acquire('127.0.0.1:1'),
      (err: unknown) => err instanceof HashmailError && err.code === 'LIMIT_REACHED' && err.grpcCode === 8 && err.message === 'gateway: relay connection limit reached (hop.maxConnectionsPerRelay)',
    );
    assert.deepEqual(limits, ['hop.maxConnectionsPerRelay']);
    // Another relay has its own pool.
    p.acquire('127.0.0.1:2');
    assert.equal(p.connections, 3);
    assert.equal(p.calls, 5);
    a[1].release();
    a[1].release();
    assert.equal(p.calls, 4);
    assert.equal(p.acquire('127.0.0.1:1').client, a[0].client);
  } finally {
    p.close();
  }
});

test('a connection that carries nothing for idleConnectionMs closes; one in use stays', async () => {
  const p = pool([]);
  try {
    const kept = p.acquire('127.0.0.1:1');
    const first = p.acquire('127.0.0.1:1');
    const other = p.acquire('127.0.0.1:3');
    other.release();
    first.release();
    await until(() => p.connectionsTo('127.0.0.1:3') === 0, 5000, 'idle connection closed');
    assert.equal(p.connectionsTo('127.0.0.1:1'), 1);
    kept.release();
    await until(() => p.connections === 0, 5000, 'every idle connection closed');
    assert.throws(() => (p.close(), p.acquire('127.0.0.1:1')), { message: 'server shutting down' });
  } finally {
    p.close();
  }
});
