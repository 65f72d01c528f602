/**
 * Protocol v2 (docs/protocol-v2.md) against a real `hashmail serve`, over
 * gRPC and over WebSocket with raw parties: hello and version negotiation,
 * errors, data both ways, presence, occupied / not found, 1,000 messages of
 * random sizes each way, size limit and shutdown. Every wait is bounded and
 * event-driven; no test asserts timing.
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { withTimeout } from '../helpers/async-queue.js';
import { peerSid, randomSid } from '../helpers/grpc-v1.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import {
  closeParties,
  dialWsV2,
  grpcParty,
  HelloRefused,
  V2_SUBPROTOCOL,
  wsParty,
  type HelloOptions,
  type TransportKind,
  type V2Party,
  type Welcome,
  type WsV2Party,
} from '../helpers/v2-peers.js';
import { checkMessage, makeMessage, randomSizes, StreamDigest } from '../helpers/v2-stream-check.js';
import { Attach, encodeDataFrame, encodeHello, PROTOCOL_V2 } from '../../src/wire/v2-frames.js';

const KiB = 1024;
/** v2.maxMessageBytes default (doc: 64 KiB): the largest payload that must pass. */
const MAX_MESSAGE_BYTES = 64 * KiB;
/** Messages each way in the bulk test. */
const BULK_MESSAGES = 1_000;
const BULK_TEST_TIMEOUT_MS = 120_000;
/** server.shutdownGraceMs (5 s default) plus margin. */
const SHUTDOWN_EXIT_WAIT_MS = 15_000;

const CODE = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  UNAVAILABLE: 14,
} as const;

const TRANSPORTS: readonly TransportKind[] = ['grpc', 'ws'];

/** Sends `count` self-checking messages of `sizes` from `from`, and checks them arriving at `to`, in order. */
async function stream(from: V2Party, to: V2Party, sizes: readonly number[], what: string): Promise<void> {
  const sent = new StreamDigest();
  const received = new StreamDigest();
  const send = async (): Promise<void> => {
    for (let i = 0; i < sizes.length; i++) {
      const msg = makeMessage(i, sizes[i]);
      await from.send(msg);
      sent.add(msg);
    }
  };
  const receive = async (): Promise<void> => {
    for (let i = 0; i < sizes.length; i++) {
      const msg = await to.nextData();
      checkMessage(msg, i, sizes[i], what);
      received.add(msg);
    }
  };
  await Promise.all([send(), receive()]);
  assert.equal(received.messages, sizes.length, `${what}: messages`);
  assert.equal(received.bytes, sent.bytes, `${what}: bytes`);
  assert.equal(received.digest(), sent.digest(), `${what}: SHA-256 of the whole stream`);
}

describe('protocol v2', () => {
  let server: RunningServer;
  const open = new Set<V2Party>();

  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await server?.stop();
  });
  afterEach(async () => {
    await closeParties(open);
    open.clear();
  });

  async function party(kind: TransportKind): Promise<V2Party> {
    const p = kind === 'grpc' ? grpcParty(server.address) : await wsParty(server.port);
    open.add(p);
    return p;
  }

  async function attached(kind: TransportKind, opts: HelloOptions): Promise<{ p: V2Party; welcome: Welcome }> {
    const p = await party(kind);
    const welcome = await p.hello(opts);
    return { p, welcome };
  }

  for (const kind of TRANSPORTS) {
    describe(`over ${kind}`, () => {
      test('hello [2,2]: Welcome{version 2, peer_present false} on a fresh session', async () => {
        const { welcome } = await attached(kind, { sid: randomSid(), minVersion: 2, maxVersion: 2 });
        assert.deepEqual(welcome, { version: 2, peerPresent: false, maxMessageBytes: MAX_MESSAGE_BYTES });
      });

      test('hello [1,3]: the highest common version, 2', async () => {
        const { welcome } = await attached(kind, { sid: randomSid(), minVersion: 1, maxVersion: 3 });
        assert.equal(welcome.version, 2);
      });

      test('min_version 0 means max_version: [0,2] is version 2', async () => {
        const { welcome } = await attached(kind, { sid: randomSid(), minVersion: 0, maxVersion: 2 });
        assert.equal(welcome.version, 2);
      });

      test('min_version 0 means max_version: [0,3] has no common version', async () => {
        const p = await party(kind);
        await p.sendHello({ sid: randomSid(), minVersion: 0, maxVersion: 3 });
        const { error } = await p.expectError(CODE.FAILED_PRECONDITION, /unsupported protocol version/);
        assert.match(error.message, /3\.\.3/, 'the message states the range as understood');
        assert.deepEqual(error.supportedVersions, [2]);
      });

      test('no common version [3,4]: FAILED_PRECONDITION, supported_versions [2]', async () => {
        const p = await party(kind);
        await p.sendHello({ sid: randomSid(), minVersion: 3, maxVersion: 4 });
        const { error } = await p.expectError(CODE.FAILED_PRECONDITION, /unsupported protocol version/);
        assert.equal(error.message, 'unsupported protocol version: client speaks 3..4, relay supports 2');
        assert.deepEqual(error.supportedVersions, [2]);
      });

      test('max_version 0: INVALID_ARGUMENT', async () => {
        const p = await party(kind);
        await p.sendHello({ sid: randomSid(), minVersion: 2, maxVersion: 0 });
        await p.expectError(CODE.INVALID_ARGUMENT, /./);
      });

      test('first frame not Hello: INVALID_ARGUMENT', async () => {
        const p = await party(kind);
        await p.sendRaw(encodeDataFrame(Buffer.from('hello?')));
        await p.expectError(CODE.INVALID_ARGUMENT, /./);
      });

      test('a second Hello: INVALID_ARGUMENT', async () => {
        const { p } = await attached(kind, { sid: randomSid() });
        await p.sendHello({ sid: randomSid() });
        await p.expectError(CODE.INVALID_ARGUMENT, /./);
      });

      test('a malformed frame: INVALID_ARGUMENT', async () => {
        const p = await party(kind);
        // Field 1 (hello), length 100, then 2 bytes: the length runs past the end.
        await p.sendRaw(Uint8Array.from([0x0a, 100, 0x08, 0x02]));
        await p.expectError(CODE.INVALID_ARGUMENT, /./);
      });

      test('a SID of 63 bytes: INVALID_ARGUMENT', async () => {
        const p = await party(kind);
        await p.sendHello({ sid: randomSid().subarray(0, 63) });
        await p.expectError(CODE.INVALID_ARGUMENT, /./);
      });

      test('data both ways, empty payload included', async () => {
        const sid = randomSid();
        const { p: a } = await attached(kind, { sid });
        const { p: b, welcome } = await attached(kind, { sid: peerSid(sid) });
        assert.equal(welcome.peerPresent, true, 'B finds A reading');
        await a.expectPresence(true);
        const msgs = [Buffer.from('from one side'), Buffer.alloc(0), Buffer.from([0, 1, 2, 255])];
        for (const m of msgs) await a.send(m);
        for (const m of msgs) await b.send(Buffer.concat([m, Buffer.from('!')]));
        for (const m of msgs) assert.deepEqual(await b.nextData(), m);
        for (const m of msgs) assert.deepEqual(await a.nextData(), Buffer.concat([m, Buffer.from('!')]));
      });

      test('presence: Welcome{false}, Presence{true} when the peer attaches, Presence{false} when it leaves', async () => {
        const sid = randomSid();
        const { p: a, welcome } = await attached(kind, { sid });
        assert.deepEqual(welcome, { version: PROTOCOL_V2, peerPresent: false, maxMessageBytes: MAX_MESSAGE_BYTES });

        const { p: b, welcome: bWelcome } = await attached(kind, { sid: peerSid(sid) });
        assert.equal(bWelcome.peerPresent, true);
        await a.expectPresence(true);
        // A client ends by closing (gRPC: half-close); the relay frees both slots at once.
        await b.close();
        await a.expectPresence(false);

        const { p: c, welcome: cWelcome } = await attached(kind, { sid: peerSid(sid), attach: Attach.Existing });
        assert.equal(cWelcome.peerPresent, true);
        await a.expectPresence(true);
        // A peer that vanishes (cancel / TCP reset) leaves too.
        c.abort();
        await a.expectPresence(false);
      });

      test('a second party on the same SID: RESOURCE_EXHAUSTED "stream occupied"; the first keeps working', async () => {
        const sid = randomSid();
        const { p: a } = await attached(kind, { sid });
        const second = await party(kind);
        await second.sendHello({ sid });
        await second.expectError(CODE.RESOURCE_EXHAUSTED, /stream occupied/);

        const { p: b } = await attached(kind, { sid: peerSid(sid) });
        await a.expectPresence(true);
        await b.send(Buffer.from('still here'));
        assert.equal((await a.nextData()).toString(), 'still here');
      });

      test('ATTACH_EXISTING on a fresh SID: NOT_FOUND "stream not found"', async () => {
        const p = await party(kind);
        await p.sendHello({ sid: randomSid(), attach: Attach.Existing });
        await p.expectError(CODE.NOT_FOUND, /stream not found/);
      });

      test('peer not online yet: ATTACH_CREATE answers Welcome{false}; ATTACH_EXISTING then finds the session', async () => {
        const sid = randomSid();
        const { p: a, welcome } = await attached(kind, { sid, attach: Attach.Create });
        assert.deepEqual(welcome, { version: 2, peerPresent: false, maxMessageBytes: MAX_MESSAGE_BYTES });
        await a.close();
        // The session outlives its party: resuming it is a Welcome, peer away.
        const { p: again, welcome: resumed } = await attached(kind, { sid, attach: Attach.Existing });
        assert.deepEqual(resumed, { version: 2, peerPresent: false, maxMessageBytes: MAX_MESSAGE_BYTES });
        const { welcome: peerWelcome } = await attached(kind, { sid: peerSid(sid), attach: Attach.Existing });
        assert.equal(peerWelcome.peerPresent, true);
        await again.expectPresence(true);
      });

      test(`${BULK_MESSAGES} messages each way, random sizes 0..64 KiB, intact and in order`, { timeout: BULK_TEST_TIMEOUT_MS }, async () => {
        const sid = randomSid();
        const { p: a } = await attached(kind, { sid });
        const { p: b } = await attached(kind, { sid: peerSid(sid) });
        await a.expectPresence(true);
        await Promise.all([
          stream(a, b, randomSizes(BULK_MESSAGES, MAX_MESSAGE_BYTES, 1), `${kind} A->B`),
          stream(b, a, randomSizes(BULK_MESSAGES, MAX_MESSAGE_BYTES, 2), `${kind} B->A`),
        ]);
      });

      test('payload over v2.maxMessageBytes: RESOURCE_EXHAUSTED "message too large"', async () => {
        const sid = randomSid();
        const { p: a } = await attached(kind, { sid });
        const { p: b } = await attached(kind, { sid: peerSid(sid) });
        await a.expectPresence(true);
        // The limit itself passes.
        const largest = makeMessage(0, MAX_MESSAGE_BYTES);
        await a.send(largest);
        checkMessage(await b.nextData(), 0, MAX_MESSAGE_BYTES, 'largest payload');
        await a.send(Buffer.alloc(MAX_MESSAGE_BYTES + 1, 7)).catch(() => undefined);
        await a.expectError(CODE.RESOURCE_EXHAUSTED, /message too large/);
        await b.expectPresence(false);
      });
    });
  }

  describe('WebSocket specifics', () => {
    test('a text message: INVALID_ARGUMENT (close 4003)', async () => {
      const p = await wsParty(server.port);
      open.add(p);
      await p.sendText(JSON.stringify({ hello: {} }));
      await p.expectError(CODE.INVALID_ARGUMENT, /./);
    });

    test('a text message after the Welcome: INVALID_ARGUMENT', async () => {
      const p = await wsParty(server.port);
      open.add(p);
      await p.hello({ sid: randomSid() });
      await p.sendText('data');
      await p.expectError(CODE.INVALID_ARGUMENT, /./);
    });

    test('handshake without the subprotocol: HTTP 400 naming hashmail.v2', async () => {
      const res = await dialWsV2(server.port, { protocols: [] });
      if (res.ok) {
        open.add(res.party);
        assert.fail(`handshake accepted (protocol "${res.party.protocol}")`);
      }
      assert.equal(res.status, 400);
      assert.match(res.body, /hashmail\.v2/, 'the answer names the supported subprotocols');
    });

    test('handshake offering only hashmail.v3: HTTP 400', async () => {
      const res = await dialWsV2(server.port, { protocols: ['hashmail.v3'] });
      if (res.ok) {
        open.add(res.party);
        assert.fail(`handshake accepted (protocol "${res.party.protocol}")`);
      }
      assert.equal(res.status, 400);
      assert.match(res.body, /hashmail\.v2/);
    });

    test('several subprotocols offered: the relay answers hashmail.v2', async () => {
      const p: WsV2Party = await wsParty(server.port, { protocols: ['hashmail.v1', 'hashmail.v3', V2_SUBPROTOCOL] });
      open.add(p);
      assert.equal(p.protocol, V2_SUBPROTOCOL);
      assert.equal((await p.hello({ sid: randomSid() })).version, 2);
    });

    test('a Hello cut short (frames are whole WebSocket messages, never reassembled): INVALID_ARGUMENT', async () => {
      const p = await wsParty(server.port);
      open.add(p);
      const hello = encodeHello({ minVersion: 2, maxVersion: 2, sid: randomSid(), attach: Attach.Create });
      await p.sendRaw(hello.subarray(0, 10));
      await p.expectError(CODE.INVALID_ARGUMENT, /./);
    });
  });

  describe('mixed session', () => {
    for (const [first, second] of [
      ['grpc', 'ws'],
      ['ws', 'grpc'],
    ] as const) {
      test(`${first} party first, ${second} party second: presence and ${BULK_MESSAGES} messages each way`, { timeout: BULK_TEST_TIMEOUT_MS }, async () => {
        const sid = randomSid();
        const { p: a, welcome } = await attached(first, { sid });
        assert.equal(welcome.peerPresent, false);
        const { p: b, welcome: bWelcome } = await attached(second, { sid: peerSid(sid) });
        assert.equal(bWelcome.peerPresent, true);
        await a.expectPresence(true);
        await Promise.all([
          stream(a, b, randomSizes(BULK_MESSAGES, MAX_MESSAGE_BYTES, 3), `${first}->${second}`),
          stream(b, a, randomSizes(BULK_MESSAGES, MAX_MESSAGE_BYTES, 4), `${second}->${first}`),
        ]);
        await b.close();
        await a.expectPresence(false);
      });
    }
  });

  test('HelloRefused carries the Error frame (helper self-check)', async () => {
    const p = await party('grpc');
    await assert.rejects(p.hello({ sid: randomSid(), attach: Attach.Existing }), (err: unknown) => {
      assert.ok(err instanceof HelloRefused, String(err));
      assert.equal(err.error?.code, CODE.NOT_FOUND);
      return true;
    });
  });
});

describe('protocol v2: relay shutdown', () => {
  test('SIGTERM ends every v2 stream with UNAVAILABLE "server shutting down" (gRPC status 14, WebSocket close 4014)', async () => {
    const server = await startServer();
    const parties: V2Party[] = [];
    try {
      const sid = randomSid();
      const a = grpcParty(server.address);
      parties.push(a);
      await a.hello({ sid });
      const b = await wsParty(server.port);
      parties.push(b);
      await b.hello({ sid: peerSid(sid) });
      await a.expectPresence(true);
      // Parties waiting alone for their peer.
      const c = grpcParty(server.address);
      parties.push(c);
      await c.hello({ sid: randomSid() });
      const d = await wsParty(server.port);
      parties.push(d);
      await d.hello({ sid: randomSid() });

      const exited = new Promise<number | null>((resolve) => server.process.once('exit', (code) => resolve(code)));
      server.process.kill('SIGTERM');
      for (const p of parties) await p.expectError(CODE.UNAVAILABLE, /server shutting down/, { skipPresence: true });
      await withTimeout(exited, SHUTDOWN_EXIT_WAIT_MS, 'relay exit after SIGTERM');
    } finally {
      await closeParties(parties);
      await server.stop();
    }
  });
});
