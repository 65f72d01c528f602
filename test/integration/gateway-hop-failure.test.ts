/**
 * The gateway hop when a relay fails: the calls a gateway carried to it end
 * with UNAVAILABLE within seconds, so legacy clients retry (every 2 s) and
 * land on the new owner. kill -9: the connection resets and every call ends
 * at once. SIGSTOP (a hung relay: the connection stays open, nothing
 * answers): the relay's lease expires, the directory reports instanceGone,
 * and the gateway ends what it carried there. Real etcd, a real relay, the
 * gateway end in process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { routeOfSid } from '../../src/directory/route.js';
import { HashmailError } from '../../src/session/errors.js';
import { GrpcStatus } from '../../src/wire/grpc-status.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { boxAuth, peerSid, randomSid } from '../helpers/grpc-v1.js';
import { until } from '../helpers/etcd-directory.js';
import { boxClosed, callFrom, testGateway, type TestGateway } from '../helpers/hop.js';
import { startRelay, type RunningServer } from '../helpers/server.js';

const LEASE_TTL_MS = 2000;
/** How long after the failure the carried calls must be over: the TTL, the watch, slack for a loaded machine. */
const ENDED_WITHIN_MS = LEASE_TTL_MS + 3000;
const RELAY_CONFIG = { directory: { leaseTtlMs: LEASE_TTL_MS, callTimeoutMs: 1000, loadPublishIntervalMs: 200 } };

describe('the gateway hop when the relay fails', () => {
  let etcd: EtcdCluster;
  let gw: TestGateway;

  before(async () => {
    etcd = await startEtcd(1);
  });
  after(async () => {
    await etcd?.stop();
  });

  /** One relay, a session on it with a reader and a writer carried over the hop. */
  async function carriedSession(relay: RunningServer): Promise<{ halves: { release(): void }[]; closed: Promise<Error>[] }> {
    gw = await testGateway(etcd.endpoints);
    // A relay of an earlier test may still be registered until its lease expires: sessions must land on this one.
    const self = relay.logs.find((l) => l.msg === 'serving')?.id;
    await until(() => gw.directory.instances().every((i) => i.id === self), ENDED_WITHIN_MS, 'only the relay under test registered');
    const call = callFrom('10.3.0.1');
    const sid = randomSid();
    await gw.mailbox.newCipherBox(boxAuth(sid), call);
    await gw.mailbox.newCipherBox(boxAuth(peerSid(sid)), call);
    const owner = await gw.directory.lookup(routeOfSid(sid), { place: false });
    assert.equal(owner?.address, relay.address);
    const reader = await gw.mailbox.openReceive(sid, call);
    const writer = await gw.mailbox.openSend({ streamId: peerSid(sid) }, call);
    return { halves: [reader, writer], closed: [boxClosed(reader, ENDED_WITHIN_MS), boxClosed(writer, ENDED_WITHIN_MS)] };
  }

  function assertUnavailable(err: Error): void {
    assert.ok(err instanceof HashmailError, String(err));
    assert.equal(err.grpcCode, GrpcStatus.UNAVAILABLE);
    assert.equal(err.httpStatus, 503);
  }

  test('kill -9: every carried call ends with UNAVAILABLE at once', async () => {
    const relay = await startRelay({ etcd: etcd.etcdFlag, id: 'victim-killed', config: RELAY_CONFIG });
    try {
      const { halves, closed } = await carriedSession(relay);
      relay.process.kill('SIGKILL');
      for (const err of await Promise.all(closed)) assertUnavailable(err);
      assert.equal(gw.pool.calls, 0);
      for (const h of halves) h.release();
      // Its registration goes with its lease; until then placements may still choose it.
      await until(() => !gw.directory.instances().some((i) => i.id === 'victim-killed'), ENDED_WITHIN_MS, 'the killed relay gone from the directory');
    } finally {
      await relay.stop();
      await gw?.close();
    }
  });

  test('SIGSTOP (hung relay, connection open): its lease expires and the gateway ends every carried call with UNAVAILABLE', async () => {
    const relay = await startRelay({ etcd: etcd.etcdFlag, id: 'victim-stopped', config: RELAY_CONFIG });
    try {
      const { halves, closed } = await carriedSession(relay);
      relay.process.kill('SIGSTOP');
      const errors = await Promise.all(closed);
      for (const err of errors) {
        assertUnavailable(err);
        assert.equal(err.message, 'gateway: relay unreachable (relay victim-stopped is gone)');
      }
      assert.equal(gw.mailbox.carriedCalls, 0);
      assert.equal(gw.pool.calls, 0);
      for (const h of halves) h.release();
    } finally {
      relay.process.kill('SIGCONT');
      await relay.stop();
      await gw?.close();
    }
  });

  test('SIGTERM drains the relay: the SessionRouter ends the carried halves, told to legacy clients as v1\'s UNAVAILABLE "server shutting down"', async () => {
    const relay = await startRelay({ etcd: etcd.etcdFlag, id: 'victim-drained', config: { ...RELAY_CONFIG, relay: { drainSpreadMs: 100, drainDeadlineMs: 3000 } } });
    try {
      const { halves, closed } = await carriedSession(relay);
      relay.process.kill('SIGTERM');
      for (const err of await Promise.all(closed)) {
        assertUnavailable(err);
        assert.equal(err.message, 'server shutting down');
      }
      for (const h of halves) h.release();
      assert.equal(await relay.exited, 0);
    } finally {
      await relay.stop();
      await gw?.close();
    }
  });
});
