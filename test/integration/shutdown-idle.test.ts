/**
 * Stopping does not wait on connections that hold nothing: a kept-alive
 * HTTP/1.1 connection between requests (a client's lookup socket) is closed
 * at once, and a gateway's hop lane is ended once every half on it has
 * ended. Before, each kept the process for server.shutdownGraceMs (5 s by
 * default) after every stream had ended. Here the grace is far longer than
 * the test waits, so only closing them lets the process exit in time.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import { routeOfSid } from '../../src/directory/route.js';
import { withTimeout } from '../helpers/async-queue.js';
import { startEtcd } from '../helpers/etcd.js';
import { clusterHopToken, openRawLane } from '../helpers/hop.js';
import { rawHttpExchange } from '../helpers/raw-http.js';
import { startRelay, startServer } from '../helpers/server.js';

/** server.shutdownGraceMs here: longer than EXIT_BOUND_MS, so waiting it out fails the test. */
const LONG_GRACE_MS = 120_000;
/** Under the relay's 15 s lane silence limit too: only ending the lane at stop lets the relay exit within it. */
const EXIT_BOUND_MS = 10_000;

test('serve: SIGTERM closes an idle kept-alive HTTP connection instead of waiting the grace out', async () => {
  const server = await startServer({ config: { server: { shutdownGraceMs: LONG_GRACE_MS } } });
  const socket = net.connect(server.port, '127.0.0.1');
  socket.on('error', () => undefined);
  try {
    const answer = await rawHttpExchange(socket, `GET /v2/relay?route=${routeOfSid(randomBytes(64))}&create=1 HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.match(answer, /^HTTP\/1\.1 200 /);
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    server.process.kill('SIGTERM');
    assert.equal(await withTimeout(server.exited, EXIT_BOUND_MS, 'serve to exit'), 0);
    await withTimeout(closed, EXIT_BOUND_MS, 'the idle connection closed by the server');
  } finally {
    socket.destroy();
    await server.stop();
  }
});

test('relay: SIGTERM ends a gateway\'s idle hop lane instead of waiting the grace out', async () => {
  const etcd = await startEtcd(1);
  try {
    const relay = await startRelay({ etcd: etcd.etcdFlag, config: { server: { shutdownGraceMs: LONG_GRACE_MS } } });
    try {
      const lane = await openRawLane(relay.address, (await clusterHopToken(etcd.endpoints)).value);
      assert.equal(lane.refused, null);
      relay.process.kill('SIGTERM');
      assert.equal(await withTimeout(relay.exited, EXIT_BOUND_MS, 'the relay to exit'), 0);
      await withTimeout(lane.closed, EXIT_BOUND_MS, 'the lane ended by the relay');
      lane.close();
    } finally {
      await relay.stop();
    }
  } finally {
    await etcd.stop();
  }
});
