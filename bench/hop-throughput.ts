/**
 * The gateway -> relay hop alone: the gateway's end (RemoteLegacyMailbox and
 * its pool, in this process) writes one-way into a box of a real `hashmail
 * relay` (one-member etcd) and reads it back through the same lane, with no
 * legacy client in front. It prices the hop without the front door's work:
 * what the gateway's end and one relay carry when nothing else competes.
 *
 *   node --import tsx bench/hop-throughput.ts [--size BYTES] [--count N] [--rounds N]
 * Prints MB/s per round.
 */
import { parseArgs } from 'node:util';
import { startEtcd } from '../test/helpers/etcd.js';
import { boxAuth, randomSid } from '../test/helpers/grpc-v1.js';
import { callFrom, testGateway } from '../test/helpers/hop.js';
import { startRelay } from '../test/helpers/server.js';
import { runBench } from './children.js';

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { size: { type: 'string' }, count: { type: 'string' }, rounds: { type: 'string' } } });
  const size = Number(values.size ?? 32 * 1024);
  const count = Number(values.count ?? 3000);
  const rounds = Number(values.rounds ?? 3);
  const etcd = await startEtcd(1);
  const relay = await startRelay({ etcd: etcd.etcdFlag, id: 'hop-bench', config: { mailbox: { rateLimitIntervalMs: 0 } } });
  const gw = await testGateway(etcd.endpoints);
  try {
    for (let round = 0; round < rounds; round++) {
      const call = callFrom(`10.9.0.${round + 1}`);
      const sid = randomSid();
      await gw.mailbox.newCipherBox(boxAuth(sid), call);
      const reader = await gw.mailbox.openReceive(sid, call);
      const writer = await gw.mailbox.openSend({ streamId: sid }, call);
      const msg = Buffer.alloc(size, 1);
      let got = 0;
      const started = process.hrtime.bigint();
      const done = new Promise<void>((resolve) => {
        const pull = (): void => {
          for (;;) {
            const m = reader.take();
            if (m === undefined) return reader.whenReadable(pull);
            reader.settle(m.length);
            if (++got === count) return resolve();
          }
        };
        pull();
      });
      for (let i = 0; i < count; i++) {
        const wait = writer.write(msg);
        if (wait) await wait;
      }
      await done;
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      process.stdout.write(`round ${round + 1}: ${count} x ${size} B through the hop: ${((size * count) / seconds / 1e6).toFixed(1)} MB/s\n`);
      reader.release();
      writer.release();
      await gw.mailbox.delCipherBox(boxAuth(sid), call);
    }
  } finally {
    await gw.close();
    await relay.stop();
    await etcd.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runBench(main);
}
