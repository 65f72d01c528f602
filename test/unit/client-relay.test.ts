/**
 * How a v2 party finds its relay (src/client/relay-finder.ts, connection.ts,
 * relay-lookup.ts, wire/route.ts), with fake lookups and link openers: the
 * route equals the directory's, lookup answers, redirects (bounded hops,
 * then a fresh lookup), a fresh lookup after a lost link, a dropped link
 * resumed at its relay first, the fallback to a
 * direct dial where lookups are not served (remembered), SessionNotFound,
 * server lists.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, test } from 'node:test';
import { MailboxConnection, MAX_LOOKUPS_PER_ATTEMPT, MAX_REDIRECT_HOPS, type DialInfo, type ReconnectedInfo, type ReconnectingInfo } from '../../src/client/connection.js';
import { ConnectionLost, HashmailClientError, isRetryable, LinkDropped, RelayMoved, RelayUnreachable, SessionNotFound, StatusCode } from '../../src/client/errors.js';
import type { Link, LinkHandlers, LinkRequest, TransportOpeners } from '../../src/client/link.js';
import { forgetNegotiatedProtocols } from '../../src/client/negotiate.js';
import { parseServers, resolveOptions, type ConnectOptions } from '../../src/client/options.js';
import { forgetLookupSupport } from '../../src/client/relay-finder.js';
import { httpLookupAnswer, LookupUnreachable, type LookupAnswer, type LookupRequest } from '../../src/client/relay-lookup.js';
import { routeOfSid } from '../../src/directory/route.js';
import { base64url, sessionRoute } from '../../src/wire/route.js';

const STEP_TIMEOUT_MS = 5_000;

afterEach(() => {
  forgetLookupSupport();
  forgetNegotiatedProtocols();
});

describe('client: route', () => {
  test('sessionRoute (WebCrypto) equals the directory routeOfSid for both SIDs of a pair', async () => {
    for (let i = 0; i < 50; i++) {
      const sid = randomBytes(64);
      const peer = Buffer.from(sid);
      peer[63] ^= 1;
      const route = await sessionRoute(sid);
      assert.equal(route, routeOfSid(sid));
      assert.equal(await sessionRoute(peer), route);
    }
  });

  test('base64url matches Buffer base64url for every length remainder', () => {
    for (let n = 0; n < 40; n++) {
      const bytes = createHash('sha512').update(String(n)).digest().subarray(0, n);
      assert.equal(base64url(bytes), bytes.toString('base64url'));
    }
  });
});

describe('client: HTTP lookup answers', () => {
  test('200 owner, 404 ours = not placed, 404 / 405 of another server = not served, 503 retryable, 400 refused', () => {
    assert.deepEqual(httpLookupAnswer({ status: 200, body: '{"id":"r1","address":"10.0.0.1:8443"}' }), { kind: 'owner', id: 'r1', address: '10.0.0.1:8443' });
    assert.equal(httpLookupAnswer({ status: 404, body: '{"error":{"code":5,"message":"session not placed"}}' }).kind, 'not-placed');
    // Today's serve answers unknown paths so: not our error body.
    assert.equal(httpLookupAnswer({ status: 404, body: '{"code":5,"message":"Not Found","details":[]}' }).kind, 'not-served');
    assert.equal(httpLookupAnswer({ status: 404, body: '<html>' }).kind, 'not-served');
    assert.equal(httpLookupAnswer({ status: 405, body: '' }).kind, 'not-served');
    assert.throws(() => httpLookupAnswer({ status: 503, body: '{"error":{"code":14,"message":"directory unavailable"}}' }), (err: unknown) => err instanceof ConnectionLost && isRetryable(err) && err.message === 'directory unavailable');
    assert.throws(() => httpLookupAnswer({ status: 502, body: 'bad gateway' }), (err: unknown) => err instanceof ConnectionLost);
    assert.throws(() => httpLookupAnswer({ status: 400, body: '{"error":{"code":3,"message":"bad route"}}' }), (err: unknown) => err instanceof HashmailClientError && err.code === StatusCode.INVALID_ARGUMENT && !isRetryable(err));
  });
});

/** A scripted transport: the lookup and the v2 opener answer from the test's functions, and every call is recorded. */
class FakeCluster {
  lookups: LookupRequest[] = [];
  dials: string[] = [];
  links: { link: Link; handlers: LinkHandlers; relay: string }[] = [];
  lookup: (req: LookupRequest) => LookupAnswer | Error = () => ({ kind: 'not-served', why: 'fake' });
  dial: (relay: string, req: LinkRequest) => Error | null = () => null;

  openers(): TransportOpeners {
    return {
      lookup: async (req) => {
        this.lookups.push(req);
        const answer = this.lookup(req);
        if (answer instanceof Error) throw answer;
        return answer;
      },
      openV2: async (req, handlers) => {
        const relay = req.server.authority;
        this.dials.push(relay);
        const err = this.dial(relay, req);
        if (err) throw err;
        const link: Link = { version: 2, peerPresent: false, maxMessageBytes: 0, send: async () => undefined, pause: () => undefined, resume: () => undefined, close: async () => undefined };
        this.links.push({ link, handlers, relay });
        return link;
      },
      openV1: async () => {
        throw new HashmailClientError(StatusCode.INTERNAL, 'v1 not expected');
      },
    };
  }

  /** The current link breaks with `err`. */
  lose(err: HashmailClientError): void {
    const last = this.links.at(-1);
    assert.ok(last, 'no link to lose');
    last.handlers.closed(err);
  }
}

const openConns: MailboxConnection[] = [];
afterEach(async () => {
  await Promise.all(openConns.splice(0).map((c) => c.close()));
});

async function open(cluster: FakeCluster, options: Partial<ConnectOptions> = {}): Promise<MailboxConnection> {
  const resolved = await resolveOptions({ server: 'lookup.test:443', sid: randomBytes(64), protocol: 'v2', ...options }, 'grpc');
  const conn = await MailboxConnection.open(resolved, cluster.openers());
  openConns.push(conn);
  return conn;
}

function nextEvent<T>(conn: MailboxConnection, name: 'reconnected' | 'reconnecting' | 'close'): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no '${name}' within ${STEP_TIMEOUT_MS} ms`)), STEP_TIMEOUT_MS);
    conn.once(name, ((info: T) => {
      clearTimeout(timer);
      resolve(info);
    }) as never);
  });
}

describe('client: finding the relay', () => {
  test('dials the owner the lookup names, with the TLS setting of the configured server; route and create are asked', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'owner', id: 'r2', address: '10.0.0.2:9443' });
    let secure: boolean | undefined;
    cluster.dial = (_relay, req) => {
      secure = req.server.secure;
      return null;
    };
    const sid = randomBytes(64);
    const conn = await open(cluster, { sid });
    assert.equal(conn.relay, '10.0.0.2:9443');
    assert.deepEqual(cluster.dials, ['10.0.0.2:9443']);
    assert.equal(secure, true);
    assert.equal(cluster.lookups.length, 1);
    assert.equal(cluster.lookups[0].route, routeOfSid(sid));
    assert.equal(cluster.lookups[0].create, true);
    assert.equal(cluster.lookups[0].server.authority, 'lookup.test:443');
  });

  test("the dial names the owner's registration the lookup gave (id@startedAt), and none when the lookup gave none", async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'owner', id: 'r2', address: '10.0.0.2:9443', startedAt: 1_765_000_000_123 });
    const named: (string | undefined)[] = [];
    cluster.dial = (_relay, req) => {
      named.push(req.relayRegistration);
      return null;
    };
    await open(cluster);
    cluster.lookup = () => ({ kind: 'owner', id: 'r3', address: '10.0.0.3:9443' });
    await open(cluster);
    assert.deepEqual(named, ['r2@1765000000123', undefined]);
  });

  test("not placed with attach 'existing': SessionNotFound, nothing dialed", async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'not-placed', message: 'session not placed' });
    await assert.rejects(open(cluster, { attach: 'existing' }), SessionNotFound);
    assert.equal(cluster.lookups[0].create, false);
    assert.deepEqual(cluster.dials, []);
  });

  test('an instance without lookups is dialed directly, and not asked again (remembered per instance)', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'not-served', why: 'UNIMPLEMENTED' });
    const first = await open(cluster);
    assert.equal(first.relay, 'lookup.test:443');
    await open(cluster);
    assert.equal(cluster.lookups.length, 1);
    assert.deepEqual(cluster.dials, ['lookup.test:443', 'lookup.test:443']);
  });

  test('an instance that does not answer: the next one is asked; none answers: the first is dialed directly', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = (req) => (req.server.host === 'down.test' ? new LookupUnreachable('refused') : { kind: 'owner', id: 'r3', address: '10.0.0.3:443' });
    const conn = await open(cluster, { server: 'down.test:443, up.test:443' });
    assert.equal(conn.relay, '10.0.0.3:443');
    assert.deepEqual(cluster.lookups.map((l) => l.server.host), ['down.test', 'up.test']);

    const dark = new FakeCluster();
    dark.lookup = () => new LookupUnreachable('refused');
    const direct = await open(dark, { server: ['a.test:443', 'b.test:443'] });
    assert.equal(direct.relay, 'a.test:443');
  });

  test('an instance found unreachable is asked last for UNREACHABLE_DEMOTE_MS, by every connection of the process; once it answers, first again', async () => {
    const cluster = new FakeCluster();
    let downUp = false;
    cluster.lookup = (req) => (req.server.host === 'down.test' && !downUp ? new LookupUnreachable('refused') : { kind: 'owner', id: 'r3', address: '10.0.0.3:443' });
    const servers = 'down.test:443, up.test:443';
    await open(cluster, { server: servers });
    assert.deepEqual(cluster.lookups.map((l) => l.server.host), ['down.test', 'up.test']);
    cluster.lookups = [];
    // Another connection in the same process: the unreachable instance is not tried first.
    await open(cluster, { server: servers });
    assert.deepEqual(cluster.lookups.map((l) => l.server.host), ['up.test']);
    // Past the demotion (forgotten here, as after UNREACHABLE_DEMOTE_MS) it is first again; answering keeps it first.
    forgetLookupSupport();
    downUp = true;
    cluster.lookups = [];
    await open(cluster, { server: servers });
    await open(cluster, { server: servers });
    assert.deepEqual(cluster.lookups.map((l) => l.server.host), ['down.test', 'down.test']);
  });

  test('directory unavailable on every instance: a retryable ConnectionLost, nothing dialed', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => new ConnectionLost('directory unavailable');
    await assert.rejects(open(cluster, { server: 'a.test:443,b.test:443' }), (err: unknown) => err instanceof ConnectionLost && isRetryable(err));
    assert.equal(cluster.lookups.length, 2);
    assert.deepEqual(cluster.dials, []);
  });

  test('redirects are followed without a lookup, at most MAX_REDIRECT_HOPS in a row, then the route is looked up again', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'owner', id: 'r1', address: 'r1.test:443' });
    cluster.dial = (relay) => (relay === 'r1.test:443' ? new RelayMoved('session is served by another relay: r2.test:443', 'r2.test:443') : null);
    const conn = await open(cluster);
    assert.equal(conn.relay, 'r2.test:443');
    assert.deepEqual(cluster.dials, ['r1.test:443', 'r2.test:443']);
    assert.equal(cluster.lookups.length, 1);

    // Relays that keep pointing elsewhere: bounded, then the attempt fails retryably.
    const loop = new FakeCluster();
    let n = 0;
    loop.lookup = () => ({ kind: 'owner', id: 'x', address: 'x0.test:443' });
    loop.dial = () => new RelayMoved('moved', `x${++n}.test:443`);
    await assert.rejects(open(loop), (err: unknown) => err instanceof RelayMoved && isRetryable(err));
    assert.equal(loop.lookups.length, MAX_LOOKUPS_PER_ATTEMPT);
    assert.equal(loop.dials.length, MAX_LOOKUPS_PER_ATTEMPT * (MAX_REDIRECT_HOPS + 1));
  });

  test('a lost link: the next attempt looks the route up again (after a backoff) and dials the new owner', async () => {
    const cluster = new FakeCluster();
    let owner = 'r1.test:443';
    cluster.lookup = () => ({ kind: 'owner', id: 'r', address: owner });
    const conn = await open(cluster);
    assert.equal(conn.relay, 'r1.test:443');
    const dials: DialInfo[] = [];
    conn.on('dial', (info) => dials.push(info));
    const reconnecting = nextEvent<ReconnectingInfo>(conn, 'reconnecting');
    const reconnected = nextEvent<ReconnectedInfo>(conn, 'reconnected');
    owner = 'r2.test:443';
    cluster.lose(new ConnectionLost('relay lost its directory lease: look up the session again'));
    const r = await reconnecting;
    assert.equal(r.attempt, 1);
    assert.ok(r.delayMs >= 0 && r.delayMs <= 100, 'first wait within the first ceiling');
    const info = await reconnected;
    assert.equal(info.relay, 'r2.test:443');
    assert.equal(conn.relay, 'r2.test:443');
    assert.equal(cluster.lookups.length, 2);
    assert.equal(cluster.lookups[1].create, false, "an app resumes (attach 'existing'): its lookup does not place the session");
    assert.deepEqual(dials, [{ relay: 'r2.test:443', via: 'lookup', lookupServer: 'lookup.test:443' }]);
  });

  test('a dropped link (no word from the relay): the next attempt dials the same relay first, with no lookup', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'owner', id: 'r1', address: 'r1.test:443' });
    const conn = await open(cluster);
    const dials: DialInfo[] = [];
    conn.on('dial', (info) => dials.push(info));
    const reconnecting = nextEvent<ReconnectingInfo>(conn, 'reconnecting');
    const reconnected = nextEvent<ReconnectedInfo>(conn, 'reconnected');
    cluster.lose(new LinkDropped('websocket closed (1006)'));
    const r = await reconnecting;
    assert.ok(r.delayMs >= 0 && r.delayMs <= 100, 'a resume keeps the jittered first wait (a restarting relay is not stampeded)');
    assert.equal((await reconnected).relay, 'r1.test:443');
    assert.deepEqual(dials, [{ relay: 'r1.test:443', via: 'resume' }]);
    assert.equal(cluster.lookups.length, 1, 'no lookup: the relay still serves the session');
  });

  test('a dropped link whose relay is gone: the next attempt, at once, looks up, held while the answer would be that relay', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'owner', id: 'r1', address: 'r1.test:443' });
    const conn = await open(cluster);
    cluster.lookup = () => ({ kind: 'owner', id: 'r2', address: 'r2.test:443' });
    cluster.dial = (relay) => (relay === 'r1.test:443' ? new RelayUnreachable('connect ECONNREFUSED') : null);
    const waits: number[] = [];
    conn.on('reconnecting', (r) => waits.push(r.delayMs));
    const reconnected = nextEvent<ReconnectedInfo>(conn, 'reconnected');
    cluster.lose(new LinkDropped('Connection dropped'));
    const info = await reconnected;
    assert.equal(info.relay, 'r2.test:443');
    assert.equal(info.attempts, 2, 'the lookup is an attempt of its own (its own connectTimeoutMs)');
    assert.equal(waits[1], 0, 'no backoff before it');
    assert.deepEqual(cluster.dials, ['r1.test:443', 'r1.test:443', 'r2.test:443']);
    assert.equal(cluster.lookups.length, 2);
    assert.equal(cluster.lookups[1].wait?.unreachable, 'r1', 'held until the session leaves the relay that did not answer');
  });

  test('a dropped link whose relay restarted without the session: a lookup held until the session is placed again', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'owner', id: 'r1', address: 'r1.test:443' });
    const conn = await open(cluster, { attach: 'existing' });
    cluster.lookup = () => ({ kind: 'owner', id: 'r3', address: 'r3.test:443' });
    cluster.dial = (relay) => (relay === 'r1.test:443' ? new SessionNotFound(StatusCode.NOT_FOUND, 'stream not found') : null);
    const reconnected = nextEvent<ReconnectedInfo>(conn, 'reconnected');
    cluster.lose(new LinkDropped('websocket closed (1006)'));
    assert.equal((await reconnected).relay, 'r3.test:443');
    assert.equal(cluster.lookups.length, 2);
    assert.equal(cluster.lookups[1].wait?.unreachable, '', 'held while "not placed"');
  });

  test('a link ended with a relay address: the next attempt dials it at once (no wait, no lookup)', async () => {
    const cluster = new FakeCluster();
    cluster.lookup = () => ({ kind: 'owner', id: 'r1', address: 'r1.test:443' });
    const conn = await open(cluster);
    const reconnecting = nextEvent<ReconnectingInfo>(conn, 'reconnecting');
    const reconnected = nextEvent<ReconnectedInfo>(conn, 'reconnected');
    cluster.lose(new RelayMoved('session is served by another relay: r9.test:443', 'r9.test:443'));
    assert.equal((await reconnecting).delayMs, 0);
    assert.equal((await reconnected).relay, 'r9.test:443');
    assert.equal(cluster.lookups.length, 1);
  });

  test('server lists: an array or a comma-separated string; one TLS setting', () => {
    assert.deepEqual(
      parseServers('a.test:1, b.test:2', true).map((s) => s.authority),
      ['a.test:1', 'b.test:2'],
    );
    assert.deepEqual(
      parseServers(['wss://a.test', 'wss://b.test:444'], undefined).map((s) => [s.authority, s.secure]),
      [
        ['a.test:443', true],
        ['b.test:444', true],
      ],
    );
    assert.throws(() => parseServers(['ws://a.test', 'wss://b.test'], undefined), /same TLS setting/);
    assert.throws(() => parseServers([], undefined), /server is required/);
  });
});
