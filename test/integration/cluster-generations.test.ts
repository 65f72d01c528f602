/**
 * Both generations in one cluster session (real etcd, 2 relays, 2 gateways,
 * every process at debug with every trace subsystem on):
 * - a v2 party dialled directly at the owning relay (named by
 *   ServerForMailbox, as the v2 client does) and a legacy party through the
 *   gateways, in both roles: v2 node + legacy app (receive at gateway 1,
 *   send at gateway 2), and legacy node (gRPC, gateway 1) + v2 app;
 * - then, after those exchanges and a legacy-only one (NewCipherBox,
 *   DelCipherBox, "stream not found"), no SID is held anywhere an operator or
 *   an attacker with read access could look: etcd (every key and value),
 *   every process's log at debug, every /metrics. A SID is searched raw, in
 *   hex (either case) and in base64 (standard and URL-safe alphabets), whole
 *   and in windows, so a truncated or re-encoded copy is found too.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { routeOfSid } from '../../src/directory/route.js';
import { Attach } from '../../src/wire/v2-frames.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { connect, peerSid, randomSid, type V1Client } from '../helpers/grpc-v1.js';
import { grpcLookup } from '../helpers/lookup.js';
import { closeParties, grpcParty, type V2Party } from '../helpers/v2-peers.js';
import { openReceive, openSendSocket, readErrorAndEnd, readMessage, restCreateBox, sendMessage, type WsConn } from '../helpers/ws-v1.js';

const MESSAGES = 50;
/** Hex windows: any 12 consecutive bytes of a SID found in hex is a leak. */
const HEX_WINDOW_BYTES = 12;
/** Base64 windows start at multiples of 3 bytes, where their encoding is a substring of the whole one's. */
const BASE64_WINDOW_BYTES = 12;

/** Every text form of `sid` (and of its windows) that must appear nowhere. */
function sidForms(sid: Buffer): string[] {
  const forms = new Set<string>();
  for (let i = 0; i + HEX_WINDOW_BYTES <= sid.length; i++) {
    const hex = sid.subarray(i, i + HEX_WINDOW_BYTES).toString('hex');
    forms.add(hex);
    forms.add(hex.toUpperCase());
  }
  for (let i = 0; i + BASE64_WINDOW_BYTES <= sid.length; i += 3) {
    const part = sid.subarray(i, i + BASE64_WINDOW_BYTES);
    forms.add(part.toString('base64'));
    forms.add(part.toString('base64url'));
  }
  return [...forms];
}

/** Names where in `where` a form of one of `sids` occurs (raw bytes too), or null. */
function findSid(where: Buffer, sids: Buffer[]): string | null {
  const text = where.toString('latin1');
  for (const sid of sids) {
    if (where.includes(sid.subarray(0, HEX_WINDOW_BYTES))) return 'raw SID bytes';
    for (const form of sidForms(sid)) if (text.includes(form)) return `SID text ${form.slice(0, 6)}...`;
  }
  return null;
}

describe('v2 and legacy parties in one cluster session; no SID in etcd, logs or metrics', () => {
  let cluster: Cluster;
  let node: V1Client;
  const parties = new Set<V2Party>();
  const sockets = new Set<WsConn>();
  /** Every SID this file used, checked by the last test. */
  const used: Buffer[] = [];

  before(async () => {
    cluster = await startCluster({ relays: 2, gateways: 2, ttlMs: 3000, config: { log: { level: 'debug' } }, env: { HASHMAIL_TRACE: 'all' } });
    node = connect(cluster.gateways[0].address);
  });
  after(async () => {
    node?.close();
    await closeParties(parties);
    await Promise.all([...sockets].map((s) => s.close()));
    await cluster?.stop();
  });

  function sidPair(): { s2c: Buffer; c2s: Buffer } {
    const s2c = randomSid();
    const c2s = peerSid(s2c);
    used.push(s2c, c2s);
    return { s2c, c2s };
  }

  /** A v2 party at the relay owning `sid`'s session, looked up (and placed) at a gateway as the v2 client does. */
  async function v2AtOwner(sid: Buffer): Promise<V2Party> {
    const answer = await grpcLookup(cluster.gateways[1].address, routeOfSid(sid), true);
    assert.ok(answer.ok, `ServerForMailbox: ${JSON.stringify(answer)}`);
    assert.ok(
      cluster.relays.some((r) => r.address === answer.owner.address),
      `the owner is a relay, not a gateway: ${answer.owner.address}`,
    );
    const p = grpcParty(answer.owner.address);
    parties.add(p);
    return p;
  }

  async function socket(open: Promise<WsConn>): Promise<WsConn> {
    const conn = await open;
    sockets.add(conn);
    return conn;
  }

  test('v2 node at the relay + legacy app through the gateways (receive at gateway 1, send at gateway 2), both ways', async () => {
    const { s2c, c2s } = sidPair();
    const v2Node = await v2AtOwner(c2s);
    // The v2 node reads C2S and writes S2C; its attach makes both boxes, as litd's NewCipherBox calls would.
    assert.equal((await v2Node.hello({ sid: c2s, attach: Attach.Create })).peerPresent, false);
    const recv = await socket(openReceive(cluster.gateways[0].port, s2c));
    const send = await socket(openSendSocket(cluster.gateways[1].port));
    await v2Node.expectPresence(true);
    for (let i = 0; i < MESSAGES; i++) {
      await v2Node.send(Buffer.from(`node -> app ${i}`));
      await sendMessage(send, c2s, Buffer.from(`app -> node ${i}`));
    }
    for (let i = 0; i < MESSAGES; i++) {
      assert.equal((await readMessage(recv, s2c)).toString(), `node -> app ${i}`);
      assert.equal((await v2Node.nextData()).toString(), `app -> node ${i}`);
    }
    await recv.close();
    await send.close();
    await v2Node.expectPresence(false);
  });

  test('legacy node over gRPC through gateway 1 + v2 app at the relay, both ways', async () => {
    const { s2c, c2s } = sidPair();
    // The node as litd: C2S before its first receive, S2C before its first send.
    await node.createBox(c2s);
    const nodeReader = node.openReader(c2s);
    await node.createBox(s2c);
    const nodeWriter = node.openWriter(s2c);
    try {
      const v2App = await v2AtOwner(s2c);
      const welcome = await v2App.hello({ sid: s2c, attach: Attach.Existing });
      // The node's RecvStream on C2S is the app's peer; present once the relay holds it.
      if (!welcome.peerPresent) await v2App.expectPresence(true);
      const toApp = Array.from({ length: MESSAGES }, (_, i) => Buffer.from(`node -> app ${i}`));
      await nodeWriter.writeAll(toApp);
      for (let i = 0; i < MESSAGES; i++) await v2App.send(Buffer.from(`app -> node ${i}`));
      for (let i = 0; i < MESSAGES; i++) {
        assert.equal((await v2App.nextData()).toString(), `node -> app ${i}`);
        assert.equal((await nodeReader.next()).toString(), `app -> node ${i}`);
      }
      await nodeWriter.end();
      await v2App.close();
    } finally {
      nodeReader.cancel();
    }
  });

  test('a legacy exchange with every box call, and an error path, through both gateways', async () => {
    const { s2c, c2s } = sidPair();
    const [gw1, gw2] = cluster.gateways;
    // "stream not found" on the app's first receive, as in every LNC connection.
    const early = await socket(openReceive(gw2.port, s2c));
    assert.match((await readErrorAndEnd(early)).message, /stream not found/);
    await node.createBox(c2s);
    assert.equal((await restCreateBox(gw2.port, s2c)).status, 200);
    const nodeReader = node.openReader(c2s);
    const nodeWriter = node.openWriter(s2c);
    const recv = await socket(openReceive(gw2.port, s2c));
    const send = await socket(openSendSocket(gw1.port));
    try {
      await nodeWriter.write(Buffer.from('hello app'));
      assert.equal((await readMessage(recv, s2c)).toString(), 'hello app');
      await sendMessage(send, c2s, Buffer.from('hello node'));
      assert.equal((await nodeReader.next()).toString(), 'hello node');
      await nodeWriter.end();
    } finally {
      nodeReader.cancel();
      await recv.close();
      await send.close();
    }
    await node.delBox(c2s);
    await node.delBox(s2c);
  });

  test('no SID in etcd (keys and values), in any log at debug, or in any /metrics', async () => {
    assert.equal(used.length, 6, 'the exchanges above ran');
    // The check can fail: a SID written in any of its forms is found.
    assert.ok(findSid(Buffer.from(`x ${used[0].toString('base64url').slice(0, 40)} y`), used));
    assert.ok(findSid(Buffer.from(`{"sid":"${used[1].toString('hex').toUpperCase()}"}`), used));

    const etcd = new Etcd3({ hosts: cluster.etcd.endpoints });
    try {
      const all = await etcd.getAll().prefix('').buffers();
      const keys = Object.keys(all);
      assert.ok(keys.length > 0, 'etcd holds the directory');
      for (const key of keys) {
        assert.equal(findSid(Buffer.from(key, 'latin1'), used), null, `etcd key ${key.slice(0, 60)}`);
        assert.equal(findSid(all[key], used), null, `etcd value of ${key.slice(0, 60)}`);
      }
    } finally {
      etcd.close();
    }

    const processes = [...cluster.gateways.map((g, i) => [`gateway-${i}`, g] as const), ...cluster.relays.map((r, i) => [`relay-${i}`, r] as const)];
    for (const [name, p] of processes) {
      assert.ok(
        p.logs.some((l) => Number(l.level) <= 20),
        `${name} logged at debug (the check sees what an operator tracing it sees)`,
      );
      const logs = Buffer.from(p.logs.map((l) => JSON.stringify(l)).join('\n'));
      assert.equal(findSid(logs, used), null, `${name}: its log`);
      const { status, body } = await p.admin('/metrics');
      assert.equal(status, 200);
      assert.equal(findSid(Buffer.from(body), used), null, `${name}: /metrics`);
    }
  });
});
