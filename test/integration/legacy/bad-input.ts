/**
 * Bad input and abandoned clients: each case must fail cleanly for the
 * caller and leave the server serving everyone else, which every test checks
 * afterwards with an unrelated session exchanging a message.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, afterEach, before, describe, test } from 'node:test';
import { credentials, makeGenericClientConstructor, status, type ServiceError } from '@grpc/grpc-js';
import { once, pollUntil, withTimeout } from '../../helpers/async-queue.js';
import { connectGrpc, createBox, deleteBox, GrpcReader, GrpcSender, type LegacyClient } from '../../helpers/grpc-v1-peer.js';
import { metricLines, metricSums } from '../../helpers/metrics.js';
import { ROOT, type RunningServer } from '../../helpers/server.js';
import {
  HASHMAIL_PATH,
  http,
  openReceive,
  openSendSocket,
  openWs,
  readErrorAndEnd,
  readMessage,
  RECEIVE_PATH,
  restCreateBox,
  sendRequest,
  type WsConn,
} from '../../helpers/ws-v1.js';
import type { StartTarget } from '../../helpers/legacy-target.js';

/** The suite, against the target `start` starts (test/helpers/legacy-target.ts). */
export function badInputSuite(start: StartTarget): void {
  const MiB = 1024 * 1024;
  const STALE_TIMEOUT_MS = 1_000;
  const MAX_MESSAGE_BYTES = 4 * MiB;
  const WRONG_SID_LENGTHS = [0, 1, 32, 63, 65, 128];

  const newSid = (): Buffer => randomBytes(64);

  type Raw = (b: Buffer) => Buffer;
  const raw: Raw = (b) => b;

  /** A client whose requests are whatever bytes the test gives, on any method path. */
  function rawClient(address: string, paths: Record<string, { path: string; requestStream: boolean; responseStream: boolean }>) {
    const def: Record<string, unknown> = {};
    for (const [name, p] of Object.entries(paths)) {
      def[name] = { ...p, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw };
    }
    const Ctor = makeGenericClientConstructor(def as never, 'Raw');
    return new Ctor(address, credentials.createInsecure()) as unknown as {
      [name: string]: (...args: unknown[]) => { on(e: string, fn: (...a: unknown[]) => void): void; write(b: Buffer): void; end(): void; cancel(): void };
    } & { close(): void };
  }

  function unaryRaw(client: ReturnType<typeof rawClient>, method: string, body: Buffer): Promise<ServiceError> {
    return new Promise((resolve, reject) => {
      client[method](body, (err: ServiceError | null) => (err ? resolve(err) : reject(new Error(`${method} with bad input succeeded`))));
    });
  }

  function grpcError(promise: Promise<unknown>): Promise<ServiceError> {
    return promise.then(
      () => assert.fail('call succeeded'),
      (err: ServiceError) => err,
    );
  }

  describe('bad input', () => {
    let server: RunningServer;
    let grpc: LegacyClient;
    let port: number;
    const conns: WsConn[] = [];
    const calls: { cancel(): void }[] = [];

    before(async () => {
      server = await start({ config: { mailbox: { staleTimeoutMs: STALE_TIMEOUT_MS, maxMessageBytes: MAX_MESSAGE_BYTES } } });
      port = server.port;
      grpc = connectGrpc(server.address);
    });
    afterEach(async () => {
      for (const c of calls.splice(0)) c.cancel();
      await Promise.all(conns.splice(0).map((c) => c.close()));
    });
    after(async () => {
      grpc?.close();
      await server?.stop();
    });

    /** An unrelated session still exchanges a message, over gRPC and WebSocket. */
    async function assertServing(): Promise<void> {
      const client = connectGrpc(server.address, { 'grpc.use_local_subchannel_pool': 1 });
      try {
        const sid = newSid();
        await createBox(client, sid);
        const reader = await openReceive(port, sid);
        conns.push(reader);
        const writer = new GrpcSender(client);
        const msg = randomBytes(33);
        await writer.write(sid, msg);
        assert.ok((await readMessage(reader, sid)).equals(msg), 'unrelated session did not exchange');
        writer.end();
        await reader.close();
        await deleteBox(client, sid);
      } finally {
        client.close();
      }
    }

    test('a SID that is not 64 bytes is INVALID_ARGUMENT on every gRPC method', async () => {
      for (const len of WRONG_SID_LENGTHS) {
        const sid = randomBytes(len);
        const created = await grpcError(createBox(grpc, sid));
        assert.equal(created.code, status.INVALID_ARGUMENT, `NewCipherBox, ${len} bytes: ${created.message}`);
        const deleted = await grpcError(deleteBox(grpc, sid));
        assert.equal(deleted.code, status.INVALID_ARGUMENT, `DelCipherBox, ${len} bytes: ${deleted.message}`);
        const reader = new GrpcReader(grpc, sid);
        calls.push(reader);
        const recvEnd = await reader.end();
        assert.equal(recvEnd?.code, status.INVALID_ARGUMENT, `RecvStream, ${len} bytes: ${recvEnd?.message}`);
        const writer = new GrpcSender(grpc);
        calls.push(writer);
        void writer.write(sid, Buffer.from('x'));
        const sendEnd = await withTimeout(writer.done, 10_000, 'SendStream answer');
        assert.equal(sendEnd?.code, status.INVALID_ARGUMENT, `SendStream, ${len} bytes: ${sendEnd?.message}`);
      }
      await assertServing();
    });

    test('a SID that is not 64 bytes is INVALID_ARGUMENT over WebSocket and REST', async () => {
      for (const len of WRONG_SID_LENGTHS.filter((l) => l > 0)) {
        const conn = await openReceive(port, randomBytes(len));
        conns.push(conn);
        const err = await readErrorAndEnd(conn);
        assert.equal(err.code, 3, `receive, ${len} bytes: ${err.message}`);
        const res = await restCreateBox(port, randomBytes(len));
        assert.equal(res.status, 400, `REST create, ${len} bytes: ${res.body}`);
        assert.equal((JSON.parse(res.body) as { code: number }).code, 3);
      }
      await assertServing();
    });

    test('malformed protobuf is INVALID_ARGUMENT and the server stays up', async () => {
      const client = rawClient(server.address, {
        newCipherBox: { path: '/hashmailrpc.HashMail/NewCipherBox', requestStream: false, responseStream: false },
        delCipherBox: { path: '/hashmailrpc.HashMail/DelCipherBox', requestStream: false, responseStream: false },
        recvStream: { path: '/hashmailrpc.HashMail/RecvStream', requestStream: false, responseStream: true },
        sendStream: { path: '/hashmailrpc.HashMail/SendStream', requestStream: true, responseStream: false },
      });
      try {
        const garbage = Buffer.from([0x0a, 0xff]);
        for (const method of ['newCipherBox', 'delCipherBox']) {
          const err = await unaryRaw(client, method, garbage);
          assert.equal(err.code, status.INVALID_ARGUMENT, `${method}: ${err.code} ${err.details}`);
        }
        const recv = client.recvStream(garbage);
        calls.push(recv);
        const recvErr = await new Promise<ServiceError>((resolve) => {
          recv.on('error', (e) => resolve(e as ServiceError));
          recv.on('data', () => undefined);
        });
        assert.equal(recvErr.code, status.INVALID_ARGUMENT, `RecvStream: ${recvErr.code} ${recvErr.details}`);
        const sendErr = await new Promise<ServiceError | null>((resolve) => {
          const send = client.sendStream((e: ServiceError | null) => resolve(e));
          calls.push(send);
          send.on('error', () => undefined);
          send.write(garbage);
        });
        assert.equal(sendErr?.code, status.INVALID_ARGUMENT, `SendStream: ${sendErr?.code} ${sendErr?.details}`);
      } finally {
        client.close();
      }
      await assertServing();
    });

    test('malformed JSON on a WebSocket receive: error frame, then the socket ends', async () => {
      for (const text of ['{"stream_id": "AAAA', 'not json', '[]', '{"stream_id": 12}', '{"stream_id":"!!!not base64!!!"}']) {
        const conn = await openWs(port, RECEIVE_PATH);
        conns.push(conn);
        conn.ws.send(text);
        const err = await readErrorAndEnd(conn);
        assert.equal(err.code, 3, `${text}: ${err.message}`);
      }
      await assertServing();
    });

    test('malformed JSON on a WebSocket send: the socket ends', async () => {
      const conn = await openSendSocket(port);
      conns.push(conn);
      conn.ws.send('{"desc": {"stream_id": ');
      await conn.awaitEnd();
      await assertServing();
    });

    test('oversized JSON on a WebSocket receive (64 KiB): error frame (RESOURCE_EXHAUSTED or INVALID_ARGUMENT), then the socket ends', async () => {
      const recv = await openWs(port, RECEIVE_PATH);
      conns.push(recv);
      recv.ws.send(`{"stream_id":"${'A'.repeat(64 * 1024)}"}`, () => undefined);
      const err = await readErrorAndEnd(recv);
      assert.ok([3, 8].includes(err.code), `receive: code ${err.code} ${err.message}`);
      await assertServing();
    });

    test('a message over maxMessageBytes on a WebSocket send socket ends the socket and is not delivered', async () => {
      const sid = newSid();
      await createBox(grpc, sid);
      const reader = await openReceive(port, sid);
      conns.push(reader);
      const send = await openSendSocket(port);
      conns.push(send);
      send.ws.send(sendRequest(sid, randomBytes(MAX_MESSAGE_BYTES + 1)), () => undefined);
      const end = await send.awaitEnd(30_000);
      for (const frame of end.frames) assert.match(frame, /"code":(3|8),/);
      // The reader gets nothing of it: the next thing it sees is a message written after.
      const writer = new GrpcSender(grpc);
      calls.push(writer);
      const after = randomBytes(4);
      await writer.write(sid, after);
      assert.ok((await readMessage(reader, sid)).equals(after), 'an oversized message (or part of it) was delivered');
      await assertServing();
    });

    test('a gRPC message over the size limit is RESOURCE_EXHAUSTED', async () => {
      const sid = newSid();
      await createBox(grpc, sid);
      const writer = new GrpcSender(grpc);
      calls.push(writer);
      void writer.write(sid, randomBytes(MAX_MESSAGE_BYTES + 1));
      const err = await withTimeout(writer.done, 30_000, 'SendStream answer');
      assert.equal(err?.code, status.RESOURCE_EXHAUSTED, `${err?.code} ${err?.details}`);
      await assertServing();
    });

    test('unknown HTTP paths are 404', async () => {
      for (const [method, path] of [
        ['GET', '/'],
        ['GET', '/metrics'],
        ['POST', '/v1/lightning-node-connect/hashmail/recv'],
        ['GET', `${HASHMAIL_PATH}/../../etc/passwd`],
        ['PUT', '/hashmail'],
      ] as const) {
        const res = await http(port, method, path, { body: method === 'GET' ? undefined : '{}', headers: { 'content-type': 'application/json' } });
        assert.equal(res.status, 404, `${method} ${path}: ${res.status} ${res.body.slice(0, 200)}`);
      }
      await assertServing();
    });

    test('an unknown gRPC method or service is UNIMPLEMENTED', async () => {
      const client = rawClient(server.address, {
        nope: { path: '/hashmailrpc.HashMail/Nope', requestStream: false, responseStream: false },
        other: { path: '/hashmail.v9.Other/NewCipherBox', requestStream: false, responseStream: false },
      });
      try {
        for (const method of ['nope', 'other']) {
          const err = await unaryRaw(client, method, Buffer.alloc(0));
          assert.equal(err.code, status.UNIMPLEMENTED, `${method}: ${err.code} ${err.details}`);
        }
      } finally {
        client.close();
      }
      await assertServing();
    });

    test('a client that opens 1,000 boxes and 1,100 streams and vanishes leaves nothing behind', { timeout: 120_000 }, async (t) => {
      const GRPC_READERS = 500;
      const WS_READERS = 500;
      const GRPC_WRITERS = 100;
      const names = ['hashmail_attached_halves', 'hashmail_open_connections', 'hashmail_websocket_connections', 'hashmail_mailbox_count', 'process_resident_memory_bytes'];
      const before = await metricSums(server, names);
      for (const n of names.slice(0, 4)) assert.notEqual(before[n], undefined, `metric ${n} missing`);
      t.diagnostic(`before: ${JSON.stringify(before)}`);

      const child = spawn(
        process.execPath,
        ['--import', 'tsx', join(ROOT, 'test/helpers/vanishing-client.ts'), server.address, String(GRPC_READERS), String(WS_READERS), String(GRPC_WRITERS)],
        { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = once<[number | null, NodeJS.Signals | null]>(child, 'exit', 120_000);
      try {
        const ready = new Promise<void>((resolve, reject) => {
          createInterface({ input: child.stdout! }).on('line', (line) => {
            if (line.includes('"ready":true')) resolve();
          });
          child.once('exit', (code) => reject(new Error(`vanishing client exited (${code}): ${stderr}`)));
        });
        await withTimeout(ready, 60_000, 'vanishing client ready');
        const expectedHalves = before.hashmail_attached_halves! + GRPC_READERS + WS_READERS + GRPC_WRITERS;
        let during: Record<string, number | undefined> = {};
        await pollUntil(async () => {
          during = await metricSums(server, names);
          return during.hashmail_attached_halves! >= expectedHalves;
        }, `attached halves reaching ${expectedHalves}`).catch((err: Error) => assert.fail(`${err.message}: ${JSON.stringify(during)}`));
        // Earlier tests' boxes may be reaped meanwhile, so only the client's own count is certain.
        assert.ok(during.hashmail_mailbox_count! >= GRPC_READERS + WS_READERS, `boxes not created: ${JSON.stringify(during)}`);
        t.diagnostic(`with the client attached: ${JSON.stringify(during)}`);
      } finally {
        child.kill('SIGKILL');
        await exited;
      }

      let now: Record<string, number | undefined> = {};
      const settled = (n: string): boolean => now[n]! <= before[n]!;
      await pollUntil(
        async () => {
          now = await metricSums(server, names);
          return settled('hashmail_attached_halves') && settled('hashmail_open_connections') && settled('hashmail_websocket_connections');
        },
        'attached halves and connections back to baseline',
        400,
        50,
      ).catch(async (err: Error) => assert.fail(`${err.message}: before ${JSON.stringify(before)}, now ${await metricLines(server, names)}`));
      await pollUntil(
        async () => {
          now = await metricSums(server, names);
          return settled('hashmail_mailbox_count');
        },
        `boxes reaped after the ${STALE_TIMEOUT_MS} ms stale timeout`,
        400,
        50,
      ).catch(async (err: Error) => assert.fail(`${err.message}: before ${JSON.stringify(before)}, now ${await metricLines(server, names)}`));
      t.diagnostic(`after: ${JSON.stringify(now)}`);
      t.diagnostic(`RSS before ${before.process_resident_memory_bytes} bytes, after ${now.process_resident_memory_bytes} bytes`);
      await assertServing();
    });
  });
}
