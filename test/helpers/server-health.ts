/**
 * What every hardening test checks after its attack: the server is alive, a
 * session unrelated to the attack still relays, the server's file
 * descriptors, open-connection gauge and per-address limit entries are back
 * to where they were, and its RSS stays under a stated bound. Reads the
 * server child's /proc entries (Linux) and its admin metrics.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { connect, randomSid, peerSid, type ConnectOptions, type Reader, type V1Client, type Writer } from './grpc-v1.js';
import type { RunningServer } from './server.js';

/** Polls for the server to release what an attack held: at most this many checks... */
const RECOVERY_ATTEMPTS = 100;
/** ...this far apart (the deadlines under test are configured shorter than this total). */
const RECOVERY_POLL_MS = 100;

export interface ServerFootprint {
  fds: number;
  rssBytes: number;
  openConnections: number;
  connectionAddresses: number;
  boxAddresses: number;
}

export function processFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export function processRssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  assert.ok(kib, 'VmRSS missing from /proc status');
  return Number(kib[1]) * 1024;
}

export async function footprint(server: RunningServer): Promise<ServerFootprint> {
  const pid = server.process.pid!;
  // Metrics first: the admin connection they open (and keep alive) is then in every fd count, the first included.
  const openConnections = (await server.metric('hashmail_open_connections')) ?? NaN;
  const connectionAddresses = (await server.metric('hashmail_connection_addresses')) ?? NaN;
  const boxAddresses = (await server.metric('hashmail_box_addresses')) ?? NaN;
  return { fds: processFds(pid), rssBytes: processRssBytes(pid), openConnections, connectionAddresses, boxAddresses };
}

/**
 * A legacy session (gRPC node reading `sid`, writer to it) opened before an
 * attack and used after it: the attack must not have disturbed it.
 */
export class ProbeSession {
  private readonly client: V1Client;
  private reader: Reader | null = null;
  private writer: Writer | null = null;
  private readonly sid = randomSid();
  private sent = 0;

  /** `options.tlsCa` for a TLS server (its generated `tls.cert`). */
  constructor(server: RunningServer, options?: ConnectOptions) {
    this.client = connect(server.address, options);
  }

  async open(): Promise<this> {
    await this.client.createBox(this.sid);
    await this.client.createBox(peerSid(this.sid));
    this.reader = this.client.openReader(this.sid);
    this.writer = this.client.openWriter(this.sid);
    await this.roundTrip();
    return this;
  }

  /** One message through the session, checked byte for byte. */
  async roundTrip(): Promise<void> {
    assert.ok(this.reader && this.writer, 'probe session not open');
    const msg = Buffer.from(`probe ${this.sent++}`);
    await this.writer.write(msg);
    assert.deepEqual(await this.reader.next(), msg, 'unrelated session relays');
  }

  close(): void {
    this.client.close();
  }
}

export interface RecoveryExpectation {
  /** Extra fds allowed over the baseline (e.g. the probe's own connection). */
  fdSlack?: number;
  /** RSS must stay under this after the attack. */
  rssBoundBytes: number;
  /** What the attack was, for messages. */
  what: string;
}

/**
 * Waits (bounded) until fds, the open-connection gauge and the per-address
 * entries are back at `base`, then checks health, the probe session and RSS.
 * Returns the footprint it ended at.
 */
export async function expectRecovered(
  server: RunningServer,
  base: ServerFootprint,
  probe: ProbeSession,
  expect: RecoveryExpectation,
): Promise<ServerFootprint> {
  const slack = expect.fdSlack ?? 0;
  let now = await footprint(server);
  for (let i = 0; i < RECOVERY_ATTEMPTS; i++) {
    if (
      now.fds <= base.fds + slack &&
      now.openConnections <= base.openConnections &&
      now.connectionAddresses <= base.connectionAddresses &&
      now.boxAddresses <= base.boxAddresses
    ) {
      break;
    }
    await new Promise((r) => setTimeout(r, RECOVERY_POLL_MS));
    now = await footprint(server);
  }
  assert.ok(now.fds <= base.fds + slack, `${expect.what}: fds ${now.fds}, baseline ${base.fds} (+${slack})`);
  assert.ok(now.openConnections <= base.openConnections, `${expect.what}: hashmail_open_connections ${now.openConnections}, baseline ${base.openConnections}`);
  assert.ok(now.connectionAddresses <= base.connectionAddresses, `${expect.what}: hashmail_connection_addresses ${now.connectionAddresses}, baseline ${base.connectionAddresses}`);
  assert.ok(now.boxAddresses <= base.boxAddresses, `${expect.what}: hashmail_box_addresses ${now.boxAddresses}, baseline ${base.boxAddresses}`);
  const health = await server.admin('/healthz');
  assert.equal(health.status, 200, `${expect.what}: /healthz`);
  await probe.roundTrip();
  assert.ok(now.rssBytes < expect.rssBoundBytes, `${expect.what}: RSS ${(now.rssBytes / 2 ** 20).toFixed(1)} MiB, bound ${(expect.rssBoundBytes / 2 ** 20).toFixed(1)} MiB`);
  return now;
}
