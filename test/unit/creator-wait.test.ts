/**
 * A re-join race on a cluster relay: a lookup placed a session here for its
 * node, and the app it woke dials first. The app's ATTACH_EXISTING waits for
 * the node (v2.creatorWaitMs) instead of "stream not found" and a backoff;
 * only for a session placed here moments ago, never on a single node.
 * SessionRouter.awaitsCreator, SessionTable.whenSessionOpened and
 * V2Mailbox.attach, with a scripted directory.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import type { Directory } from '../../src/directory/directory.js';
import { MemoryDirectory } from '../../src/directory/memory-directory.js';
import { routeOfSid } from '../../src/directory/route.js';
import { createLogger } from '../../src/observe/logger.js';
import { RelayStats } from '../../src/observe/stats.js';
import { SessionRouter } from '../../src/relay/session-router.js';
import { V2Mailbox } from '../../src/relay/v2-mailbox.js';
import { HashmailError } from '../../src/session/errors.js';
import { SessionTable } from '../../src/session/session-table.js';
import { peerSid } from '../../src/session/sid.js';
import { Attach } from '../../src/wire/v2-frames.js';

const WAIT_MS = 2_000;
const logger = createLogger({ level: 'silent', format: 'json' });

/** A cluster relay's directory as the router sees it: every route served here; `gain` is a placement arriving through the watch. */
class ScriptedDirectory extends EventEmitter {
  readonly selfId = 'relay-a';
  servesHere(): boolean {
    return true;
  }
  gain(route: string): void {
    this.emit('routeGained', route);
  }
}

function table(): SessionTable {
  return new SessionTable({ bufferBytes: 65_536, rateLimit: null, acquireWaitMs: 250, maxBoxes: 100, maxBoxesPerAddress: 100, maxBufferedBytes: 1 << 20, staleTimeoutMs: -1 });
}

function sidPair(): [Buffer, Buffer] {
  // Fully random: one random byte made two pairs of a test collide once in 256 runs.
  const node = randomBytes(64);
  node[63] &= 0xfe;
  return [node, peerSid(node)];
}

const hello = (sid: Buffer, attach: Attach) => ({ minVersion: 2, maxVersion: 2, sid, attach });
const call = { transport: 'grpc' as const, address: '127.0.0.1' };

function isNotFound(err: unknown): boolean {
  return err instanceof HashmailError && err.code === 'STREAM_NOT_FOUND';
}

test('awaitsCreator: true for a route placed here within creatorWaitMs, false before, after and when the wait is off', () => {
  const dir = new ScriptedDirectory();
  let now = 1_000;
  const router = new SessionRouter(dir as unknown as Directory, logger, WAIT_MS, () => now);
  assert.equal(router.awaitsCreator('r1'), false);
  dir.gain('r1');
  now += WAIT_MS - 1;
  assert.equal(router.awaitsCreator('r1'), true);
  now += 1;
  assert.equal(router.awaitsCreator('r1'), false);
  // Old entries go as new placements arrive: the map holds about one window.
  dir.gain('r2');
  assert.equal(router.awaitsCreator('r1'), false);
  assert.equal(router.awaitsCreator('r2'), true);

  const off = new ScriptedDirectory();
  const noWait = new SessionRouter(off as unknown as Directory, logger, 0);
  off.gain('r3');
  assert.equal(noWait.awaitsCreator('r3'), false);
});

test('an app that outruns the node of a session placed here waits for it and attaches; the node creates as usual', async () => {
  const dir = new ScriptedDirectory();
  const t = table();
  const mailbox = new V2Mailbox(t, new RelayStats(), { windowBytes: 65_536, maxMessageBytes: 65_536 }, new SessionRouter(dir as unknown as Directory, logger, WAIT_MS));
  const [nodeSid, appSid] = sidPair();
  dir.gain(routeOfSid(nodeSid));
  let appDone = false;
  const app = mailbox.attach(hello(appSid, Attach.Existing), call).finally(() => {
    appDone = true;
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(appDone, false, 'the app waits instead of "stream not found"');
  const node = await mailbox.attach(hello(nodeSid, Attach.Create), call);
  const appEndpoint = await app;
  assert.equal(appEndpoint.peerPresent, true, 'the app met the node');
  appEndpoint.release();
  node.release();
});

test('no wait: a session not placed here just now, a single node, or creatorWaitMs 0 answer "stream not found" at once', async () => {
  const [, appSid] = sidPair();
  // Placed here long ago (no routeGained): the session expired, say so at once.
  const cluster = new V2Mailbox(table(), new RelayStats(), { windowBytes: 65_536, maxMessageBytes: 65_536 }, new SessionRouter(new ScriptedDirectory() as unknown as Directory, logger, WAIT_MS));
  await assert.rejects(cluster.attach(hello(appSid, Attach.Existing), call), isNotFound);
  // hashmail serve: the in-memory directory never places, so never waits.
  const single = new MemoryDirectory();
  await single.register({ id: 'serve', addresses: ['127.0.0.1:1'], version: 'test' });
  const serve = new V2Mailbox(table(), new RelayStats(), { windowBytes: 65_536, maxMessageBytes: 65_536 }, new SessionRouter(single, logger, WAIT_MS));
  await assert.rejects(serve.attach(hello(appSid, Attach.Existing), call), isNotFound);
  // Placed a moment ago, but the wait is off.
  const dir = new ScriptedDirectory();
  const off = new V2Mailbox(table(), new RelayStats(), { windowBytes: 65_536, maxMessageBytes: 65_536 }, new SessionRouter(dir as unknown as Directory, logger, 0));
  dir.gain(routeOfSid(appSid));
  await assert.rejects(off.attach(hello(appSid, Attach.Existing), call), isNotFound);
});

test('whenSessionOpened: resolves when the session is created, when the wait runs out, when the caller leaves; capped at maxBoxes waiters', async () => {
  const t = table();
  const [a] = sidPair();
  const opened = t.whenSessionOpened(a, 60_000);
  t.openSession(peerSid(a), a, '127.0.0.1', true, 65_536);
  await opened;

  const [b] = sidPair();
  await t.whenSessionOpened(b, 20); // nobody creates it: the wait runs out

  const [c] = sidPair();
  const gone = new AbortController();
  const waiting = t.whenSessionOpened(c, 60_000, gone.signal);
  gone.abort();
  await waiting;

  const small = new SessionTable({ bufferBytes: 65_536, rateLimit: null, acquireWaitMs: 250, maxBoxes: 2, maxBoxesPerAddress: 2, maxBufferedBytes: 1 << 20, staleTimeoutMs: -1 });
  const [d] = sidPair();
  const [e] = sidPair();
  const [f] = sidPair();
  const leave = new AbortController();
  const first = small.whenSessionOpened(d, 60_000, leave.signal);
  const second = small.whenSessionOpened(e, 60_000, leave.signal);
  const third = small.whenSessionOpened(f, 60_000, leave.signal);
  const settled = (p: Promise<void>): Promise<boolean> => Promise.race([p.then(() => true), new Promise<boolean>((resolve) => setImmediate(() => resolve(false)))]);
  assert.equal(await settled(third), true, 'a third waiter over maxBoxes (2) is answered at once');
  assert.equal(await settled(second), false, 'the others still wait');
  small.openSession(d, peerSid(d), '127.0.0.1', true, 65_536);
  assert.equal(await settled(first), true, 'woken by the creation');
  assert.equal(await settled(second), false, 'another session stays waiting');
  leave.abort();
  await second;
  await first;
});
