/**
 * No amplification through the legacy gateway's JSON (issue 7, point 4):
 * parse work per request is bounded while scanning (fields, depth, size) on
 * every JSON entry point, a storm of huge objects leaves other sessions
 * relaying, client text reaches errors only as a short quotation and the log
 * only as a length, and no header value (macaroon) is echoed or logged.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { after, afterEach, before, describe, test } from 'node:test';
import { pollUntil } from '../helpers/async-queue.js';
import { expectRecovered, footprint, ProbeSession } from '../helpers/server-health.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { dialWsV2 } from '../helpers/v2-peers.js';
import {
  b64,
  HASHMAIL_PATH,
  openReceive,
  openSendSocket,
  openWs,
  readErrorAndEnd,
  readMessage,
  RECEIVE_PATH,
  restCreateBox,
  SEND_PATH,
  type ErrorBody,
  type WsConn,
} from '../helpers/ws-v1.js';

const KiB = 1024;
const MiB = 1024 * KiB;
/** The server's bounds (src/transport/rest-ws-v1/json-splitter.ts), as a client meets them. */
const MAX_JSON_FIELDS = 16;
const MAX_JSON_DEPTH = 4;
/** mailbox.maxMessageBytes at its default. */
const MAX_MESSAGE_BYTES = 4 * MiB;
const INVALID_ARGUMENT = 3;
/** Keys of the storm object: ~5 MB of `"kN":0`, which took 0.4 s of event loop to parse whole. */
const STORM_KEYS = 450_000;
const STORM_SOCKETS = 4;
const STORM_REQUESTS = 4;
/** Probe round trips at most while the storm is answered (each is awaited, so the loop is bounded in time too). */
const MAX_PROBE_TRIPS = 1_000;
/** Generous waits: a 5 MB request takes a while to cross a loaded loopback. */
const BIG_WAIT_MS = 60_000;
/** Server RSS after the storm (8 requests of 5 MB at once, all refused; ~80 MiB idle, ~100 MiB measured after). */
const STORM_RSS_BOUND_BYTES = 200 * MiB;
/**
 * The baseline is taken before any admin fetch; footprint()'s fetches then
 * leave up to two keep-alive connections to the admin listener open.
 */
const ADMIN_FETCH_FDS = 2;
/** Unknown keys of this size, ten of them, once made 50 MB of log. */
const HUGE_KEY_CHARS = 5 * MiB;
const HUGE_KEYS = 10;
/** Server log written while the ten huge keys are refused (every level, every subsystem traced). */
const LOG_BOUND_BYTES = 64 * KiB;
/** An echoed error message quoting client text stays this short. */
const ECHO_BOUND_CHARS = 256;

const OVER_FIELDS = new RegExp(`more than ${MAX_JSON_FIELDS} fields`);
const OVER_DEPTH = new RegExp(`deeper than ${MAX_JSON_DEPTH} levels`);

const newSid = (): Buffer => randomBytes(64);

/** `{"k0":0,"k1":0,...}` with `n` keys. */
function objectOfKeys(n: number): string {
  const parts: string[] = [];
  for (let i = 0; i < n; i++) parts.push(`"k${i}":0`);
  return `{${parts.join(',')}}`;
}

/** `depth` objects nested in each other, the outer one counting 1. */
function nested(depth: number): string {
  return '{"desc":'.repeat(depth - 1) + '{}' + '}'.repeat(depth - 1);
}

let stormObject: Buffer | null = null;
/** The storm request, built once. */
function storm(): Buffer {
  stormObject ??= Buffer.from(objectOfKeys(STORM_KEYS));
  return stormObject;
}

interface RawResponse {
  status: number;
  body: string;
}

/**
 * POST on its own connection. The server may answer before it read the
 * whole body and then close: the answer counts, a write error after it not.
 */
function post(port: number, path: string, body: Buffer | string, timeoutMs = BIG_WAIT_MS): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest(
      { host: '127.0.0.1', port, method: 'POST', path, agent: false, timeout: timeoutMs, headers: { 'content-type': 'application/json' } },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (text += d));
        res.on('end', () => {
          answered = true;
          resolve({ status: res.statusCode ?? 0, body: text });
          req.destroy();
        });
        res.on('error', (err) => {
          if (!answered) reject(err);
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`POST ${path}: no answer in ${timeoutMs} ms`)));
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    req.end(body);
  });
}

/** The status body of a refused REST request. */
function statusOf(res: RawResponse, httpStatus: number, what: string): ErrorBody {
  assert.equal(res.status, httpStatus, `${what}: HTTP ${res.status} ${res.body.slice(0, 200)}`);
  return JSON.parse(res.body) as ErrorBody;
}

function expectInvalid(err: ErrorBody, bound: RegExp, what: string): void {
  assert.equal(err.code, INVALID_ARGUMENT, `${what}: ${err.code} ${err.message}`);
  assert.match(err.message, bound, what);
}

/** Total size of the log lines from index `from` on (as JSON lines). */
function logBytesSince(server: RunningServer, from: number): number {
  return server.logs.slice(from).reduce((sum, line) => sum + JSON.stringify(line).length + 1, 0);
}

function logTextSince(server: RunningServer, from: number): string {
  return server.logs
    .slice(from)
    .map((line) => JSON.stringify(line))
    .join('\n');
}

/** Waits until `n` 'bad request' lines were logged since `from`. */
async function badRequestsLogged(server: RunningServer, from: number, n: number): Promise<void> {
  await pollUntil(async () => server.logs.slice(from).filter((l) => l.msg === 'bad request').length >= n, `${n} bad-request log lines`);
}

describe('JSON hardening of the legacy gateway', () => {
  let server: RunningServer;
  let port: number;
  const conns: WsConn[] = [];
  const track = (c: WsConn): WsConn => {
    conns.push(c);
    return c;
  };

  before(async () => {
    // Every level and subsystem logs, so no line that could carry client text is hidden.
    server = await startServer({ config: { log: { level: 'debug' } }, env: { HASHMAIL_TRACE: 'all' } });
    port = server.port;
  });
  afterEach(async () => {
    await Promise.all(conns.splice(0).map((c) => c.close()));
  });
  after(async () => {
    await server?.stop();
  });

  test(`JSON storm: ${STORM_SOCKETS} WebSocket and ${STORM_REQUESTS} streaming-HTTP sends of ${STORM_KEYS} keys are refused naming the bound while another session relays`, async (t) => {
    const probe = await new ProbeSession(server).open();
    t.after(() => probe.close());
    const base = await footprint(server);
    const body = storm();
    assert.ok(body.length > 5_000_000 && body.length < MAX_MESSAGE_BYTES * 1.33, `storm object ${body.length} bytes`);

    const sockets = await Promise.all(Array.from({ length: STORM_SOCKETS }, () => openSendSocket(port).then(track)));
    const attacks = [
      ...sockets.map(async (conn, i) => {
        // Text and binary messages are both JSON requests.
        conn.ws.send(i % 2 === 0 ? body : body.toString('latin1'), () => undefined);
        expectInvalid(await readErrorAndEnd(conn, BIG_WAIT_MS), OVER_FIELDS, `WebSocket send ${i}`);
      }),
      ...Array.from({ length: STORM_REQUESTS }, async (_, i) => {
        expectInvalid(statusOf(await post(port, SEND_PATH, body), 400, `HTTP send ${i}`), OVER_FIELDS, `HTTP send ${i}`);
      }),
    ];
    let settled = false;
    const stormDone = Promise.all(attacks).finally(() => {
      settled = true;
    });
    // The probe keeps relaying during the storm; its round-trip times are reported, not asserted.
    const rtts: number[] = [];
    for (let i = 0; i < MAX_PROBE_TRIPS && !settled; i++) {
      const started = performance.now();
      await probe.roundTrip();
      rtts.push(performance.now() - started);
    }
    await stormDone;
    assert.ok(rtts.length >= 1, 'the probe relayed during the storm');
    t.diagnostic(`probe round trips during the storm: ${rtts.length}, max ${Math.max(...rtts).toFixed(1)} ms`);

    await Promise.all(conns.splice(0).map((c) => c.close()));
    const end = await expectRecovered(server, base, probe, { rssBoundBytes: STORM_RSS_BOUND_BYTES, fdSlack: ADMIN_FETCH_FDS, what: 'JSON storm' });
    t.diagnostic(`server RSS after the storm: ${(end.rssBytes / MiB).toFixed(1)} MiB (baseline ${(base.rssBytes / MiB).toFixed(1)} MiB)`);
  });

  test('one field or one level over the bound is refused on every JSON entry point; at the bound the codec answers', async () => {
    const sid = newSid();
    const over: [string, string, RegExp][] = [
      ['fields', objectOfKeys(MAX_JSON_FIELDS + 1), OVER_FIELDS],
      ['depth', nested(MAX_JSON_DEPTH + 1), OVER_DEPTH],
      // Over the field bound inside a legal-looking request.
      ['fields in desc', `{"desc":${objectOfKeys(MAX_JSON_FIELDS)},"msg":""}`, OVER_FIELDS],
    ];
    for (const [name, text, bound] of over) {
      const sender = track(await openSendSocket(port));
      sender.ws.send(text);
      expectInvalid(await readErrorAndEnd(sender), bound, `WebSocket send, ${name}`);
      const receiver = track(await openWs(port, RECEIVE_PATH));
      receiver.ws.send(text);
      expectInvalid(await readErrorAndEnd(receiver), bound, `WebSocket receive, ${name}`);
      for (const path of [SEND_PATH, RECEIVE_PATH, HASHMAIL_PATH]) {
        expectInvalid(statusOf(await post(port, path, text), 400, `HTTP ${path}, ${name}`), bound, `HTTP ${path}, ${name}`);
      }
    }
    // At the bound the scan lets the request through and the codec names the first unknown key.
    const atBound = objectOfKeys(MAX_JSON_FIELDS);
    const create = statusOf(await post(port, HASHMAIL_PATH, atBound), 400, 'HTTP create at the bound');
    expectInvalid(create, /unknown field "k0" in CipherBoxAuth/, 'HTTP create at the bound');
    const deepest = nested(MAX_JSON_DEPTH);
    expectInvalid(statusOf(await post(port, HASHMAIL_PATH, deepest), 400, 'create, deepest'), /CipherBoxDesc|desc/, 'HTTP create at the depth bound');
    // Several objects in one message, each within the bound, are fine (the box is unknown).
    const sender = track(await openSendSocket(port));
    const small = JSON.stringify({ desc: { stream_id: b64(sid) }, msg: '' });
    sender.ws.send(`${small}\n${small}`);
    const err = await readErrorAndEnd(sender);
    assert.equal(err.message, 'stream not found');
  });

  test('a message of the maximum size, pretty-printed and followed by a second object, passes over WebSocket and streaming HTTP', async () => {
    for (const transport of ['websocket', 'http'] as const) {
      const sid = newSid();
      assert.equal((await restCreateBox(port, sid)).status, 200);
      const reader = track(await openReceive(port, sid));
      const big = randomBytes(MAX_MESSAGE_BYTES);
      const small = randomBytes(33);
      // Whitespace as a pretty-printer writes it, then a second object in the same message/body.
      const request =
        `{\n  "desc": {\n    "stream_id": "${b64(sid)}"\n  },\n  "msg": "${b64(big)}"\n}\n` +
        JSON.stringify({ desc: { stream_id: b64(sid) }, msg: b64(small) });
      if (transport === 'websocket') {
        const sender = track(await openSendSocket(port));
        sender.ws.send(request);
      } else {
        const res = await post(port, SEND_PATH, request);
        assert.equal(res.status, 200, `HTTP send: ${res.body.slice(0, 200)}`);
        assert.deepEqual(JSON.parse(res.body), { stream_id: b64(sid) });
      }
      assert.ok((await readMessage(reader, sid, BIG_WAIT_MS)).equals(big), `${transport}: 4 MiB message intact`);
      assert.ok((await readMessage(reader, sid, BIG_WAIT_MS)).equals(small), `${transport}: second object`);
    }
  });

  test(`${HUGE_KEYS} unknown keys of 5 MB: short errors echoed, the log stays under ${LOG_BOUND_BYTES / KiB} KiB`, async () => {
    const from = server.logs.length;
    const key = 'K'.repeat(HUGE_KEY_CHARS);
    const request = Buffer.from(`{"${key}":1}`);
    const echoed: ErrorBody[] = [];
    for (let i = 0; i < HUGE_KEYS; i++) {
      if (i % 2 === 0) {
        const sender = track(await openSendSocket(port));
        sender.ws.send(request, () => undefined);
        echoed.push(await readErrorAndEnd(sender, BIG_WAIT_MS));
      } else {
        echoed.push(statusOf(await post(port, SEND_PATH, request), 400, `HTTP send ${i}`));
      }
    }
    for (const err of echoed) {
      assert.equal(err.code, INVALID_ARGUMENT);
      assert.ok(err.message.length < ECHO_BOUND_CHARS, `echoed error of ${err.message.length} chars`);
      assert.match(err.message, new RegExp(`^unknown field "K{32}"\\.\\.\\. \\(${HUGE_KEY_CHARS} chars\\) in CipherBox$`));
    }
    await badRequestsLogged(server, from, HUGE_KEYS);
    const bytes = logBytesSince(server, from);
    assert.ok(bytes < LOG_BOUND_BYTES, `log grew by ${bytes} bytes`);
    assert.ok(!logTextSince(server, from).includes('K'.repeat(16)), 'the key reached the log');
  });

  test('a SID sent as a JSON key or a bad value never reaches the log', async () => {
    const from = server.logs.length;
    const sid = newSid();
    const spellings = [sid.toString('base64'), sid.toString('base64url'), sid.toString('hex')];
    const requests: string[] = [];
    for (const s of spellings) {
      requests.push(
        `{"${s}":1}`,
        `{"stream_id":"${s}!"}`,
        `{"desc":{"stream_id":"${b64(newSid())}","${s}":"x"}}`,
        `{"desc":{"stream_id":"${s}"},"msg":"${s}="}`,
        `{"stream_id":["${s}"]}`,
      );
    }
    let refused = 0;
    for (const text of requests) {
      const receiver = track(await openWs(port, RECEIVE_PATH));
      receiver.ws.send(text);
      assert.equal((await readErrorAndEnd(receiver)).code, INVALID_ARGUMENT, text);
      const sender = track(await openSendSocket(port));
      sender.ws.send(text);
      await readErrorAndEnd(sender);
      for (const path of [SEND_PATH, RECEIVE_PATH, HASHMAIL_PATH]) {
        const res = await post(port, path, text);
        assert.ok(res.status >= 400, `${path} ${text}: ${res.status}`);
      }
      // Receive socket, send socket and three REST paths: each a bad request.
      refused += 5;
    }
    await badRequestsLogged(server, from, refused);
    const log = logTextSince(server, from);
    for (const s of spellings) {
      // Not even a piece of it: the log carries lengths, never client text.
      for (const piece of [s, s.slice(0, 16), s.slice(-16)]) assert.ok(!log.includes(piece), `SID piece ${piece} in the log`);
    }
  });

  test('a refused v2 upgrade offering Grpc-Metadata-Macaroon+SECRET echoes and logs no SECRET', async () => {
    const from = server.logs.length;
    const secret = randomBytes(48).toString('hex');
    const macaroon = `Grpc-Metadata-Macaroon+${secret}`;
    const offers = [[macaroon], ['hashmail.v3', macaroon]];
    for (const protocols of offers) {
      const res = await dialWsV2(port, { protocols });
      if (res.ok) {
        await res.party.close();
        assert.fail('v2 upgrade without a supported subprotocol was accepted');
      }
      assert.equal(res.status, 400);
      assert.ok(!res.body.includes(secret.slice(0, 8)) && !JSON.stringify(res.headers).includes(secret.slice(0, 8)), `refusal carries the secret: ${res.body}`);
      assert.match(res.body, /hashmail\.v2/);
      assert.match(res.body, protocols.length === 1 ? /offered: 1 other entry/ : /offered: hashmail\.v3 and 1 other entry/);
    }
    // The legacy gateway accepts the macaroon entry (browsers send it) and never logs it either.
    const legacy = track(await openWs(port, RECEIVE_PATH, { headers: { 'sec-websocket-protocol': macaroon, 'grpc-metadata-macaroon': secret } }));
    legacy.ws.send('{"x":1}');
    await readErrorAndEnd(legacy);
    await pollUntil(
      async () => server.logs.slice(from).filter((l) => l.msg === 'v2 handshake without a supported subprotocol').length >= offers.length,
      'v2 refusal log lines',
    );
    await badRequestsLogged(server, from, 1);
    assert.ok(!logTextSince(server, from).includes(secret.slice(0, 8)), 'the secret reached the log');
  });
});
