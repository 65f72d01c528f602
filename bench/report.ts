/**
 * Turns the measured results into markdown: one table per measurement, each
 * hashmail figure next to the direct-pipe baseline of the same run, with the
 * ratio, the aim and the reference Go server's figure from the issue.
 */
import type { IdleMemoryResult } from './idle-memory.js';
import type { LatencyResult } from './latency.js';
import type { RampResult } from './browser-ramp.js';
import type { HardeningResults } from './hardening.js';
import { renderHardening } from './report-hardening.js';
import { notesV2, renderV2, spreadsV2, type V2Results } from './report-v2.js';
import { fmt, ratio, table } from './stats.js';
import type { ThroughputResult } from './throughput.js';

/** A measurement or why it could not be made. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: string };

export interface LatencyRow {
  label: string;
  reference: string;
  hashmail: Outcome<LatencyResult>;
  direct: Outcome<LatencyResult>;
}

export interface ThroughputRow {
  label: string;
  reference: string;
  hashmail: Outcome<ThroughputResult>;
  direct: Outcome<ThroughputResult>;
}

export interface Results {
  machine: Record<string, string>;
  startedAt: string;
  durationS: number;
  hashmailConfig: Record<string, unknown>;
  latency: LatencyRow[];
  throughput: ThroughputRow[];
  rateLimited: { label: string; result: Outcome<ThroughputResult> }[];
  idle: { hashmail: Outcome<IdleMemoryResult>; direct: Outcome<IdleMemoryResult> } | null;
  ramp: Outcome<RampResult> | null;
  v2: V2Results;
  hardening: HardeningResults | null;
  /** Phases run (after --only). */
  phases: string[];
  notes: string[];
}

const cell = <T>(o: Outcome<T>, f: (v: T) => string): string => (o.ok ? f(o.value) : 'failed');
const val = <T>(o: Outcome<T>, f: (v: T) => number): number | undefined => (o.ok ? f(o.value) : undefined);

function latencyTable(rows: LatencyRow[]): string {
  return table(
    ['round trip (app → node → app)', 'hashmail p50 ms', 'hashmail p99 ms', 'direct p50 ms', 'direct p99 ms', 'p50 ratio', 'p99 ratio', 'Go reference'],
    rows.map((r) => [
      r.label,
      cell(r.hashmail, (v) => fmt(v.p50, 3)),
      cell(r.hashmail, (v) => fmt(v.p99, 3)),
      cell(r.direct, (v) => fmt(v.p50, 3)),
      cell(r.direct, (v) => fmt(v.p99, 3)),
      ratio(val(r.hashmail, (v) => v.p50), val(r.direct, (v) => v.p50)),
      ratio(val(r.hashmail, (v) => v.p99), val(r.direct, (v) => v.p99)),
      r.reference,
    ]),
  );
}

function throughputTable(rows: ThroughputRow[]): string {
  return table(
    ['one way', 'hashmail msgs/s', 'hashmail MB/s', 'direct msgs/s', 'direct MB/s', 'ratio', 'Go reference'],
    rows.map((r) => [
      r.label,
      cell(r.hashmail, (v) => fmt(v.msgsPerSec, 0)),
      cell(r.hashmail, (v) => fmt(v.mbPerSec, 1)),
      cell(r.direct, (v) => fmt(v.msgsPerSec, 0)),
      cell(r.direct, (v) => fmt(v.mbPerSec, 1)),
      ratio(val(r.hashmail, (v) => v.mbPerSec), val(r.direct, (v) => v.mbPerSec)),
      r.reference,
    ]),
  );
}

function idleTable(idle: NonNullable<Results['idle']>): string {
  const row = (name: string, o: Outcome<IdleMemoryResult>): string[] => [
    name,
    cell(o, (v) => `${v.held} / ${v.requested}`),
    cell(o, (v) => fmt(v.rssBeforeKiB / 1024, 1)),
    cell(o, (v) => fmt(v.rssAfterKiB / 1024, 1)),
    cell(o, (v) => fmt(v.kibPerSession, 1)),
    cell(o, (v) => fmt(v.heapKibPerSession, 1)),
    cell(o, (v) => `${v.fdsBefore} → ${v.fdsAfter}`),
    cell(o, (v) => `${v.verifiedOk} ok, ${v.verifyFailed} failed`),
  ];
  return [
    table(
      ['server', 'sessions held', 'RSS before MiB', 'RSS after MiB', 'RSS KiB / session', 'V8 heap KiB / session', 'server fds', 'relayed after'],
      [row('hashmail', idle.hashmail), row('direct pipe (floor)', idle.direct)],
    ),
    '',
    `Ratio hashmail / floor (RSS per session): ${ratio(val(idle.hashmail, (v) => v.kibPerSession), val(idle.direct, (v) => v.kibPerSession))}. Aim: < 40 KiB; Go reference: about 280 KiB.`,
  ].join('\n');
}

function rampTable(ramp: RampResult): string {
  return [
    table(
      ['sessions', 'held', 'open failed', 'relayed both ways', 'relay failed', 'relay p50 ms', 'relay p99 ms', 'relay max ms', 'server RSS MiB', 'server fds'],
      ramp.steps.map((s) => [
        String(s.target),
        String(s.held),
        String(s.openFailed),
        String(s.verifiedOk),
        String(s.verifyFailed),
        fmt(s.verify.p50, 1),
        fmt(s.verify.p99, 1),
        fmt(s.verify.max, 1),
        fmt(s.rssKiB / 1024, 1),
        String(s.fds),
      ]),
    ),
    '',
    `Most sessions held with every one relaying: **${ramp.maxClean}** (${ramp.stoppedBy}). Aim: ~6,000 with no stall; Go reference stalls at about 125.`,
  ].join('\n');
}

function notesOf(r: Results): string[] {
  const out: string[] = [];
  const add = (what: string, o: Outcome<{ note?: string | null }> | undefined): void => {
    if (!o) return;
    if (!o.ok) out.push(`${what}: FAILED: ${o.error}`);
    else if (o.value.note) out.push(`${what}: ${o.value.note}`);
  };
  for (const row of r.latency) {
    add(`latency ${row.label} (hashmail)`, row.hashmail);
    add(`latency ${row.label} (direct)`, row.direct);
  }
  for (const row of r.throughput) {
    add(`throughput ${row.label} (hashmail)`, row.hashmail);
    add(`throughput ${row.label} (direct)`, row.direct);
    for (const [name, o] of [['hashmail', row.hashmail], ['direct', row.direct]] as const) {
      if (o.ok && o.value.outOfOrder > 0) out.push(`throughput ${row.label} (${name}): ${o.value.outOfOrder} messages out of order`);
    }
  }
  if (r.idle) {
    for (const [name, o] of [['hashmail', r.idle.hashmail], ['direct', r.idle.direct]] as const) {
      if (!o.ok) out.push(`idle memory (${name}): FAILED: ${o.error}`);
      else if (o.value.errors.length > 0) out.push(`idle memory (${name}) errors: ${o.value.errors.join('; ')}`);
    }
  }
  if (r.ramp && !r.ramp.ok) out.push(`browser ramp: FAILED: ${r.ramp.error}`);
  if (r.ramp?.ok) for (const s of r.ramp.value.steps) if (s.errors.length > 0) out.push(`browser ramp step ${s.target} errors: ${s.errors.join('; ')}`);
  return out.concat(notesV2(r.v2), r.notes);
}

export function renderMarkdown(r: Results): string {
  const parts = [
    '# hashmail benchmark results',
    '',
    `Run ${r.startedAt}, ${fmt(r.durationS, 0)} s. Machine: ${Object.entries(r.machine)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}.`,
    '',
    `Phases: ${r.phases.join(', ')}.`,
    '',
    '## 1. Ping-pong latency',
    '',
    r.latency.length > 0 ? latencyTable(r.latency) : 'Not measured.',
    '',
    '## 2. One-way throughput (hashmail with mailbox.rateLimitIntervalMs 0)',
    '',
    r.throughput.length > 0 ? throughputTable(r.throughput) : 'Not measured.',
    '',
  ];
  if (r.rateLimited.length > 0) {
    parts.push(
      'At the default rate limit (20 ms / burst 1000):',
      '',
      table(
        ['one way', 'sent', 'read', 'elapsed s', 'msgs/s', 'MB/s'],
        r.rateLimited.map((x) => [
          x.label,
          cell(x.result, (v) => String(v.sent)),
          cell(x.result, (v) => String(v.received)),
          cell(x.result, (v) => fmt(v.elapsedMs / 1000, 2)),
          cell(x.result, (v) => fmt(v.msgsPerSec, 0)),
          cell(x.result, (v) => fmt(v.mbPerSec, 2)),
        ]),
      ),
      '',
    );
  }
  parts.push('## 3. Server memory per idle legacy session', '');
  parts.push(r.idle ? idleTable(r.idle) : 'Not measured (time budget, or not selected with --only).');
  if (r.idle?.hashmail.ok) parts.push('', `hashmail's own view with the sessions open: ${JSON.stringify(r.idle.hashmail.value.serverView)}`);
  parts.push('', '## 4. Concurrent browser sessions', '');
  parts.push(r.ramp === null ? 'Not measured (time budget, or not selected with --only).' : r.ramp.ok ? rampTable(r.ramp.value) : `Failed: ${r.ramp.error}`);
  parts.push('', ...renderV2(r.v2, { idle: r.idle }));
  parts.push('', ...renderHardening(r.hardening));
  const spreads: string[] = [];
  for (const row of [...r.latency, ...r.throughput]) {
    for (const [name, o] of [['hashmail', row.hashmail], ['direct', row.direct]] as const) {
      if (o.ok && o.value.spread) spreads.push(`${row.label}, ${name}: ${o.value.spread}`);
    }
  }
  spreads.push(...spreadsV2(r.v2));
  if (spreads.length > 0) parts.push('', '## Per-repetition figures (latency and throughput)', '', ...spreads.map((x) => `- ${x}`));
  const notes = notesOf(r);
  if (notes.length > 0) parts.push('', '## Notes', '', ...notes.map((n) => `- ${n}`));
  return `${parts.join('\n')}\n`;
}
