/**
 * Memory per idle legacy session carried over the gateway hop: one relay
 * process on a one-member etcd, the gateway's end (RemoteLegacyMailbox +
 * RelayPool) in this process. Each session is what LNC holds: two boxes,
 * and on each a carried reader and a carried writer (4 hop calls). Reports
 * the relay's RSS and the gateway end's RSS and heap per session, after GC
 * (run with --expose-gc). Runs on its own (needs `npm run build`):
 *   node --expose-gc --import tsx bench/hop-memory.ts [--sessions N]
 */
import { parseArgs } from 'node:util';
import type { LegacyReceive, LegacySend } from '../src/relay/legacy-operations.js';
import { startEtcd } from '../test/helpers/etcd.js';
import { boxAuth, peerSid, randomSid } from '../test/helpers/grpc-v1.js';
import { callFrom, testGateway } from '../test/helpers/hop.js';
import { startRelay } from '../test/helpers/server.js';
import { rssKiB } from './server-process.js';

const DEFAULT_SESSIONS = 2000;
const OPEN_CONCURRENCY = 100;
const SETTLE_MS = 2000;

const { values } = parseArgs({ options: { sessions: { type: 'string' } } });
const sessions = Number(values.sessions ?? DEFAULT_SESSIONS);

async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    (globalThis as { gc?: () => void }).gc?.();
    await new Promise((r) => setTimeout(r, SETTLE_MS / 3));
  }
}

const etcd = await startEtcd(1);
const relay = await startRelay({ etcd: etcd.etcdFlag, id: 'bench-relay', config: { mailbox: { staleTimeoutMs: -1 } } });
const gw = await testGateway(etcd.endpoints);
const held: (LegacyReceive | LegacySend)[] = [];
try {
  // Warm up: one session opened and closed, so lazily built parts are not counted per session.
  const warm = randomSid();
  await gw.mailbox.newCipherBox(boxAuth(warm), callFrom('10.255.0.1'));
  (await gw.mailbox.openReceive(warm, callFrom('10.255.0.1'))).release();
  await settle();
  const relayBefore = rssKiB(relay.process.pid as number);
  const gwBefore = process.memoryUsage();
  for (let start = 0; start < sessions; start += OPEN_CONCURRENCY) {
    await Promise.all(
      Array.from({ length: Math.min(OPEN_CONCURRENCY, sessions - start) }, async (_, k) => {
        const i = start + k;
        const call = callFrom(`10.${(i >> 8) & 255}.${i & 255}.1`);
        const a = randomSid();
        const b = peerSid(a);
        await gw.mailbox.newCipherBox(boxAuth(a), call);
        await gw.mailbox.newCipherBox(boxAuth(b), call);
        held.push(await gw.mailbox.openReceive(a, call), await gw.mailbox.openReceive(b, call));
        held.push(await gw.mailbox.openSend({ streamId: a }, call), await gw.mailbox.openSend({ streamId: b }, call));
      }),
    );
  }
  await settle();
  const relayAfter = rssKiB(relay.process.pid as number);
  const gwAfter = process.memoryUsage();
  const per = (after: number, before: number): string => ((after - before) / sessions).toFixed(1);
  console.log(`sessions: ${sessions} (hop calls: ${held.length}, hop connections: ${gw.pool.connections})`);
  console.log(`relay RSS: ${per(relayAfter, relayBefore)} KiB/session`);
  console.log(
    `gateway end RSS: ${per(gwAfter.rss / 1024, gwBefore.rss / 1024)} KiB/session, heap used: ${per(gwAfter.heapUsed / 1024, gwBefore.heapUsed / 1024)}, ` +
      `heap total: ${per(gwAfter.heapTotal / 1024, gwBefore.heapTotal / 1024)}, external: ${per(gwAfter.external / 1024, gwBefore.external / 1024)} KiB/session`,
  );
} finally {
  for (const h of held) h.release();
  await gw.close();
  await relay.stop();
  await etcd.stop();
}
