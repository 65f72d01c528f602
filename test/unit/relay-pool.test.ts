/**
 * RelayPool without a relay (its lanes are stand-ins: nothing is dialled):
 * calls pack onto a connection up to hop.streamsPerConnection, the pool grows to
 * hop.maxConnectionsPerRelay per relay address and refuses at once past it,
 * released places are reused, idle connections close.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HopLane } from '../../src/gateway/hop-lane.js';
import { RelayPool, type PooledCall } from '../../src/gateway/relay-pool.js';
import { HashmailError } from '../../src/session/errors.js';
import { until } from '../helpers/etcd-directory.js';

const IDLE_MS = 50;

function pool(limits: string[]): RelayPool {
  return new RelayPool({ streamsPerConnection: 2, maxConnectionsPerRelay: 2, idleConnectionMs: IDLE_MS, tls: null, onLimit: (key) => limits.push(key) });
}

/** A stand-in lane per connection: which connection a call got is which lane it sees. */
let opened = 0;
const laneOf = (c: PooledCall): HopLane => c.lane(() => ({ usable: true, id: ++opened, close: () => undefined }) as unknown as HopLane);

test('calls pack onto connections, the pool grows to its limit per relay and refuses at once past it', () => {
  const limits: string[] = [];
  const p = pool(limits);
  try {
    const a = [p.acquire('127.0.0.1:1'), p.acquire('127.0.0.1:1')];
    assert.equal(p.connectionsTo('127.0.0.1:1'), 1);
    assert.equal(laneOf(a[0]), laneOf(a[1]));
    a.push(p.acquire('127.0.0.1:1'), p.acquire('127.0.0.1:1'));
    assert.equal(p.connectionsTo('127.0.0.1:1'), 2);
    assert.notEqual(laneOf(a[2]), laneOf(a[0]));
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
    assert.equal(laneOf(p.acquire('127.0.0.1:1')), laneOf(a[0]));
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
