import { startEtcd } from './helpers/etcd.js';
import { boxAuth, randomSid } from './helpers/grpc-v1.js';
import { callFrom, testGateway } from './helpers/hop.js';
import { startRelay } from './helpers/server.js';
const size = Number(process.argv[2] ?? 32768), count = Number(process.argv[3] ?? 3000);
const etcd = await startEtcd(1);
const relay = await startRelay({ etcd: etcd.etcdFlag, id: 'r', config: { mailbox: { rateLimitIntervalMs: 0 } } });
const gw = await testGateway(etcd.endpoints);
try {
  for (let round = 0; round < 3; round++) {
    const call = callFrom('10.9.0.' + round); const sid = randomSid();
    await gw.mailbox.newCipherBox(boxAuth(sid), call);
    const reader = await gw.mailbox.openReceive(sid, call); const writer = await gw.mailbox.openSend({ streamId: sid }, call);
    const msg = Buffer.alloc(size, 1); let got = 0; const t0 = process.hrtime.bigint();
    const done = new Promise<void>((resolve) => { const pull = () => { for (;;) { const m = reader.take(); if (m === undefined) { reader.whenReadable(pull); return; } reader.settle(m.length); if (++got === count) return resolve(); } }; pull(); });
    for (let i = 0; i < count; i++) { const p = writer.write(msg); if (p) await p; }
    await done; const s = Number(process.hrtime.bigint() - t0) / 1e9;
    console.log(`hop only: ${(size * count / s / 1e6).toFixed(1)} MB/s`);
    reader.release(); writer.release(); await gw.mailbox.delCipherBox(boxAuth(sid), call);
  }
} finally { await gw.close(); await relay.stop(); await etcd.stop(); }
