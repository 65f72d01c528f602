/**
 * What connections refused by limits.maxConnectionsPerAddress leave behind
 * (issue 7, "every socket is released"). A few admitted HTTP/2 connections
 * take the address's allowance; then N more connections from the same
 * address send a request (HTTP/1.1) or the HTTP/2 preface (h2c) and never
 * read nor close, as an attacker's would. After a fixed hold, the server's
 * descriptors and hashmail_open_connections over the baseline are what the
 * refusals still hold. Then the admitted connections close and one plain
 * request tells whether the address is still locked out (429).
 */
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { fdCount, hashmailMetricSum, type RelayProcess } from './server-process.js';
import { sleep, withTimeout } from './stats.js';

export type RefusedProtocol = 'http1' | 'h2c';

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
/** An empty SETTINGS frame: length 0, type 4, no flags, stream 0. */
const H2_EMPTY_SETTINGS = Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0]);
const HTTP1_REQUEST = Buffer.from('GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
const LIMIT_NAME = 'limits.maxConnectionsPerAddress';
const POLL_MS = 100;
/** After the admitted connections close, how long the gauge may take to show it. */
const RELEASE_WAIT_MS = 2_000;
const HTTP_TOO_MANY_REQUESTS = 429;

export interface RefusedOptions {
  protocol: RefusedProtocol;
  /** The server's limits.maxConnectionsPerAddress: this many admitted connections are held first. */
  allowed: number;
  refused: number;
  /** How long after the last refused connection the server is looked at. */
  holdMs: number;
  timeoutMs: number;
}

export interface RefusedResult {
  protocol: RefusedProtocol;
  refused: number;
  /** hashmail_limit_hits_total{limit="limits.maxConnectionsPerAddress"} over the attack. */
  limitHits: number | undefined;
  fdsBase: number;
  fdsAfter: number;
  openBase: number | undefined;
  openAfter: number | undefined;
  /** Status of a new HTTP/1.1 request once the admitted connections closed (429: the address is still locked out). */
  lockoutStatus: number | string;
  note: string | null;
}

/** An admitted HTTP/2 connection: resolves once the server answered the preface with its SETTINGS. */
function admittedH2(port: number, timeoutMs: number): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  return withTimeout(
    new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      session.once('remoteSettings', () => resolve(session));
      session.once('close', () => reject(new Error('admitted HTTP/2 connection closed before SETTINGS')));
    }),
    timeoutMs,
    'admitted HTTP/2 connection',
  ).catch((err: unknown) => {
    session.destroy();
    throw err;
  });
}

/** A connection that sends `bytes` and then never reads or closes. */
function silentClient(port: number, bytes: Buffer, sockets: net.Socket[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    sockets.push(socket);
    socket.on('error', reject);
    socket.once('connect', () => {
      socket.pause();
      socket.write(bytes, () => resolve());
    });
  });
}

/** Status of one plain GET on the public port (a fresh connection), or the error. */
function probeStatus(port: number, timeoutMs: number): Promise<number | string> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 'no status');
      req.destroy();
    });
    req.on('timeout', () => {
      req.destroy();
      resolve('no answer');
    });
    req.on('error', (err) => resolve(err.message));
  });
}

const limitHits = (admin: string): Promise<number | undefined> => hashmailMetricSum(admin, 'hashmail_limit_hits_total', { limit: LIMIT_NAME });
const openConnections = (admin: string): Promise<number | undefined> => hashmailMetricSum(admin, 'hashmail_open_connections');

export async function measureRefusedConnections(relay: RelayProcess, o: RefusedOptions): Promise<RefusedResult> {
  if (!relay.adminAddress) throw new Error('refused connections: needs hashmail (admin metrics)');
  const admin = relay.adminAddress;
  const port = relay.wsPort;
  const holders: http2.ClientHttp2Session[] = [];
  const sockets: net.Socket[] = [];
  try {
    for (let i = 0; i < o.allowed; i++) holders.push(await admittedH2(port, o.timeoutMs));
    const fdsBase = fdCount(relay.pid);
    const openBase = await openConnections(admin);
    const hitsBase = await limitHits(admin);

    const bytes = o.protocol === 'h2c' ? Buffer.concat([H2_PREFACE, H2_EMPTY_SETTINGS]) : HTTP1_REQUEST;
    await withTimeout(Promise.all(Array.from({ length: o.refused }, () => silentClient(port, bytes, sockets))), o.timeoutMs, 'refused connections');
    // The point of the measurement is what is left after this time, so it is waited out.
    await sleep(o.holdMs);
    const fdsAfter = fdCount(relay.pid);
    const openAfter = await openConnections(admin);
    const hitsAfter = await limitHits(admin);

    for (const h of holders.splice(0)) h.destroy();
    const released = Date.now() + RELEASE_WAIT_MS;
    while (Date.now() < released && ((await openConnections(admin)) ?? 0) > (openAfter ?? 0) - o.allowed) await sleep(POLL_MS);
    const lockoutStatus = await probeStatus(port, o.timeoutMs);
    const hits = hitsAfter !== undefined ? hitsAfter - (hitsBase ?? 0) : undefined;
    return {
      protocol: o.protocol,
      refused: o.refused,
      limitHits: hits,
      fdsBase,
      fdsAfter,
      openBase,
      openAfter,
      lockoutStatus,
      note: hits !== undefined && hits < o.refused ? `only ${hits} of ${o.refused} connections counted as refused by ${LIMIT_NAME}` : null,
    };
  } finally {
    for (const h of holders) h.destroy();
    for (const s of sockets) s.destroy();
  }
}

export const isLockedOut = (r: RefusedResult): boolean => r.lockoutStatus === HTTP_TOO_MANY_REQUESTS;
