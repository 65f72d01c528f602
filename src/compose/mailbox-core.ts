/**
 * The parts every composition shares: counters, the session table, the
 * legacy and v2 mailboxes on it, the session router (fencing against the
 * directory), metrics, and the route lookup both lookup transports answer.
 */
import type { Config } from '../config/schema.js';
import type { Directory } from '../directory/directory.js';
import { lookupRoute, type RouteLookup } from '../directory/route-lookup.js';
import { KeyedQuota } from '../session/keyed-quota.js';
import { subsystemLogger, type Logger } from '../observe/logger.js';
import { Metrics } from '../observe/metrics.js';
import { RefusalLog } from '../observe/refusal-log.js';
import { RelayStats } from '../observe/stats.js';
import { LegacyMailbox } from '../relay/legacy-mailbox.js';
import { IdleMappings } from '../relay/idle-mappings.js';
import { SessionRouter } from '../relay/session-router.js';
import { V2Mailbox } from '../relay/v2-mailbox.js';
import { SessionTable } from '../session/session-table.js';

export interface MailboxCore {
  stats: RelayStats;
  refusalLog: RefusalLog;
  limitHit(configKey: string, client: string): void;
  table: SessionTable;
  legacy: LegacyMailbox;
  v2: V2Mailbox;
  router: SessionRouter;
  metrics: Metrics;
  lookup: RouteLookup;
  /** Releases the directory mappings of sessions gone from the table (etcd only; null on the memory backend). */
  idleMappings: IdleMappings | null;
}

/** Sweep period of the idle mappings and how many one sweep releases at most. */
const IDLE_SWEEP_MS = 1000;
const IDLE_RELEASES_PER_SWEEP = 2000;

export function buildMailboxCore(config: Config, logger: Logger, directory: Directory): MailboxCore {
  const stats = new RelayStats();
  const refusalLog = new RefusalLog(logger, config.log.refusalLogIntervalMs);
  stats.badRequestLog = refusalLog;
  const limitHit = (configKey: string, client: string): void => {
    stats.countLimit(configKey);
    refusalLog.refused(configKey, client);
  };
  const m = config.mailbox;
  const releaseMs = config.directory.releaseIdleMappingsMs;
  const idleMappings =
    directory.backend === 'etcd' && releaseMs > 0
      ? new IdleMappings(directory, { graceMs: releaseMs, sweepEveryMs: Math.min(IDLE_SWEEP_MS, releaseMs), maxPerSweep: IDLE_RELEASES_PER_SWEEP }, subsystemLogger(logger, 'directory'))
      : null;
  const table = new SessionTable(
    {
      bufferBytes: m.bufferBytes,
      rateLimit: m.rateLimitIntervalMs > 0 ? { intervalMs: m.rateLimitIntervalMs, burst: m.rateLimitBurst } : null,
      acquireWaitMs: m.acquireWaitMs,
      maxBoxes: config.limits.maxBoxes,
      maxBoxesPerAddress: config.limits.maxBoxesPerAddress,
      maxBufferedBytes: config.limits.maxBufferedBytes,
      maxBufferedBytesPerAddress: config.limits.maxBufferedBytesPerAddress,
      staleTimeoutMs: m.staleTimeoutMs,
    },
    {
      limitHit,
      rateLimited: () => {
        stats.rateLimitedWaits++;
      },
      ...(idleMappings ? { sessionOpened: (key: string) => idleMappings.sessionOpened(key), sessionClosed: (key: string) => idleMappings.sessionClosed(key) } : {}),
    },
  );
  const router = new SessionRouter(directory, logger, config.v2.creatorWaitMs, undefined, (route) => idleMappings?.releasing(route));
  if (idleMappings) {
    // After the router has ended their parties (its listeners come first): a session whose route this relay lost
    // (moved, or the relay was fenced) is dropped. Never served here again, its boxes would hold their unread
    // messages and count as load and against limits until their stale timeout; and if the route came back here
    // later, messages from before the move would be served after newer ones sent through its other owner.
    directory.on('routeLost', (route) => {
      const key = idleMappings.sessionKeyOf(route);
      if (key !== undefined) table.dropSession(key);
    });
    directory.on('fenceLost', () => {
      for (const key of idleMappings.heldSessionKeys()) table.dropSession(key);
    });
  }
  // HASHMAIL_TRACE=relay shows every attach and detach without raising the global level.
  const relayLogger = subsystemLogger(logger, 'relay');
  const legacy = new LegacyMailbox(table, stats, { maxMessageBytes: m.maxMessageBytes, logger: relayLogger });
  const v2 = new V2Mailbox(
    table,
    stats,
    { windowBytes: config.v2.windowBytes, maxMessageBytes: config.v2.maxMessageBytes, logger: relayLogger },
    router,
  );
  const metrics = new Metrics({ stats, table, sessionRateWindowMs: config.metrics.sessionRateWindowMs });
  const count = (result: string): void => stats.countLookup(result);
  stats.lookupsWaiting = () => directory.lookupsWaiting;
  stats.instancesSeen = () => directory.instances();
  const waitCapMs = config.directory.lookupWaitMaxMs;
  // Held lookups per client address (route-lookup.ts HeldLookupQuota): one per party, as many as its boxes.
  const heldQuota = new KeyedQuota(config.limits.maxBoxesPerAddress);
  const lookup: RouteLookup = (route, { wait, ...ask }) =>
    lookupRoute(directory, route, wait && waitCapMs > 0 ? { ...ask, wait: { ...wait, ms: Math.min(wait.ms, waitCapMs) } } : ask, count, heldQuota);
  if (idleMappings) stats.idleMappings = idleMappings;
  return { stats, refusalLog, limitHit, table, legacy, v2, router, metrics, lookup, idleMappings };
}
