/**
 * Placement balance (issue 8 benchmark): max/mean sessions per relay for
 * 10,000 new sessions over 8 relays, `random` against `load-aware` (power of
 * two choices), through the real placement path: 8 `hashmail relay`
 * processes on one etcd, each asked in turn to place a new route with
 * `GET /v2/relay?route=ROUTE&create=1` (as parties asking different relays
 * do), `--in-flight` placements at once (default 64). The relay each
 * session landed on is the lookup's answer. The placement rate cap is off
 * (it is a storm guard, not what this measures). Each policy runs
 * `--rounds` times, each round on fresh relays; the table gives every round
 * and the median.
 *   node --import tsx bench/placement-balance.ts [--sessions 10000] [--relays 8] [--rounds 3] [--in-flight 64]
 * It starts a one-member etcd (test/helpers/etcd.ts) and stops it.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import { parseArgs } from 'node:util';
import type { PlacementPolicy } from '../src/directory/placement.js';
import { freePort, startEtcd, type EtcdCluster } from '../test/helpers/etcd.js';
import { CURRENT_BUILD, startHashmail, type RelayProcess } from './server-process.js';
import { fmt, median, table } from './stats.js';

/** Keep-alive connections per relay the placing client holds. */
const SOCKETS_PER_RELAY = 16;
/** Bound on one lookup (ms). */
const LOOKUP_TIMEOUT_MS = 10_000;
/** Placements per relay at most, before the measured ones, until every relay took one. */
const PROBE_ROUNDS = 20;

export interface BalanceRound {
  policy: PlacementPolicy;
  /** Sessions per relay, in start order. */
  perRelay: number[];
  maxOverMean: number;
  minOverMean: number;
  seconds: number;
}

/** `GET /v2/relay?route=ROUTE&create=1` on `port`: the owner's id. */
function place(port: number, agent: http.Agent): Promise<string> {
  const route = randomBytes(32).toString('base64url');
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: `/v2/relay?route=${route}&create=1`, agent, timeout: LOOKUP_TIMEOUT_MS }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`lookup answered ${res.statusCode}: ${body}`));
        resolve((JSON.parse(body) as { id: string }).id);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('lookup timed out')));
    req.on('error', reject);
  });
}

async function startRelays(etcd: EtcdCluster, policy: PlacementPolicy, count: number): Promise<RelayProcess[]> {
  const relays: RelayProcess[] = [];
  try {
    // One after the other: several Node processes starting at once on two cores can miss the start timeout.
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      relays.push(
        await startHashmail({ directory: { placement: policy, maxPlacementsPerSecond: 0 } }, CURRENT_BUILD, {
          command: 'relay',
          listen: `127.0.0.1:${port}`,
          args: ['--etcd', etcd.etcdFlag, '--advertise', `127.0.0.1:${port}`, '--id', `relay-${i}`],
        }),
      );
    }
    return relays;
  } catch (err) {
    await Promise.all(relays.map((r) => r.stop()));
    throw err;
  }
}

/** One round: `sessions` placements through `relays` fresh relay processes with `policy`. */
export async function measureBalance(etcd: EtcdCluster, policy: PlacementPolicy, sessions: number, relayCount: number, inFlight: number): Promise<BalanceRound> {
  const relays = await startRelays(etcd, policy, relayCount);
  const agent = new http.Agent({ keepAlive: true, maxSockets: SOCKETS_PER_RELAY });
  try {
    // Every relay must see the others before the first placement, or the first ones all land on the asked relay.
    // The probe's placements count as sessions on those relays too (a few dozen at most).
    const counts = new Map<string, number>();
    const note = (id: string): void => void counts.set(id, (counts.get(id) ?? 0) + 1);
    for (let i = 0; i < PROBE_ROUNDS * relayCount && counts.size < relayCount; i++) note(await place(relays[i % relayCount].wsPort, agent));
    if (counts.size < relayCount) throw new Error(`the relays did not all take placements: ${[...counts.keys()].join(', ')}`);
    let next = 0;
    const started = process.hrtime.bigint();
    const worker = async (): Promise<void> => {
      while (next < sessions) {
        const i = next++;
        note(await place(relays[i % relayCount].wsPort, agent));
      }
    };
    await Promise.all(Array.from({ length: inFlight }, worker));
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const perRelay = relays.map((_, i) => counts.get(`relay-${i}`) ?? 0);
    const mean = perRelay.reduce((a, b) => a + b, 0) / relayCount;
    return { policy, perRelay, maxOverMean: Math.max(...perRelay) / mean, minOverMean: Math.min(...perRelay) / mean, seconds };
  } finally {
    agent.destroy();
    await Promise.all(relays.map((r) => r.stop()));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { sessions: { type: 'string' }, relays: { type: 'string' }, rounds: { type: 'string' }, 'in-flight': { type: 'string' } },
  });
  const sessions = Number(values.sessions ?? 10_000);
  const relays = Number(values.relays ?? 8);
  const rounds = Number(values.rounds ?? 3);
  const inFlight = Number(values['in-flight'] ?? 64);
  if (!(sessions > 0 && relays >= 2 && rounds >= 1 && inFlight >= 1)) throw new Error('--sessions > 0, --relays >= 2, --rounds >= 1, --in-flight >= 1');
  const etcd = await startEtcd(1);
  try {
    const results: BalanceRound[] = [];
    // Alternating, so that neither policy always meets a fuller etcd.
    for (let r = 0; r < rounds; r++) {
      for (const policy of ['random', 'load-aware'] as const) results.push(await measureBalance(etcd, policy, sessions, relays, inFlight));
    }
    const rows = results.map((r, i) => [
      `${r.policy}, round ${Math.floor(i / 2) + 1}`,
      r.perRelay.join(' / '),
      fmt(r.maxOverMean, 3),
      fmt(r.minOverMean, 3),
      `${fmt(sessions / r.seconds, 0)}/s`,
    ]);
    for (const policy of ['random', 'load-aware'] as const) {
      const mine = results.filter((r) => r.policy === policy);
      rows.push([`**${policy}, median**`, '', `**${fmt(median(mine.map((r) => r.maxOverMean)), 3)}**`, fmt(median(mine.map((r) => r.minOverMean)), 3), '']);
    }
    process.stdout.write(
      `\`node --import tsx bench/placement-balance.ts --sessions ${sessions} --relays ${relays} --rounds ${rounds} --in-flight ${inFlight}\`\n\n` +
        `${sessions} new sessions over ${relays} relay processes on one etcd, each relay asked in turn, ${inFlight} placements in flight; the counts include the few placements that first check every relay takes one (at most ${PROBE_ROUNDS * relays}). Aim: load-aware max/mean <= 1.05.\n\n` +
        `${table(['policy, round', 'sessions per relay', 'max / mean', 'min / mean', 'placements'], rows)}\n`,
    );
  } finally {
    await etcd.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
