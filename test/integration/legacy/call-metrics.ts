/**
 * grpc_server_* counts legacy calls whatever carried them: WebSocket and
 * REST calls under the gRPC method they stand for (as the reference's
 * in-process gateway did), told apart by the `transport` label. Run against
 * serve and, through a gateway, against a cluster (test/helpers/legacy-target.ts).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { pollUntil } from '../../helpers/async-queue.js';
import { connect, randomSid } from '../../helpers/grpc-v1.js';
import type { LegacyTarget, StartTarget } from '../../helpers/legacy-target.js';
import { b64, HASHMAIL_PATH, openReceive, openSendSocket, parseResult, sendMessage } from '../../helpers/ws-v1.js';

/** The suite, against the target `start` starts. */
export function legacyCallMetricsSuite(start: StartTarget): void {
  let server: LegacyTarget;
  before(async () => {
    server = await start();
  });
  after(async () => {
    await server.stop();
  });

  const HASHMAIL = 'grpc_service="hashmailrpc.HashMail"';
  const labels = (type: string, method: string, transport: string): string =>
    `grpc_type="${type}",${HASHMAIL},grpc_method="${method}",transport="${transport}"`;

  async function metricIs(name: string, expected: number): Promise<void> {
    let last: number | undefined;
    await pollUntil(async () => (last = await server.metric(name)) === expected, `${name} = ${expected} (last ${last})`);
  }

  test('a WebSocket receive and send are counted in grpc_server_started_total and handled_total with their code', async () => {
    const sid = randomSid();
    const created = await fetch(`http://${server.address}${HASHMAIL_PATH}`, {
      method: 'POST',
      body: JSON.stringify({ desc: { stream_id: b64(sid) }, lnd_auth: {} }),
    });
    assert.equal(created.status, 200);
    const create = labels('unary', 'NewCipherBox', 'rest');
    assert.equal(await server.metric(`grpc_server_started_total{${create}}`), 1);
    assert.equal(await server.metric(`grpc_server_handled_total{${create},grpc_code="OK"}`), 1);

    const reader = await openReceive(server.port, sid);
    const writer = await openSendSocket(server.port);
    const recv = labels('server_stream', 'RecvStream', 'websocket');
    const send = labels('client_stream', 'SendStream', 'websocket');
    await metricIs(`grpc_server_started_total{${recv}}`, 1);
    await metricIs(`grpc_server_started_total{${send}}`, 1);

    await sendMessage(writer, sid, Buffer.from('counted'));
    assert.equal(parseResult(await reader.nextFrame(), sid).toString(), 'counted');
    await metricIs(`grpc_server_msg_received_total{${send}}`, 1);
    await metricIs(`grpc_server_msg_sent_total{${recv}}`, 1);

    // A writer that closes cleanly ended its stream (OK); a reader that leaves cancelled its own.
    await writer.close();
    await reader.close();
    await metricIs(`grpc_server_handled_total{${send},grpc_code="OK"}`, 1);
    await metricIs(`grpc_server_handled_total{${recv},grpc_code="Canceled"}`, 1);

    // An error reported on the socket is counted with its code: a second create of the same box over REST.
    const again = await fetch(`http://${server.address}${HASHMAIL_PATH}`, {
      method: 'POST',
      body: JSON.stringify({ desc: { stream_id: b64(sid) }, lnd_auth: {} }),
    });
    assert.equal(again.status, 409);
    assert.equal(await server.metric(`grpc_server_handled_total{${create},grpc_code="AlreadyExists"}`), 1);
    // A receive for a box that does not exist: NotFound on the socket and in the metric.
    const stray = await openReceive(server.port, randomSid());
    await stray.awaitEnd();
    await metricIs(`grpc_server_handled_total{${recv},grpc_code="NotFound"}`, 1);
  });

  test('native gRPC calls carry transport="grpc" on the same series names', async () => {
    const client = connect(server.address);
    try {
      await client.createBox(randomSid());
    } finally {
      client.close();
    }
    const create = labels('unary', 'NewCipherBox', 'grpc');
    await metricIs(`grpc_server_started_total{${create}}`, 1);
    await metricIs(`grpc_server_handled_total{${create},grpc_code="OK"}`, 1);
  });
}
