/**
 * The edges of the client library against real `hashmail serve` processes
 * (issue 11, points 2, 3 and 7): v2 message limits announced in the Welcome
 * and enforced by the client; connect deadlines against a black-hole server;
 * liveness pings that notice a SIGSTOPped relay (client side) and a silent
 * client (relay side); abort, break and the public error classes. Every wait
 * is an awaited event bounded by withTimeout; the only timing assertions are
 * the deadlines under test, configured short.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import { after, afterEach, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { WebSocket } from 'ws';
import {
  CertificateMismatch,
  connect,
  ConnectionLost,
  ConnectTimeout,
  MessageTooLarge,
  type ConnectOptions,
  type MailboxConnection,
  type TransportName,
} from '../../src/client/index.js';
import { flipSid } from '../../src/client/bytes.js';
import { Attach, encodeHello } from '../../src/wire/v2-frames.js';
import { withTimeout } from '../helpers/async-queue.js';
import { grpcParty, wsParty } from '../helpers/v2-peers.js';
import { startServer, type RunningServer } from '../helpers/server.js';

const STEP_TIMEOUT_MS = 10_000;
const TRANSPORTS: TransportName[] = ['grpc', 'websocket'];
const KiB = 1024;
/** Deadlines under test, short so the suite stays quick; the margin absorbs a loaded machine. */
const CONNECT_TIMEOUT_MS = 500;
const PING_INTERVAL_MS = 200;
const PING_TIMEOUT_MS = 300;
const DEADLINE_MARGIN_MS = 3_000;

const cleanups: (() => Promise<unknown> | void)[] = [];
let open: MailboxConnection[] = [];

afterEach(async () => {
  await Promise.all(open.map((c) => c.close()));
  open = [];
});

after(async () => {
  for (const fn of cleanups.reverse()) await fn();
});

async function server(config?: Record<string, unknown>): Promise<RunningServer> {
  const s = await startServer(config ? { config } : {});
  cleanups.push(() => {
    // A test that failed midway may leave it stopped: SIGCONT first, so SIGTERM is acted on.
    s.process.kill('SIGCONT');
    return s.stop();
  });
  return s;
}

async function dial(address: string, options: Omit<ConnectOptions, 'server'>): Promise<MailboxConnection> {
  const conn = await withTimeout(connect({ server: address, insecure: true, ...options }), STEP_TIMEOUT_MS, 'connect');
  open.push(conn);
  return conn;
}

const sid = (): Uint8Array => new Uint8Array(randomBytes(64));

async function next(conn: MailboxConnection): Promise<Uint8Array> {
  const r = await withTimeout(conn[Symbol.asyncIterator]().next(), STEP_TIMEOUT_MS, 'a message');
  assert.ok(!r.done, 'iterator ended');
  return r.value;
}

function nextEvent<K extends 'presence' | 'reconnecting' | 'reconnected' | 'close'>(conn: MailboxConnection, name: K, ms = STEP_TIMEOUT_MS): Promise<unknown> {
  return withTimeout(new Promise((resolve) => conn.once(name, (...args: unknown[]) => resolve(args[0]))), ms, name);
}

/** A TCP server that accepts connections and never answers (a hung host, a half-dead load balancer). */
async function blackHole(): Promise<string> {
  const sockets = new Set<net.Socket>();
  const hole = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => hole.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        hole.close(() => resolve());
      }),
  );
  return `127.0.0.1:${(hole.address() as net.AddressInfo).port}`;
}

/** A TCP proxy to `target` that can be frozen: every byte in both directions stops, sockets stay open (a client whose network died). */
async function freezableProxy(target: RunningServer): Promise<{ address: string; freeze(): void }> {
  const pairs: [net.Socket, net.Socket][] = [];
  const proxy = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        for (const [a, b] of pairs) {
          a.destroy();
          b.destroy();
        }
        proxy.close(() => resolve());
      }),
  );
  return {
    address: `127.0.0.1:${(proxy.address() as net.AddressInfo).port}`,
    freeze() {
      for (const [a, b] of pairs) {
        a.unpipe(b);
        b.unpipe(a);
        a.pause();
        b.pause();
      }
    },
  };
}

describe('v2 message limits', () => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: the Welcome announces v2.maxMessageBytes; an oversize send rejects at once with MessageTooLarge and the connection carries on`, async () => {
      const relay = await server();
      const s = sid();
      const a = await dial(relay.address, { sid: s, transport });
      const b = await dial(relay.address, { sid: flipSid(s), transport });
      assert.equal(a.maxMessageBytes, 64 * KiB, 'the default limit, announced');
      let reconnects = 0;
      a.on('reconnecting', () => reconnects++);

      const err = await a.send(new Uint8Array(64 * KiB + 1)).then(
        () => assert.fail('an oversize send resolved'),
        (e: unknown) => e,
      );
      assert.ok(err instanceof MessageTooLarge, `MessageTooLarge, got ${String(err)}`);
      assert.equal(err.limit, 64 * KiB);
      assert.equal(err.size, 64 * KiB + 1);
      assert.match(err.message, /65536/);

      // Nothing was lost and nothing was torn down: the largest payload and the next message arrive, in order.
      await a.send(new Uint8Array(64 * KiB).fill(1));
      await a.send(new TextEncoder().encode('after'));
      assert.equal((await next(b)).length, 64 * KiB);
      assert.equal(new TextDecoder().decode(await next(b)), 'after');
      assert.equal(reconnects, 0, 'no reconnect');
    });
  }

  test('a configured limit is what the client enforces (both transports)', async () => {
    const relay = await server({ v2: { maxMessageBytes: 1000 } });
    for (const transport of TRANSPORTS) {
      const conn = await dial(relay.address, { sid: sid(), transport });
      assert.equal(conn.maxMessageBytes, 1000, transport);
      await assert.rejects(conn.send(new Uint8Array(1001)), (e: unknown) => e instanceof MessageTooLarge && e.limit === 1000 && e.size === 1001);
      await conn.send(new Uint8Array(1000));
    }
  });
});

describe('dead relays are noticed', () => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: connect to a server that accepts TCP and never answers rejects with ConnectTimeout within connectTimeoutMs`, async () => {
      const address = await blackHole();
      const started = Date.now();
      const err = await withTimeout(
        connect({ server: address, insecure: true, sid: sid(), transport, connectTimeoutMs: CONNECT_TIMEOUT_MS }).then(
          () => assert.fail('connected to a black hole'),
          (e: unknown) => e,
        ),
        STEP_TIMEOUT_MS,
        'connect to give up',
      );
      const elapsed = Date.now() - started;
      assert.ok(err instanceof ConnectTimeout, `ConnectTimeout, got ${String(err)}`);
      assert.ok(err instanceof ConnectionLost, 'a ConnectTimeout is a ConnectionLost (retried on reconnects)');
      assert.ok(elapsed >= CONNECT_TIMEOUT_MS - 50 && elapsed < CONNECT_TIMEOUT_MS + DEADLINE_MARGIN_MS, `gave up after ${elapsed} ms`);
    });

    test(`${transport}: a SIGSTOPped relay is noticed within pingIntervalMs + pingTimeoutMs, and the connection reconnects once it runs again`, async () => {
      const relay = await server();
      const s = sid();
      const options = { transport, pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS, connectTimeoutMs: CONNECT_TIMEOUT_MS };
      const a = await dial(relay.address, { ...options, sid: s });
      const b = await dial(relay.address, { ...options, sid: flipSid(s) });
      const lost = nextEvent(a, 'reconnecting', PING_INTERVAL_MS + PING_TIMEOUT_MS + DEADLINE_MARGIN_MS);
      const started = Date.now();
      relay.process.kill('SIGSTOP');
      try {
        const info = (await lost) as { error: Error };
        assert.ok(info.error instanceof ConnectionLost, `lost with ${String(info.error)}`);
        console.log(`${transport}: frozen relay noticed after ${Date.now() - started} ms`);
      } finally {
        relay.process.kill('SIGCONT');
      }
      // What a lost relay always meant: reconnect (attach existing), and the session goes on.
      await nextEvent(a, 'reconnected', 30_000);
      await a.send(new TextEncoder().encode('after the freeze'));
      let text = '';
      for (let i = 0; i < 10 && text !== 'after the freeze'; i++) text = new TextDecoder().decode(await next(b));
      assert.equal(text, 'after the freeze');
    });

    test(`${transport}: the relay notices a client whose network went silent and frees its side (the peer sees it leave)`, async () => {
      const relay = await server({ v2: { pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS }, grpc: { keepaliveTimeMs: 1000, keepaliveTimeoutMs: 1000 } });
      const proxy = await freezableProxy(relay);
      const s = sid();
      // A raw party (no lookup, no pings of its own) through the proxy: only the relay can notice it went silent.
      const silent = transport === 'grpc' ? grpcParty(proxy.address) : await wsParty(Number(proxy.address.split(':')[1]));
      cleanups.push(() => silent.close().catch(() => undefined));
      await silent.hello({ sid: s });
      const peer = await dial(relay.address, { sid: flipSid(s), transport });
      assert.equal(peer.peerPresent, true);
      const gone = nextEvent(peer, 'presence', 2_000 + 1_000 + DEADLINE_MARGIN_MS);
      const started = Date.now();
      proxy.freeze();
      assert.equal(await gone, false, 'the peer sees the silent party leave');
      console.log(`${transport}: silent client dropped by the relay after ${Date.now() - started} ms`);
      // Its slots are free: the same SID attaches at once (no "stream occupied").
      const again = await dial(relay.address, { sid: s, transport, attach: 'existing' });
      assert.equal(again.peerPresent, true);
    });
  }

  test('websocket: a client that pings is never pinged by the relay (its ping is life); once it stops, the relay pings it', async () => {
    // Relay interval 1 s (jittered 0.8-1.2 s); the client pings ten times as often, so only a stall of 0.7 s would let a relay ping through.
    const relayIntervalMs = 1000;
    const clientPingEveryMs = relayIntervalMs / 10;
    const clientPings = 30;
    const relay = await server({ v2: { pingIntervalMs: relayIntervalMs, pingTimeoutMs: 5000 } });
    const ws = new WebSocket(`ws://${relay.address}/v2/mailbox`, 'hashmail.v2');
    cleanups.push(() => ws.terminate());
    await withTimeout(once(ws, 'open'), STEP_TIMEOUT_MS, 'v2 socket open');
    // Pings are life once the party said Hello (before it they are not: next test).
    const welcome = once(ws, 'message');
    ws.send(encodeHello({ minVersion: 2, maxVersion: 2, sid: sid(), attach: Attach.Create }));
    await withTimeout(welcome, STEP_TIMEOUT_MS, 'Welcome');
    let relayPings = 0;
    ws.on('ping', () => relayPings++);
    for (let i = 0; i < clientPings; i++) {
      const pong = once(ws, 'pong');
      ws.ping();
      await withTimeout(pong, STEP_TIMEOUT_MS, 'pong');
      await delay(clientPingEveryMs);
    }
    assert.equal(relayPings, 0, `the relay pinged a client that pinged it every ${clientPingEveryMs} ms for ${clientPings * clientPingEveryMs} ms`);
    await withTimeout(once(ws, 'ping'), relayIntervalMs * 2 + DEADLINE_MARGIN_MS, 'the relay pings a client gone quiet');
  });
});

describe('a v2 WebSocket that never says Hello', () => {
  test('is dropped as a silent one is, however faithfully it answers pings', async () => {
    const relay = await server({ v2: { pingIntervalMs: PING_INTERVAL_MS, pingTimeoutMs: PING_TIMEOUT_MS } });
    // ws answers every ping with a pong by itself; this client also pings, and never sends a frame.
    const ws = new WebSocket(`ws://${relay.address}/v2/mailbox`, 'hashmail.v2');
    cleanups.push(() => ws.terminate());
    await withTimeout(once(ws, 'open'), STEP_TIMEOUT_MS, 'v2 socket open');
    const pinger = setInterval(() => ws.ping(), PING_INTERVAL_MS / 4);
    try {
      const started = Date.now();
      await withTimeout(once(ws, 'close'), PING_INTERVAL_MS * 2 + PING_TIMEOUT_MS + DEADLINE_MARGIN_MS, 'the relay to drop the socket');
      console.log(`a socket without Hello dropped after ${Date.now() - started} ms`);
    } finally {
      clearInterval(pinger);
    }
  });
});

describe('client API: TLS trust (ca, certificateSha256)', () => {
  /** The TLS relay's certificate as it logged it at start, and its PEM file. */
  async function tlsRelay(): Promise<{ relay: RunningServer; sha256: string; pem: string }> {
    const relay = await startServer({ insecure: false });
    cleanups.push(() => relay.stop());
    const line = relay.logs.find((l) => l.msg === 'generated self-signed TLS certificate' || l.msg === 'TLS certificate loaded');
    assert.ok(line && typeof line.sha256 === 'string', 'the server logs its certificate fingerprint at start');
    return { relay, sha256: line.sha256, pem: readFileSync(String(line.certificate), 'utf8') };
  }

  test('a pinned fingerprint (as the server logs it) is trusted exactly; another is CertificateMismatch; the certificate as ca works too', async () => {
    const { relay, sha256, pem } = await tlsRelay();
    const wrong = sha256.replace(/^../, sha256.startsWith('00') ? '11' : '00');
    for (const transport of TRANSPORTS) {
      const s = sid();
      const a = await withTimeout(connect({ server: relay.address, sid: s, transport, certificateSha256: sha256 }), STEP_TIMEOUT_MS, 'pinned connect');
      open.push(a);
      // Colons and case do not matter.
      const b = await withTimeout(connect({ server: relay.address, sid: flipSid(s), transport, certificateSha256: sha256.replace(/:/g, '').toLowerCase() }), STEP_TIMEOUT_MS, 'pinned connect');
      open.push(b);
      await a.send(new TextEncoder().encode('pinned'));
      assert.equal(new TextDecoder().decode(await next(b)), 'pinned', transport);

      await assert.rejects(connect({ server: relay.address, sid: sid(), transport, certificateSha256: wrong, reconnect: false }), CertificateMismatch, transport);
      const viaCa = await withTimeout(connect({ server: relay.address, sid: sid(), transport, ca: pem }), STEP_TIMEOUT_MS, 'connect with ca');
      open.push(viaCa);
      // Without either, the self-signed certificate is refused (the system roots do not know it).
      await assert.rejects(connect({ server: relay.address, sid: sid(), transport, reconnect: false, connectTimeoutMs: 5_000 }), ConnectionLost, transport);
    }
    await assert.rejects(connect({ server: relay.address, sid: sid(), certificateSha256: 'abc' }), TypeError);
    await assert.rejects(connect({ server: relay.address, sid: sid(), certificateSha256: sha256, tlsSkipVerify: true }), TypeError);
  });
});

describe('client API', () => {
  test('aborting a pending connect rejects with the signal\'s reason (an AbortError)', async () => {
    const address = await blackHole();
    for (const transport of TRANSPORTS) {
      const controller = new AbortController();
      const pending = connect({ server: address, insecure: true, sid: sid(), transport, signal: controller.signal });
      controller.abort();
      const err = await withTimeout(pending.then(() => assert.fail('connected'), (e: unknown) => e), STEP_TIMEOUT_MS, 'abort');
      assert.equal(err, controller.signal.reason, transport);
      assert.equal((err as Error).name, 'AbortError');
    }
  });

  for (const transport of TRANSPORTS) {
    test(`${transport}: break out of for-await closes the connection`, async () => {
      const relay = await server();
      const s = sid();
      const a = await dial(relay.address, { sid: s, transport });
      const b = await dial(relay.address, { sid: flipSid(s), transport });
      const closed = nextEvent(a, 'close');
      const peerLeft = nextEvent(b, 'presence');
      await b.send(new TextEncoder().encode('one'));
      for await (const msg of a) {
        assert.equal(new TextDecoder().decode(msg), 'one');
        break;
      }
      assert.equal(await closed, null, "'close' with null: closed by us");
      assert.equal(await peerLeft, false, 'the relay saw the stream end');
      await assert.rejects(a.send(new Uint8Array(1)), ConnectionLost);
    });
  }
});

describe('many connections in one process', () => {
  test('grpc: more parties to one relay than a connection may carry all attach (the client opens more connections)', async () => {
    // The relay refuses a connection's call past limits.maxStreamsPerConnection; the client learns that limit from
    // the refusal and tries the call again on another connection, so no party fails on it.
    const streamLimit = 100;
    const relay = await server({ limits: { maxStreamsPerConnection: streamLimit } });
    const parties = Math.round(streamLimit * 2.5);
    const sids = Array.from({ length: parties }, sid);
    const conns = await Promise.all(sids.map((s) => dial(relay.address, { sid: s, role: 'node', transport: 'grpc', protocol: 'v2' })));
    assert.equal(await relay.metric('hashmail_v2_parties{transport="grpc"}'), parties);
    // The last one still relays: its peer attaches and hears from it.
    const last = await dial(relay.address, { sid: flipSid(sids[parties - 1]), role: 'app', transport: 'grpc', protocol: 'v2' });
    await conns[parties - 1].send(new TextEncoder().encode('past the limit'));
    assert.equal(new TextDecoder().decode(await next(last)), 'past the limit');
  });
});
