/**
 * A client process that opens many boxes and streams on a server, reports
 * "ready" on stdout, and then does nothing until it is killed: killing it
 * (SIGKILL) is a client vanishing without ending a single call, which an
 * in-process client cannot imitate (a closed grpc-js channel keeps its calls).
 *
 * Usage: node --import tsx test/helpers/vanishing-client.ts HOST:PORT GRPC_READERS WS_READERS GRPC_WRITERS
 * Creates GRPC_READERS + WS_READERS boxes; GRPC_WRITERS write one message each
 * into the boxes the WebSocket readers read.
 */
import { randomBytes } from 'node:crypto';
import { connectGrpc, createBox, GrpcReader, GrpcSender, type LegacyClient } from './grpc-v1-peer.js';
import { openReceive, type WsConn } from './ws-v1.js';

const GRPC_CHANNELS = 5;
const BATCH = 50;

async function inBatches<T>(items: T[], fn: (item: T, index: number) => Promise<void>): Promise<void> {
  for (let i = 0; i < items.length; i += BATCH) await Promise.all(items.slice(i, i + BATCH).map((item, j) => fn(item, i + j)));
}

async function main(): Promise<void> {
  const [address, grpcReadersArg, wsReadersArg, grpcWritersArg] = process.argv.slice(2);
  const grpcReaders = Number(grpcReadersArg);
  const wsReaders = Number(wsReadersArg);
  const grpcWriters = Number(grpcWritersArg);
  const port = Number(address.slice(address.lastIndexOf(':') + 1));
  const channels: LegacyClient[] = [];
  for (let i = 0; i < GRPC_CHANNELS; i++) channels.push(connectGrpc(address, { 'grpc.use_local_subchannel_pool': 1 }));
  const sids = Array.from({ length: grpcReaders + wsReaders }, () => randomBytes(64));
  // Held so nothing is collected; never ended.
  const held: (GrpcReader | GrpcSender | WsConn)[] = [];
  // Each box is attached right after it is created: a test may run with a short stale timeout.
  await inBatches(sids, async (sid, i) => {
    const channel = channels[i % GRPC_CHANNELS];
    await createBox(channel, sid);
    if (i < grpcReaders) {
      held.push(new GrpcReader(channel, sid));
      return;
    }
    held.push(await openReceive(port, sid));
    if (i < grpcReaders + grpcWriters) {
      const w = new GrpcSender(channel);
      held.push(w);
      await w.write(sid, Buffer.from('hello'));
    }
  });
  process.stdout.write(`${JSON.stringify({ ready: true, boxes: sids.length, streams: held.length })}\n`);
  // Stay alive until killed.
  setInterval(() => undefined, 60_000);
}

main().catch((err: unknown) => {
  process.stderr.write(`vanishing-client: ${String(err)}\n`);
  process.exit(1);
});
