/**
 * RecvStream encodes every CipherBox into one reused buffer (codec.ts,
 * encodeOutgoingCipherBoxReused). That is only correct while grpc-js's
 * server copies a serialized response before it serializes the next one.
 * This test holds grpc-js to it: a real server writes distinct messages as
 * fast as its stream takes them (so writes queue in the call and in HTTP/2
 * flow control) to a client that reads slowly, and every message must
 * arrive as written.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { credentials, Server, ServerCredentials, type ServerWritableStream } from '@grpc/grpc-js';
import { cipherBoxDescField, type CipherBox, type CipherBoxDesc, type OutgoingCipherBox } from '../../src/transport/grpc-v1/codec.js';
import { hashMailServerService } from '../../src/transport/grpc-v1/handlers.js';
import { HashMailClient } from '../../src/transport/grpc-v1/service.js';

const MESSAGES = 300;
const SIZES = [1, 1_000, 33_000, 70_000];

const message = (i: number): Buffer => Buffer.alloc(SIZES[i % SIZES.length], i % 251);

let server: Server;
let port: number;

before(async () => {
  server = new Server();
  server.addService(hashMailServerService, {
    RecvStream: (call: ServerWritableStream<CipherBoxDesc, OutgoingCipherBox>) => {
      const descField = cipherBoxDescField(call.request);
      let i = 0;
      const pump = (): void => {
        while (i < MESSAGES) {
          if (!call.write({ descField, msg: message(i++) })) {
            call.once('drain', pump);
            return;
          }
        }
        call.end();
      };
      pump();
    },
  });
  port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
});

after(() => new Promise<void>((resolve) => server.tryShutdown(() => resolve())));

test('every CipherBox written through the reused buffer arrives as written, also when writes queue', async () => {
  const client = new HashMailClient(`127.0.0.1:${port}`, credentials.createInsecure());
  try {
    const streamId = Buffer.alloc(64, 9);
    const call = client.recvStream({ streamId });
    let got = 0;
    for await (const box of call as AsyncIterable<CipherBox>) {
      assert.ok(box.desc?.streamId.equals(streamId), `message ${got}: desc`);
      assert.ok(box.msg.equals(message(got)), `message ${got}: ${box.msg.length} bytes, not what was written`);
      got++;
      // A slow reader: the server's writes back up behind HTTP/2 flow control.
      if (got % 20 === 0) await new Promise((r) => setImmediate(r));
    }
    assert.equal(got, MESSAGES);
  } finally {
    client.close();
  }
});
