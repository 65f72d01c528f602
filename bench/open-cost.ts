/**
 * What opening one v2 session costs: CPU of the client library and of the
 * server per session, for pairs opened through `connect` against one
 * `hashmail serve` (a lookup, a dial and an attach per party). A relay
 * death makes every party of the dead relay do this work again at once, so
 * this is the unit cost of a re-join wave (bench/rejoin.ts).
 *
 *   node --import tsx bench/open-cost.ts [--sessions 2000] [--node grpc|websocket] [--app grpc|websocket] [--in-flight 20]
 * Every pair is opened after a warm-up of 50; the parties stay open until
 * the end, so a process holds 2 x sessions parties at one server. Prints
 * one JSON line: wall, client CPU (user + system) and server CPU (from
 * /proc) per session, and the opens that failed with their messages.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { connect, type MailboxConnection, type TransportName } from '../src/client/index.js';
import { runBench } from './children.js';
import { BENCH_LIMITS, cpuMs, startHashmail } from './server-process.js';
import { runBounded } from './stats.js';

const WARM_UP = 50;
function transportOf(value: string | undefined, fallback: TransportName): TransportName {
  const t = value ?? fallback;
  if (t !== 'grpc' && t !== 'websocket') throw new Error(`transport: grpc or websocket, not ${t}`);
  return t;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { sessions: { type: 'string' }, node: { type: 'string' }, app: { type: 'string' }, 'in-flight': { type: 'string' } } });
  const sessions = Number(values.sessions ?? 2000);
  const inFlight = Number(values['in-flight'] ?? 20);
  const nodeTransport = transportOf(values.node, 'grpc');
  const appTransport = transportOf(values.app, 'websocket');
  // As an application on the built package: no source-mapped stack traces (tsx turns them on).
  process.setSourceMapsEnabled(false);
  const server = await startHashmail({ limits: BENCH_LIMITS });
  const open: MailboxConnection[] = [];
  const pair = async (): Promise<void> => {
    const nodeSid = randomBytes(64);
    const appSid = Buffer.from(nodeSid);
    appSid[63] ^= 1;
    const base = { server: server.grpcAddress, insecure: true, protocol: 'v2' as const };
    open.push(await connect({ ...base, sid: nodeSid, role: 'node', transport: nodeTransport }));
    open.push(await connect({ ...base, sid: appSid, role: 'app', transport: appTransport }));
  };
  try {
    const warmErrors = await runBounded(WARM_UP, inFlight, pair);
    if (warmErrors.length > 0) throw warmErrors[0];
    const cpu0 = process.cpuUsage();
    const server0 = cpuMs(server.pid);
    const t0 = performance.now();
    const errors = await runBounded(sessions, inFlight, pair);
    const wallMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const serverMs = cpuMs(server.pid) - server0;
    const per = (ms: number): number => Number((ms / sessions).toFixed(3));
    console.log(
      JSON.stringify({
        sessions,
        node: nodeTransport,
        app: appTransport,
        inFlight,
        wallMs: Math.round(wallMs),
        perSessionMs: { wall: per(wallMs), client: per((cpu.user + cpu.system) / 1000), clientSystem: per(cpu.system / 1000), server: per(serverMs) },
        failed: errors.length,
        failures: [...new Set(errors.map((e) => e.message))].slice(0, 3),
      }),
    );
  } finally {
    await Promise.all(open.map((c) => c.close().catch(() => undefined)));
    await server.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runBench(main);
}
