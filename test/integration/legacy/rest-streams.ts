/**
 * The plain-HTTP streaming forms of RecvStream and SendStream (grpc-gateway
 * style): newline-delimited JSON out, concatenated CipherBox objects in.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { RunningServer } from '../../helpers/server.js';
import type { StartTarget } from '../../helpers/legacy-target.js';

/** The suite, against the target `start` starts (test/helpers/legacy-target.ts). */
export function restStreamsSuite(start: StartTarget): void {
  let server: RunningServer;
  before(async () => {
    server = await start();
  });
  after(async () => {
    await server.stop();
  });

  const BASE = '/v1/lightning-node-connect/hashmail';

  async function post(path: string, body: string): Promise<Response> {
    return fetch(`http://${server.address}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
  }

  test('POST send streams messages into the box; POST receive streams them out as {"result":...} lines', async () => {
    const sid = randomBytes(64).toString('base64');
    const created = await post(BASE, JSON.stringify({ desc: { stream_id: sid }, lnd_auth: {} }));
    assert.equal(await created.text(), '{"success":{"desc":null}}');

    const controller = new AbortController();
    const receive = await fetch(`http://${server.address}${BASE}/receive`, { method: 'POST', body: JSON.stringify({ stream_id: sid }), signal: controller.signal });
    assert.equal(receive.status, 200);

    const messages = ['hello', '', 'world'].map((m) => Buffer.from(m).toString('base64'));
    const body = messages.map((msg) => JSON.stringify({ desc: { stream_id: sid }, msg })).join('\n');
    const sent = await post(`${BASE}/send`, body);
    assert.equal(sent.status, 200);
    assert.deepEqual(await sent.json(), { stream_id: sid });

    const reader = receive.body!.getReader();
    let text = '';
    for (let i = 0; i < 100 && text.split('\n').filter(Boolean).length < messages.length; i++) {
      const { value, done } = await reader.read();
      if (done) break;
      text += Buffer.from(value).toString();
    }
    const lines = text.split('\n').filter(Boolean);
    assert.deepEqual(
      lines,
      messages.map((msg) => JSON.stringify({ result: { desc: { stream_id: sid }, msg } })),
    );
    controller.abort();
  });

  test('POST send with an empty body, or to an unknown box, fails with the legacy text', async () => {
    const empty = await post(`${BASE}/send`, '');
    assert.equal(empty.status, 400);
    assert.equal((await empty.json()).message, 'cipher box descriptor required');
    const unknown = await post(`${BASE}/send`, JSON.stringify({ desc: { stream_id: randomBytes(64).toString('base64') }, msg: '' }));
    assert.equal((await unknown.json()).message, 'stream not found');
  });
}
