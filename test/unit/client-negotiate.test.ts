/**
 * Protocol negotiation of the client (src/client/negotiate.ts) with fake
 * link openers: fallback to v1 when the relay does not serve v2, the per
 * relay memory of it, 'v2' required, and the browser case where a failed
 * WebSocket handshake does not say why.
 */
import assert from 'node:assert/strict';
import { beforeEach, describe, test } from 'node:test';
import { ConnectionLost, StatusCode, UnsupportedVersion, V2NotServed } from '../../src/client/errors.js';
import type { Link, LinkHandlers, LinkRequest, TransportOpeners } from '../../src/client/link.js';
import { forgetNegotiatedProtocols, knownV1Only, openNegotiated, V2_MISSING_RECHECK_MS } from '../../src/client/negotiate.js';
import { parseServer } from '../../src/client/options.js';
import { V2HandshakeUnexplained } from '../../src/client/v2-websocket.js';

const handlers: LinkHandlers = { message: () => undefined, presence: () => undefined, closed: () => undefined };

function fakeLink(version: 1 | 2): Link {
  return { version, peerPresent: false, maxMessageBytes: 0, send: async () => undefined, pause: () => undefined, resume: () => undefined, close: async () => undefined };
}

function request(authority = '127.0.0.1:1000'): LinkRequest {
  return { server: parseServer(authority, true), sid: new Uint8Array(64), role: 'app', attach: 'create', tlsSkipVerify: false, signal: new AbortController().signal, liveness: { pingIntervalMs: 0, pingTimeoutMs: 1 } };
}

/** Openers whose v2 fails with `v2Error` (or succeeds when null) and whose v1 succeeds unless `v1Error`. */
function openers(v2Error: Error | null, v1Error: Error | null = null): TransportOpeners & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    openV2: async () => {
      calls.push('v2');
      if (v2Error) throw v2Error;
      return fakeLink(2);
    },
    openV1: async () => {
      calls.push('v1');
      if (v1Error) throw v1Error;
      return fakeLink(1);
    },
  };
}

const notServed = (): V2NotServed => new V2NotServed(StatusCode.UNIMPLEMENTED, 'no v2');

describe('client: protocol negotiation', () => {
  beforeEach(() => forgetNegotiatedProtocols());

  test('auto: v2 when the relay serves it', async () => {
    const o = openers(null);
    const link = await openNegotiated({ protocol: 'auto', transport: 'grpc', openers: o }, request(), handlers);
    assert.equal(link.version, 2);
    assert.deepEqual(o.calls, ['v2']);
  });

  test('auto: v1 when v2 is not served, remembered per relay and transport', async () => {
    const o = openers(notServed());
    const params = { protocol: 'auto' as const, transport: 'grpc' as const, openers: o };
    assert.equal((await openNegotiated(params, request(), handlers)).version, 1);
    assert.equal((await openNegotiated(params, request(), handlers)).version, 1);
    assert.deepEqual(o.calls, ['v2', 'v1', 'v1'], 'the second connect skips v2');
    assert.equal(knownV1Only('websocket', request()), false, 'per transport');
    assert.equal(knownV1Only('grpc', request('127.0.0.1:2000')), false, 'per relay');
    assert.equal(knownV1Only('grpc', request(), Date.now() + V2_MISSING_RECHECK_MS + 1), false, 'forgotten after the recheck interval');
  });

  test("'v2' required on a v1-only relay: UnsupportedVersion naming v1", async () => {
    const o = openers(notServed());
    const err = await openNegotiated({ protocol: 'v2', transport: 'websocket', openers: o }, request(), handlers).catch((e: unknown) => e);
    assert.ok(err instanceof UnsupportedVersion);
    assert.deepEqual(err.supportedVersions, [1]);
    assert.deepEqual(o.calls, ['v2']);
  });

  test("'v1' never tries v2", async () => {
    const o = openers(null);
    assert.equal((await openNegotiated({ protocol: 'v1', transport: 'grpc', openers: o }, request(), handlers)).version, 1);
    assert.deepEqual(o.calls, ['v1']);
  });

  test('a lost connection is not a reason to fall back', async () => {
    const o = openers(new ConnectionLost('connection refused'));
    await assert.rejects(openNegotiated({ protocol: 'auto', transport: 'grpc', openers: o }, request(), handlers), ConnectionLost);
    assert.deepEqual(o.calls, ['v2']);
  });

  test('unexplained handshake failure (browser): v1 probed; fallback only if the relay answers v1', async () => {
    const up = openers(new V2HandshakeUnexplained('handshake failed'));
    assert.equal((await openNegotiated({ protocol: 'auto', transport: 'websocket', openers: up }, request(), handlers)).version, 1);
    assert.equal(knownV1Only('websocket', request()), true);

    forgetNegotiatedProtocols();
    const down = openers(new V2HandshakeUnexplained('handshake failed'), new ConnectionLost('v1 failed too'));
    await assert.rejects(openNegotiated({ protocol: 'auto', transport: 'websocket', openers: down }, request(), handlers), V2HandshakeUnexplained);
    assert.equal(knownV1Only('websocket', request()), false);
  });
});
