/**
 * v2 parties find their relay, against real processes: a lookup instance
 * (test/helpers/lookup-instance.ts: ServerForMailbox, GET /v2/relay, and a
 * Connect / WebSocket that redirects with Error.relay_address) names a real
 * `hashmail serve` as the owner; the client library, over gRPC and
 * WebSocket, looks up, dials the owner or follows the redirect, and looks up
 * again after its relay went away. serve's own lookups (naming itself) are
 * covered by test/integration/serve-lookup.test.ts.
 * Every wait is bounded; everything listens on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { withTimeout } from '../helpers/async-queue.js';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { connect, type ConnectOptions, type MailboxConnection, type ReconnectedInfo, type TransportName } from '../../src/client/index.js';
import { forgetLookupSupport } from '../../src/client/relay-finder.js';
import { flipSid } from '../../src/client/bytes.js';
import { routeOfSid } from '../../src/directory/route.js';
import { REFUSING_PORT } from '../helpers/etcd.js';
import { startLookupInstance, type LookupInstance } from '../helpers/lookup-instance.js';
import { BIN, ROOT, startServer, type RunningServer } from '../helpers/server.js';

const STEP_TIMEOUT_MS = 10_000;
/** A relay going away: both parties back off (ceilings from 100 ms) and the app retries "not found" until the node is back. */
const REJOIN_TIMEOUT_MS = 20_000;
const TRANSPORTS: TransportName[] = ['grpc', 'websocket'];

let open: MailboxConnection[] = [];
afterEach(async () => {
  await Promise.all(open.map((c) => c.close()));
  open = [];
  forgetLookupSupport();
});

/** `promise`, or a rejection naming `what` after `ms` (the shared withTimeout with this file's default step). */
function bounded<T>(promise: Promise<T>, what: string, ms = STEP_TIMEOUT_MS): Promise<T> {
  return withTimeout(promise, ms, what);
}

async function party(options: ConnectOptions): Promise<MailboxConnection> {
  const conn = await bounded(connect({ insecure: true, protocol: 'v2', ...options }), 'connect');
  open.push(conn);
  return conn;
}

const readers = new WeakMap<MailboxConnection, AsyncIterator<Uint8Array>>();
async function nextText(conn: MailboxConnection, ms = STEP_TIMEOUT_MS): Promise<string> {
  let it = readers.get(conn);
  if (!it) {
    it = conn[Symbol.asyncIterator]();
    readers.set(conn, it);
  }
  const r = await bounded(it.next(), 'a message', ms);
  assert.ok(!r.done, 'iterator ended');
  return Buffer.from(r.value).toString();
}

async function exchange(a: MailboxConnection, b: MailboxConnection, tag: string): Promise<void> {
  await bounded(a.send(Buffer.from(`${tag}: a to b`)), 'send');
  assert.equal(await nextText(b), `${tag}: a to b`);
  await bounded(b.send(Buffer.from(`${tag}: b to a`)), 'send');
  assert.equal(await nextText(a), `${tag}: b to a`);
}

/** The address a lookup instance serves on for `transport`. */
function lookupAt(instance: LookupInstance, transport: TransportName): string {
  return transport === 'grpc' ? instance.grpcAddress : instance.httpAddress;
}

describe('client: finding the relay', () => {
  let owner: RunningServer;
  let instance: LookupInstance;
  before(async () => {
    owner = await startServer();
    instance = await startLookupInstance(owner.address);
  });
  after(async () => {
    await instance.close();
    await owner.stop();
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: both parties ask a non-owner instance, look the route up, and meet on the owner`, async () => {
      instance.owner = owner.address;
      instance.lookups = [];
      const s = new Uint8Array(randomBytes(64));
      const node = await party({ server: lookupAt(instance, transport), sid: s, role: 'node', transport });
      const app = await party({ server: lookupAt(instance, transport), sid: flipSid(s), transport, attach: 'existing' });
      assert.equal(node.relay, owner.address);
      assert.equal(app.relay, owner.address);
      assert.equal(app.peerPresent, true, 'both on one relay');
      const wire = transport === 'grpc' ? 'grpc' : 'http';
      assert.deepEqual(instance.lookups, [
        { transport: wire, route: routeOfSid(s), create: true },
        { transport: wire, route: routeOfSid(s), create: false },
      ]);
      await exchange(node, app, transport);
    });

    test(`${transport}: a relay that does not own the session redirects (Error.relay_address) and the party follows at once`, async () => {
      // The lookup names the stand-in itself (a stale answer); its Connect points at the real owner.
      instance.owner = lookupAt(instance, transport);
      instance.redirectTo = owner.address;
      const before = instance.redirects[transport];
      const s = new Uint8Array(randomBytes(64));
      const node = await party({ server: lookupAt(instance, transport), sid: s, role: 'node', transport });
      assert.equal(node.relay, owner.address);
      assert.equal(instance.redirects[transport], before + 1);
      const app = await party({ server: owner.address, sid: flipSid(s), transport });
      await exchange(node, app, `${transport} redirected`);
    });

    test(`${transport}: not placed with attach 'existing' is SessionNotFound from the lookup`, async () => {
      instance.owner = null;
      await assert.rejects(
        connect({ server: lookupAt(instance, transport), insecure: true, protocol: 'v2', transport, sid: new Uint8Array(randomBytes(64)), attach: 'existing' }),
        { name: 'SessionNotFound' },
      );
    });
  }

  test('a server list whose first instance is down: the next one answers the lookup', async () => {
    instance.owner = owner.address;
    const dead = `127.0.0.1:${REFUSING_PORT}`;
    const s = new Uint8Array(randomBytes(64));
    const a = await party({ server: [dead, instance.grpcAddress], sid: s, role: 'node', transport: 'grpc' });
    const b = await party({ server: `${dead},${instance.httpAddress}`, sid: flipSid(s), transport: 'websocket' });
    assert.equal(a.relay, owner.address);
    assert.equal(b.relay, owner.address);
    await exchange(a, b, 'list');
  });
});

/** A `hashmail pipe` child; its stdout and stderr collected; `waitFor` bounded. */
function startPipe(args: string[]): { input(text: string): void; waitFor(stream: 'stdout' | 'stderr', text: string): Promise<void>; kill(): void } {
  const child = spawn(process.execPath, [BIN, 'pipe', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d: Buffer) => (out.stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (out.stderr += d.toString()));
  child.stdin.on('error', () => undefined);
  return {
    input: (text) => child.stdin.write(text),
    waitFor: (stream, text) =>
      bounded(
        new Promise<void>((resolve, reject) => {
          const check = (): void => {
            if (out[stream].includes(text)) resolve();
          };
          child[stream].on('data', check);
          child.once('exit', (code) => reject(new Error(`pipe exited (${code}) before printing '${text}': ${out.stderr}`)));
          check();
        }),
        `pipe ${stream}: ${text}`,
      ),
    kill: () => child.kill('SIGKILL'),
  };
}

describe('hashmail pipe --protocol v2 --server ANY_INSTANCE', () => {
  let owner: RunningServer;
  let instance: LookupInstance;
  before(async () => {
    owner = await startServer();
    instance = await startLookupInstance(owner.address);
  });
  after(async () => {
    await instance.close();
    await owner.stop();
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: two pipes given a non-owner instance (one behind a dead one) meet on the owner`, async () => {
      const sid = randomBytes(64);
      const peer = Buffer.from(flipSid(sid));
      const dead = `127.0.0.1:${REFUSING_PORT}`;
      const at = lookupAt(instance, transport);
      const common = ['--insecure', '--protocol', 'v2', '--transport', transport, '--create'];
      const a = startPipe(['--server', at, '--sid', sid.toString('hex'), ...common]);
      const b = startPipe(['--server', `${dead},${at}`, '--sid', peer.toString('hex'), ...common]);
      try {
        await Promise.all([a.waitFor('stderr', 'peer present'), b.waitFor('stderr', 'peer present')]);
        a.input('hello from a\n');
        b.input('hello from b\n');
        await Promise.all([b.waitFor('stdout', 'hello from a\n'), a.waitFor('stdout', 'hello from b\n')]);
      } finally {
        a.kill();
        b.kill();
      }
      assert.ok(instance.lookups.filter((l) => l.route === routeOfSid(sid)).length >= 2, 'both pipes looked the route up');
    });
  }
});

describe('client: looking up again after the relay went away', () => {
  const started: RunningServer[] = [];
  let instance: LookupInstance;
  after(async () => {
    await instance?.close();
    await Promise.all(started.map((s) => s.stop()));
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: the owner stops; both parties look up again and re-join on the new owner`, async () => {
      const first = await startServer();
      const second = await startServer();
      started.push(first, second);
      instance ??= await startLookupInstance(first.address);
      instance.owner = first.address;
      const s = new Uint8Array(randomBytes(64));
      const node = await party({ server: lookupAt(instance, transport), sid: s, role: 'node', transport });
      const app = await party({ server: lookupAt(instance, transport), sid: flipSid(s), transport });
      assert.equal(node.relay, first.address);
      await exchange(node, app, 'before');

      const rejoined = (conn: MailboxConnection): Promise<ReconnectedInfo> =>
        bounded(new Promise<ReconnectedInfo>((resolve) => conn.once('reconnected', resolve)), 'reconnected', REJOIN_TIMEOUT_MS);
      const nodeBack = rejoined(node);
      const appBack = rejoined(app);
      instance.owner = second.address;
      const lookupsBefore = instance.lookups.length;
      await first.stop();
      const [n, a] = await Promise.all([nodeBack, appBack]);
      assert.equal(n.relay, second.address);
      assert.equal(a.relay, second.address);
      assert.ok(instance.lookups.length >= lookupsBefore + 2, 'each party looked the route up again');
      await exchange(node, app, 'after');
    });
  }
});
