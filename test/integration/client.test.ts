/**
 * The client library (src/client) against real `hashmail serve` processes:
 * v2 over gRPC and WebSocket, presence, typed errors, fallback to v1 on a
 * v1-only relay (both transports), and reconnecting through a relay restart
 * on the same port. Every wait is an awaited event bounded by STEP_TIMEOUT_MS.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import {
  connect,
  ConnectionLost,
  SessionInUse,
  SessionNotFound,
  UnsupportedVersion,
  type ConnectOptions,
  type MailboxConnection,
  type TransportName,
} from '../../src/client/index.js';
import { flipSid } from '../../src/client/bytes.js';
import { forgetNegotiatedProtocols } from '../../src/client/negotiate.js';
import { startServer, type RunningServer } from '../helpers/server.js';

const STEP_TIMEOUT_MS = 10_000;
/** A relay restart: the clients back off (ceilings up to 10 s) while it is down. */
const RECONNECT_TIMEOUT_MS = 30_000;
const V1_ONLY = { HASHMAIL_V2__ENABLED: 'false' };
const TRANSPORTS: TransportName[] = ['grpc', 'websocket'];

const servers: RunningServer[] = [];
let open: MailboxConnection[] = [];

after(async () => {
  await Promise.all(servers.map((s) => s.stop()));
});

afterEach(async () => {
  await Promise.all(open.map((c) => c.close()));
  open = [];
});

async function bounded<T>(promise: Promise<T>, what: string, ms = STEP_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function dial(server: RunningServer, options: Omit<ConnectOptions, 'server'>): Promise<MailboxConnection> {
  const conn = await bounded(connect({ server: server.address, insecure: true, ...options }), 'connect');
  open.push(conn);
  return conn;
}

const readers = new WeakMap<MailboxConnection, AsyncIterator<Uint8Array>>();

/** The next message `conn` receives, as text. */
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

function sendText(conn: MailboxConnection, text: string): Promise<void> {
  return bounded(conn.send(Buffer.from(text)), 'send');
}

/** Resolves with the next presence event that equals `present`. */
function presence(conn: MailboxConnection, present: boolean): Promise<void> {
  return bounded(
    new Promise<void>((resolve) => {
      const fn = (p: boolean): void => {
        if (p !== present) return;
        conn.off('presence', fn);
        resolve();
      };
      conn.on('presence', fn);
    }),
    `presence ${present}`,
  );
}

function event<K extends 'reconnecting' | 'reconnected'>(conn: MailboxConnection, name: K, ms = STEP_TIMEOUT_MS): Promise<void> {
  return bounded(new Promise<void>((resolve) => conn.once(name, () => resolve())), name, ms);
}

const sid = (): Uint8Array => new Uint8Array(randomBytes(64));

async function exchange(a: MailboxConnection, b: MailboxConnection, tag: string): Promise<void> {
  await sendText(a, `${tag}: a to b`);
  assert.equal(await nextText(b), `${tag}: a to b`);
  await sendText(b, `${tag}: b to a`);
  await sendText(b, '');
  assert.equal(await nextText(a), `${tag}: b to a`);
  assert.equal(await nextText(a), '', 'an empty message arrives as one');
}

describe('client: protocol v2', () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer();
    servers.push(server);
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: either party first, presence both ways, exchange both ways`, async () => {
      const s = sid();
      const a = await dial(server, { sid: s, role: 'node', transport });
      assert.equal(a.version, 2);
      assert.equal(a.peerPresent, false, 'the first party waits for its peer');
      const aSeesPeer = presence(a, true);
      const b = await dial(server, { sid: flipSid(s), transport });
      assert.equal(b.version, 2);
      assert.equal(b.peerPresent, true, 'the Welcome tells the second party its peer is here');
      await aSeesPeer;
      assert.equal(a.peerPresent, true);

      await exchange(a, b, transport);
      const many = Array.from({ length: 50 }, (_, i) => `m${i}`);
      await Promise.all(many.map((m) => sendText(a, m)));
      for (const m of many) assert.equal(await nextText(b), m, 'in order');

      const aSeesLeave = presence(a, false);
      await b.close();
      await aSeesLeave;
      assert.equal(a.peerPresent, false);
    });
  }

  test('a gRPC party and a WebSocket party share a session', async () => {
    const s = sid();
    const a = await dial(server, { sid: s, transport: 'grpc' });
    const b = await dial(server, { sid: flipSid(s), transport: 'websocket' });
    await exchange(a, b, 'mixed');
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: SessionNotFound with attach 'existing', SessionInUse on a taken SID`, async () => {
      const missing = await connect({ server: server.address, insecure: true, sid: sid(), attach: 'existing', transport }).then(
        () => assert.fail('attached to a missing session'),
        (err: unknown) => err,
      );
      assert.ok(missing instanceof SessionNotFound, String(missing));
      assert.equal(missing.code, 5);
      assert.match(missing.message, /stream not found/);

      const s = sid();
      await dial(server, { sid: s, transport });
      const taken = await connect({ server: server.address, insecure: true, sid: s, transport }).then(
        () => assert.fail('attached to a taken SID'),
        (err: unknown) => err,
      );
      assert.ok(taken instanceof SessionInUse, String(taken));
      assert.equal(taken.code, 8);
      assert.match(taken.message, /stream occupied/);
    });
  }

  test('a pairing phrase puts the app and the node on opposite SIDs', async () => {
    // Injected word list: the derivation itself is covered by test/unit/client-phrase.test.ts.
    const wordlist = Array.from({ length: 2048 }, (_, i) => `w${i}`);
    const phrase = Array.from({ length: 10 }, () => `w${randomBytes(2).readUInt16BE() % 2048}`).join(' ');
    const node = await dial(server, { phrase, wordlist, role: 'node' });
    const app = await dial(server, { phrase, wordlist, role: 'app', transport: 'websocket' });
    assert.equal(app.peerPresent, true);
    await exchange(app, node, 'phrase');
  });

  test('close() ends the iterator and later sends reject with ConnectionLost', async () => {
    const conn = await dial(server, { sid: sid() });
    const it = conn[Symbol.asyncIterator]();
    const pending = it.next();
    await conn.close();
    assert.deepEqual(await bounded(pending, 'iterator end'), { value: undefined, done: true });
    await assert.rejects(conn.send(new Uint8Array(1)), ConnectionLost);
  });
});

describe('client: fallback to v1 on a v1-only relay', () => {
  let server: RunningServer;
  before(async () => {
    server = await startServer({ env: V1_ONLY });
    servers.push(server);
    forgetNegotiatedProtocols();
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: auto falls back; the node creates the boxes, the app waits for them`, async () => {
      const s = sid();
      // The app first: in v1 it retries "stream not found" until the node has created the boxes.
      const appConnecting = connect({ server: server.address, insecure: true, sid: flipSid(s), role: 'app', transport });
      const node = await dial(server, { sid: s, role: 'node', transport });
      const app = await bounded(appConnecting, 'the app to attach');
      open.push(app);
      assert.equal(node.version, 1);
      assert.equal(app.version, 1);
      assert.equal(app.peerPresent, false, 'v1 cannot tell presence');
      await exchange(node, app, `v1 ${transport}`);
    });
  }

  test('a v1 gRPC node and a v1 WebSocket app talk', async () => {
    const s = sid();
    const node = await dial(server, { sid: s, role: 'node', transport: 'grpc', protocol: 'v1' });
    const app = await dial(server, { sid: flipSid(s), role: 'app', transport: 'websocket' });
    await exchange(app, node, 'v1 mixed');
  });

  test("v1 attach 'existing' reports SessionNotFound instead of waiting", async () => {
    for (const transport of TRANSPORTS) {
      const err = await connect({ server: server.address, insecure: true, sid: sid(), attach: 'existing', transport }).catch((e: unknown) => e);
      assert.ok(err instanceof SessionNotFound, `${transport}: ${String(err)}`);
    }
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: protocol 'v2' is refused with UnsupportedVersion`, async () => {
      forgetNegotiatedProtocols();
      const err = await connect({ server: server.address, insecure: true, sid: sid(), protocol: 'v2', transport }).catch((e: unknown) => e);
      assert.ok(err instanceof UnsupportedVersion, String(err));
      assert.deepEqual(err.supportedVersions, [1]);
    });
  }
});

describe('client: reconnect', () => {
  test('both parties come back after the relay restarts on the same port and keep exchanging', { timeout: 90_000 }, async () => {
    const first = await startServer();
    servers.push(first);
    const s = sid();
    const node = await dial(first, { sid: s, role: 'node', transport: 'grpc' });
    const app = await dial(first, { sid: flipSid(s), role: 'app', transport: 'websocket' });
    await exchange(node, app, 'before');

    const nodeLost = event(node, 'reconnecting');
    const appLost = event(app, 'reconnecting');
    const nodeBack = event(node, 'reconnected', RECONNECT_TIMEOUT_MS);
    const appBack = event(app, 'reconnected', RECONNECT_TIMEOUT_MS);
    await first.stop();
    await Promise.all([nodeLost, appLost]);
    assert.equal(node.peerPresent, false);

    const second = await startServer({ extraArgs: ['--listen', `127.0.0.1:${first.port}`] });
    servers.push(second);
    assert.equal(second.port, first.port);
    await Promise.all([nodeBack, appBack]);
    await exchange(node, app, 'after');
    assert.equal(node.version, 2);
  });

  test('reconnect: false surfaces the loss to the iterator and to send', async () => {
    const server = await startServer();
    servers.push(server);
    const conn = await dial(server, { sid: sid(), reconnect: false, transport: 'websocket' });
    const it = conn[Symbol.asyncIterator]();
    // Settled into a value at once: the rejection comes while the server stops, before anyone awaits it.
    const ended = it.next().then(
      () => null,
      (err: unknown) => err,
    );
    await server.stop();
    const err = await bounded(ended, 'the iterator to fail');
    assert.ok(err instanceof ConnectionLost && /shutting down|closed/.test(err.message), String(err));
    await assert.rejects(conn.send(new Uint8Array(1)), ConnectionLost);
  });
});
