/**
 * The hardening part of the report (issue 7): each figure of the before
 * build next to the after build's from the same run, with after / before.
 */
import { BASELINE_REF, REFUSED, STORM, STUCK, STUCK_CONFIG, type BeforeAfter, type HardeningResults } from './hardening.js';
import type { RefusedResult } from './refused-connections.js';
import { PEAK_SAMPLE_MS, type StuckReadersResult } from './stuck-readers.js';
import type { Outcome } from './report.js';
import { fmt, ratio, table } from './stats.js';

const KiB_PER_MiB = 1024;
const BYTES_PER_MiB = 1024 * 1024;
const PROTOCOL_LABEL = { http1: 'HTTP/1.1', h2c: 'HTTP/2 (h2c)' } as const;

/** One table row: a label and a figure of each build; `ratio` false for rows where after / before means nothing. */
function row<T>(label: string, pair: BeforeAfter<T>, value: (v: T) => number | undefined, digits: number, withRatio = true): string[] {
  const get = (o: Outcome<T>): number | undefined => (o.ok ? value(o.value) : undefined);
  const show = (o: Outcome<T>): string => (o.ok ? fmt(value(o.value), digits) : 'failed');
  return [label, show(pair.before), show(pair.after), withRatio ? ratio(get(pair.after), get(pair.before)) : ''];
}

function textRow<T>(label: string, pair: BeforeAfter<T>, text: (v: T) => string): string[] {
  const show = (o: Outcome<T>): string => (o.ok ? text(o.value) : 'failed');
  return [label, show(pair.before), show(pair.after), ''];
}

const liveMiBPerReader = (v: StuckReadersResult): number | undefined =>
  v.externalAfterGcBytes === undefined || v.externalIdleBytes === undefined ? undefined : (v.externalAfterGcBytes - v.externalIdleBytes) / BYTES_PER_MiB / v.readers;

const minus = (a: number | undefined, b: number | undefined): number | undefined => (a === undefined || b === undefined ? undefined : a - b);

function refusedRows(p: BeforeAfter<RefusedResult>, protocol: keyof typeof PROTOCOL_LABEL): string[][] {
  const name = PROTOCOL_LABEL[protocol];
  return [
    row(`${name}: server fds held 5 s after ${REFUSED.refused} refused connections`, p, (v) => v.fdsAfter - v.fdsBase, 0),
    row(`${name}: hashmail_open_connections held then`, p, (v) => minus(v.openAfter, v.openBase), 0),
    row(`${name}: refusals counted (hashmail_limit_hits_total)`, p, (v) => v.limitHits, 0, false),
    textRow(`${name}: next request from the address once the admitted ones closed`, p, (v) => (v.lockoutStatus === 429 ? '**429 (locked out)**' : String(v.lockoutStatus))),
  ];
}

function notes(h: HardeningResults): string[] {
  const out: string[] = [];
  const add = <T extends { note?: string | null }>(what: string, pair: BeforeAfter<T> | null | undefined): void => {
    if (!pair) return;
    for (const [side, o] of [['before', pair.before], ['after', pair.after]] as const) {
      if (!o.ok) out.push(`${what} (${side}): FAILED: ${o.error}`);
      else if (o.value.note) out.push(`${what} (${side}): ${o.value.note}`);
    }
  };
  add('stuck readers', h.stuckReaders);
  add('refused HTTP/1.1', h.refused?.http1);
  add('refused h2c', h.refused?.h2c);
  add('JSON storm', h.storm);
  return out.concat(h.notes);
}

export function renderHardening(h: HardeningResults | null): string[] {
  const parts = ['## 10. Hardening (issue 7): before and after', ''];
  if (!h) return [...parts, 'Not measured (time budget, or not selected with --only).'];
  parts.push(
    `Before: ${h.beforeLabel}; after: ${h.afterLabel} (this checkout's dist/). Each figure on a fresh server process of each build, before first; ${fmt(h.durationS, 0)} s in all. Command: \`npm run bench -- --only=hardening\` (builds ${BASELINE_REF} in a temporary directory and removes it; \`--baseline=DIR\` builds it there once and reuses it).`,
    '',
  );
  const rows: string[][] = [];
  if (h.stuckReaders) {
    const s = h.stuckReaders;
    rows.push(
      row(`RSS growth at the peak, ${STUCK.readers} stuck gRPC readers (MiB)`, s, (v) => (v.rssPeakKiB - v.rssIdleKiB) / KiB_PER_MiB, 1),
      row('RSS growth per stuck reader, peak (MiB)', s, (v) => (v.rssPeakKiB - v.rssIdleKiB) / KiB_PER_MiB / v.readers, 1),
      row('RSS growth per stuck reader, after a full GC (MiB)', s, (v) => (v.rssAfterGcKiB - v.rssIdleKiB) / KiB_PER_MiB / v.readers, 1),
      row('referenced Buffers per stuck reader after a full GC (MiB, nodejs_external_memory_bytes over idle)', s, (v) => liveMiBPerReader(v), 1),
      textRow('server RSS idle → peak → after a full GC (MiB)', s, (v) => [v.rssIdleKiB, v.rssPeakKiB, v.rssAfterGcKiB].map((k) => fmt(k / KiB_PER_MiB, 1)).join(' → ')),
      row('hashmail_buffered_bytes, readers stuck (MiB)', s, (v) => (v.bufferedBytes === undefined ? undefined : v.bufferedBytes / BYTES_PER_MiB), 1),
      row(`${STUCK.messageBytes / BYTES_PER_MiB} MiB messages taken from the writers before they blocked`, s, (v) => v.messagesTaken, 0),
    );
  }
  if (h.refused) rows.push(...refusedRows(h.refused.http1, 'http1'), ...refusedRows(h.refused.h2c, 'h2c'));
  if (h.storm) {
    const s = h.storm;
    rows.push(
      row('legit 1 KiB round trip, idle: p50 ms', s, (v) => v.idle.p50, 2),
      row('idle: p99 ms', s, (v) => v.idle.p99, 2),
      row('idle: max ms', s, (v) => v.idle.max, 2),
      row(`during the JSON storm: p50 ms`, s, (v) => v.storm.p50, 2),
      row('during the JSON storm: p99 ms', s, (v) => v.storm.p99, 2),
      row('during the JSON storm: max ms', s, (v) => v.storm.max, 2),
      textRow('round trips measured idle / during the storm', s, (v) => `${v.idle.count} / ${v.storm.count}`),
      textRow('storm JSON objects sent (answered with a frame)', s, (v) => `${v.tally.sent} of ${fmt(v.jsonBytes / 1e6, 2)} MB (${v.tally.answered})`),
      row('server event-loop delay max during the storm (ms)', s, (v) => v.loopMaxMs, 1),
    );
  }
  parts.push(table(['measurement', 'before', 'after', 'after / before'], rows));
  if (h.storm?.before.ok && h.storm.before.value.tally.firstAnswer) parts.push('', `Server's answer to a storm object (before): \`${h.storm.before.value.tally.firstAnswer}\``);
  if (h.storm?.after.ok && h.storm.after.value.tally.firstAnswer) parts.push('', `Server's answer to a storm object (after): \`${h.storm.after.value.tally.firstAnswer}\``);
  parts.push(
    '',
    `Method: (1) limits.maxBufferedBytes ${STUCK_CONFIG.limits.maxBufferedBytes / BYTES_PER_MiB} MiB; per session a raw HTTP/2 RecvStream that never reads (16 KiB stream window) and a grpc-js SendStream on a connection of its own writing ${STUCK.messageBytes / BYTES_PER_MiB} MiB messages one at a time (at most ${STUCK.maxMessagesPerWriter}) until no writer got one taken for ${STUCK.quietMs / 1000} s; RSS idle is read with every session open, the peak every ${PEAK_SAMPLE_MS} ms until it settles after the writes, then again after a full GC (HeapProfiler.collectGarbage over the inspector: the server starts with \`--inspect=127.0.0.1:0\`). ` +
      `(2) limits.maxConnectionsPerAddress ${REFUSED.allowed}, held by ${REFUSED.allowed} admitted HTTP/2 connections; ${REFUSED.refused} more send a request (HTTP/1.1) or the preface and SETTINGS (h2c), then never read or close; figures over the count before them, ${REFUSED.holdMs / 1000} s after the last. ` +
      `(3) deployed defaults; a session with node and app over gRPC echoes ${STORM.messageBytes / 1024} KiB, one round trip per ${STORM.gapMs} ms at most, ${STORM.idleMs / 1000} s idle, then ${STORM.stormMs / 1000} s while ${STORM.sockets} WebSocket send sockets (another process) each send a ${STORM.keys.toLocaleString('en-US')}-key JSON object, wait for the answer, and dial again (at most ${STORM.maxPerSocket} each).`,
  );
  const n = notes(h);
  if (n.length > 0) parts.push('', ...n.map((x) => `- ${x}`));
  return parts;
}
