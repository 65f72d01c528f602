/**
 * Issue 7's benchmark, before and after in one run: the same measurements on
 * two builds of hashmail, each on fresh server processes, the "before" build
 * first: commit f427e43 (before the hardening round), built outside the
 * repository (baseline-build.ts), and this checkout's dist/.
 *
 * 1. RSS pinned by 12 gRPC readers that never read, writers offering 4 MiB
 *    messages until they block, limits.maxBufferedBytes 256 MiB.
 * 2. Descriptors and open connections held 5 s after 200 connections refused
 *    by limits.maxConnectionsPerAddress (2), HTTP/1.1 and h2c.
 * 3. A legacy session's 1 KiB round trips, idle and while 4 WebSocket send
 *    sockets send 450,000-key JSON objects.
 *
 * Runs as the `hardening` phase of `npm run bench` (`--only=hardening` alone;
 * `--baseline=DIR` reuses or keeps the before build).
 */
import { measureJsonStorm, type StormOptions, type StormResult } from './json-storm.js';
import { prepareBaseline, currentLabel } from './baseline-build.js';
import { measureRefusedConnections, type RefusedOptions, type RefusedProtocol, type RefusedResult } from './refused-connections.js';
import type { Outcome } from './report.js';
import { CURRENT_BUILD, startHashmail, type HashmailBuild, type RelayProcess, type StartOptions } from './server-process.js';
import { measureStuckReaders, type StuckReadersOptions, type StuckReadersResult } from './stuck-readers.js';

/** The code before the hardening round. */
export const BASELINE_REF = 'f427e43';
const KiB = 1024;
const MiB = 1024 * KiB;

export const STUCK: StuckReadersOptions = { readers: 12, messageBytes: 4 * MiB, maxMessagesPerWriter: 40, quietMs: 2_000, settleMs: 2_000, timeoutMs: 60_000 };
export const STUCK_CONFIG = { limits: { maxBufferedBytes: 256 * MiB } };
export const REFUSED: Omit<RefusedOptions, 'protocol'> = { allowed: 2, refused: 200, holdMs: 5_000, timeoutMs: 15_000 };
export const REFUSED_CONFIG = { limits: { maxConnectionsPerAddress: REFUSED.allowed } };
export const STORM: StormOptions = {
  sockets: 4,
  keys: 450_000,
  maxPerSocket: 100,
  messageBytes: KiB,
  warmup: 300,
  gapMs: 20,
  idleMs: 3_000,
  stormMs: 10_000,
  maxRoundTrips: 1_000,
  stallMs: 30_000,
};
/** Deployed defaults: the storm needs no limit changed. */
export const STORM_CONFIG = {};

export interface BeforeAfter<T> {
  before: Outcome<T>;
  after: Outcome<T>;
}

export interface HardeningResults {
  beforeLabel: string;
  afterLabel: string;
  stuckReaders: BeforeAfter<StuckReadersResult> | null;
  refused: Record<RefusedProtocol, BeforeAfter<RefusedResult>> | null;
  storm: BeforeAfter<StormResult> | null;
  durationS: number;
  notes: string[];
}

export interface HardeningRunOptions {
  /** A built checkout (or its dist/) of BASELINE_REF; built there if it holds none. Null: a temporary build. */
  baselinePath: string | null;
  log(line: string): void;
  attempt<T>(what: string, fn: () => Promise<T>): Promise<Outcome<T>>;
}

async function withServer<T>(config: Record<string, unknown>, build: HashmailBuild, fn: (relay: RelayProcess) => Promise<T>, options: StartOptions): Promise<T> {
  const relay = await startHashmail(config, build, options);
  try {
    return await fn(relay);
  } finally {
    await relay.stop();
  }
}

export async function runHardening(o: HardeningRunOptions): Promise<HardeningResults> {
  const started = Date.now();
  const results: HardeningResults = { beforeLabel: BASELINE_REF, afterLabel: currentLabel(), stuckReaders: null, refused: null, storm: null, durationS: 0, notes: [] };
  o.log(`hardening: preparing the before build (${BASELINE_REF})`);
  const baseline = prepareBaseline(BASELINE_REF, o.baselinePath, o.log);
  results.beforeLabel = baseline.label;
  const builds = { before: baseline.build, after: CURRENT_BUILD };
  /** Runs `measure` on a fresh server of each build, before first. */
  const both = async <T>(what: string, config: Record<string, unknown>, measure: (relay: RelayProcess) => Promise<T>, options: StartOptions = {}): Promise<BeforeAfter<T>> => {
    o.log(`hardening: ${what}, before`);
    const before = await o.attempt(`${what} (before)`, () => withServer(config, builds.before, measure, options));
    o.log(`hardening: ${what}, after`);
    const after = await o.attempt(`${what} (after)`, () => withServer(config, builds.after, measure, options));
    return { before, after };
  };
  try {
    // The inspector lets the bench force a GC before the last RSS reading.
    results.stuckReaders = await both('stuck gRPC readers', STUCK_CONFIG, (relay) => measureStuckReaders(relay, STUCK), { inspect: true });
    results.refused = {
      http1: await both('refused HTTP/1.1 connections', REFUSED_CONFIG, (relay) => measureRefusedConnections(relay, { ...REFUSED, protocol: 'http1' })),
      h2c: await both('refused h2c connections', REFUSED_CONFIG, (relay) => measureRefusedConnections(relay, { ...REFUSED, protocol: 'h2c' })),
    };
    results.storm = await both('JSON storm', STORM_CONFIG, (relay) => measureJsonStorm(relay, STORM));
  } finally {
    baseline.dispose();
    results.durationS = (Date.now() - started) / 1000;
  }
  return results;
}
