/**
 * The protocol-v2 part of the report: every v2 figure next to the v2 direct
 * pipe of the same run and next to v1's figure of the same shape (also of
 * the same run), with the aims of the issue judged met / not met from the
 * numbers, and the projection to 100,000 idle v2 sessions.
 */
import type { SteadyLoadResult } from './concurrency.js';
import type { IdleMemoryResult } from './idle-memory.js';
import type { LatencyResult } from './latency.js';
import type { Outcome } from './report.js';
import type { V2Shape } from './session.js';
import { fmt, ratio, table } from './stats.js';
import type { ThroughputResult } from './throughput.js';

export interface V2LatencyRow {
  label: string;
  shape: V2Shape;
  hashmail: Outcome<LatencyResult>;
  direct: Outcome<LatencyResult>;
  /** v1 of the same shape in this run (null: no such v1 case, or v1 not run). */
  v1Label: string | null;
  v1: Outcome<LatencyResult> | null;
}

export interface V2ThroughputRow {
  label: string;
  shape: V2Shape;
  hashmail: Outcome<ThroughputResult>;
  direct: Outcome<ThroughputResult>;
  v1Label: string | null;
  v1: Outcome<ThroughputResult> | null;
}

export interface V2SessionsRun {
  memory: Outcome<IdleMemoryResult>;
  /** The steady load over the same sessions, when it ran. */
  load: Outcome<SteadyLoadResult> | null;
}

export interface V2SessionsPair {
  transport: 'ws' | 'grpc';
  hashmail: V2SessionsRun;
  direct: V2SessionsRun;
}

export interface V2Results {
  latency: V2LatencyRow[];
  throughput: V2ThroughputRow[];
  sessions: V2SessionsPair[];
  /** The load's parameters, for the text. */
  load: { ratePerSession: number; sizeBytes: number; tickMs: number; warmupMs: number; durationMs: number; workers: number } | null;
}

/** What the v2 tables compare against from the v1 part of the run. */
export interface V1Reference {
  idle: { hashmail: Outcome<IdleMemoryResult>; direct: Outcome<IdleMemoryResult> } | null;
}

const cell = <T>(o: Outcome<T> | null | undefined, f: (v: T) => string): string => (o ? (o.ok ? f(o.value) : 'failed') : 'n/a');
const val = <T>(o: Outcome<T> | null | undefined, f: (v: T) => number): number | undefined => (o?.ok ? f(o.value) : undefined);
const verdict = (ok: boolean | undefined): string => (ok === undefined ? 'not measured' : ok ? '**met**' : '**not met**');
const both = (a: boolean | undefined, b: boolean | undefined): boolean | undefined => (a === undefined || b === undefined ? undefined : a && b);

/** Sessions per relay process in the projection: what was measured, under the 20,000 open-file limit at 2 sockets a session. */
export const PROJECTION = { sessions: 100_000, sessionsPerProcess: 9_000, socketsPerSession: 2 };

export function shapeLabel(s: V2Shape): string {
  const t = (x: 'grpc' | 'ws'): string => (x === 'grpc' ? 'gRPC' : 'WebSocket');
  return s.node === s.app ? `v2 ${t(s.node)} (both parties)` : `v2 node ${t(s.node)}, app ${t(s.app)}`;
}

function latencyTable(rows: V2LatencyRow[]): string {
  return table(
    ['round trip 1 KiB', 'v2 p50 ms', 'v2 p99 ms', 'v2 direct p50 ms', 'v2 direct p99 ms', 'p50 / p99 vs direct', 'v1 same shape p50 / p99 ms', 'p50 / p99 v2 vs v1'],
    rows.map((r) => [
      r.label,
      cell(r.hashmail, (v) => fmt(v.p50, 3)),
      cell(r.hashmail, (v) => fmt(v.p99, 3)),
      cell(r.direct, (v) => fmt(v.p50, 3)),
      cell(r.direct, (v) => fmt(v.p99, 3)),
      `${ratio(val(r.hashmail, (v) => v.p50), val(r.direct, (v) => v.p50))} / ${ratio(val(r.hashmail, (v) => v.p99), val(r.direct, (v) => v.p99))}`,
      r.v1Label ? cell(r.v1, (v) => `${fmt(v.p50, 3)} / ${fmt(v.p99, 3)}`) : '– (no v1 equivalent)',
      r.v1Label ? `${ratio(val(r.hashmail, (v) => v.p50), val(r.v1, (v) => v.p50))} / ${ratio(val(r.hashmail, (v) => v.p99), val(r.v1, (v) => v.p99))}` : '–',
    ]),
  );
}

/** Aim: v2 throughput >= v1 (same shape) and >= 0.7x the direct pipe. */
function throughputAim(r: V2ThroughputRow): boolean | undefined {
  const v2 = val(r.hashmail, (v) => v.mbPerSec);
  const direct = val(r.direct, (v) => v.mbPerSec);
  const v1 = val(r.v1, (v) => v.mbPerSec);
  const vsDirect = v2 !== undefined && direct !== undefined ? v2 >= 0.7 * direct : undefined;
  if (!r.v1Label) return vsDirect;
  return both(v1 !== undefined && v2 !== undefined ? v2 >= v1 : undefined, vsDirect);
}

function throughputTable(rows: V2ThroughputRow[]): string {
  return table(
    ['one way, app → node', 'v2 msgs/s', 'v2 MB/s', 'v2 direct MB/s', 'v2 / direct', 'v1 same shape MB/s', 'v2 / v1', 'aim ≥ v1 and ≥ 0.7x direct'],
    rows.map((r) => [
      r.label,
      cell(r.hashmail, (v) => fmt(v.msgsPerSec, 0)),
      cell(r.hashmail, (v) => fmt(v.mbPerSec, 1)),
      cell(r.direct, (v) => fmt(v.mbPerSec, 1)),
      ratio(val(r.hashmail, (v) => v.mbPerSec), val(r.direct, (v) => v.mbPerSec)),
      r.v1Label ? cell(r.v1, (v) => fmt(v.mbPerSec, 1)) : '– (no v1 equivalent)',
      r.v1Label ? ratio(val(r.hashmail, (v) => v.mbPerSec), val(r.v1, (v) => v.mbPerSec)) : '–',
      r.v1Label ? verdict(throughputAim(r)) : `≥ 0.7x direct: ${verdict(throughputAim(r))}`,
    ]),
  );
}

function memoryRow(name: string, o: Outcome<IdleMemoryResult> | null | undefined, socketsPerSession: number): string[] {
  return [
    name,
    cell(o, (v) => `${v.held} / ${v.requested}`),
    cell(o, (v) => `${v.fdsBefore} → ${v.fdsAfter}`),
    cell(o, (v) => fmt(v.rssBeforeKiB / 1024, 1)),
    cell(o, (v) => fmt(v.rssAfterKiB / 1024, 1)),
    cell(o, (v) => fmt(v.kibPerSession, 1)),
    cell(o, (v) => fmt(v.kibPerSession / socketsPerSession, 1)),
    cell(o, (v) => fmt(v.heapKibPerSession, 1)),
    cell(o, (v) => fmt(v.idleCpuPercent, 1)),
    cell(o, (v) => `${v.verifiedOk} ok, ${v.verifyFailed} failed`),
  ];
}

function memorySection(v2: V2Results, v1: V1Reference): string {
  const rows: string[][] = [];
  for (const p of v2.sessions) {
    const t = p.transport === 'ws' ? 'v2 WebSocket' : 'v2 gRPC';
    rows.push(memoryRow(`hashmail, ${t}`, p.hashmail.memory, 2), memoryRow(`direct pipe (floor), ${t}`, p.direct.memory, 2));
  }
  if (v1.idle) rows.push(memoryRow('hashmail, v1 (section 3)', v1.idle.hashmail, 3), memoryRow('direct pipe (floor), v1 (section 3)', v1.idle.direct, 3));
  const out = [
    table(
      ['server', 'sessions held', 'server fds', 'RSS before MiB', 'RSS after MiB', 'RSS KiB / session', 'RSS KiB / server socket', 'V8 heap KiB / session', 'idle server CPU %', 'relayed after'],
      rows,
    ),
    '',
  ];
  const v1PerSession = val(v1.idle?.hashmail, (v) => v.kibPerSession);
  for (const p of v2.sessions) {
    const kib = val(p.hashmail.memory, (v) => v.kibPerSession);
    const floor = val(p.direct.memory, (v) => v.kibPerSession);
    const t = p.transport === 'ws' ? 'WebSocket' : 'gRPC';
    out.push(`- v2 ${t}: ${ratio(kib, floor)} the floor; ${ratio(kib, v1PerSession)} of v1 per session. Aim "v2 memory per session at most half of v1's": ${verdict(kib !== undefined && v1PerSession !== undefined ? kib <= v1PerSession / 2 : undefined)}.`);
    if (p.transport === 'ws') {
      const perConn = kib === undefined ? undefined : kib / 2;
      out.push(`- v2 WebSocket per connection: ${fmt(perConn, 1)} KiB (floor ${fmt(floor === undefined ? undefined : floor / 2, 1)} KiB). Aim "under 6 KiB per idle v2 WebSocket connection": ${verdict(perConn === undefined ? undefined : perConn < 6)}.`);
    }
  }
  return out.join('\n');
}

function loadSection(v2: V2Results): string {
  const pairs = v2.sessions.filter((p) => p.hashmail.load !== null || p.direct.load !== null);
  if (pairs.length === 0) return 'Not measured.';
  const out: string[] = [];
  for (const p of pairs) {
    const row = (name: string, o: Outcome<SteadyLoadResult> | null): string[] => [
      name,
      cell(o, (v) => `${fmt(v.targetMsgsPerSec, 0)} / ${fmt(v.achievedMsgsPerSec, 0)}`),
      cell(o, (v) => `${v.measuredReceived} / ${v.measuredSent}`),
      cell(o, (v) => fmt(v.serverCpuPercent, 1)),
      cell(o, (v) => `${fmt(v.latency.p50, 2)} / ${fmt(v.latencyP90, 2)} / ${fmt(v.latency.p99, 2)} / ${fmt(v.latencyP999, 1)} / ${fmt(v.latency.max, 1)}`),
      cell(o, (v) => `${fmt(v.serverGcMs, 0)} / ${fmt(v.serverLoopP99Ms, 1)} / ${fmt(v.serverLoopMaxMs, 1)}`),
      cell(o, (v) => fmt(v.clientCpuPercent, 1)),
      cell(o, (v) => fmt(v.machineBusyPercent, 0)),
      cell(o, (v) => `${fmt(v.tickLateP99, 1)} / ${fmt(v.tickLateMax, 1)}`),
    ];
    out.push(
      table(
        [
          `${p.transport === 'ws' ? 'v2 WebSocket' : 'v2 gRPC'} relay`,
          'msgs/s target / achieved',
          'received / sent (window)',
          'server CPU % of one core',
          'one-way latency p50 / p90 / p99 / p99.9 / max ms',
          'server GC ms in window / event-loop delay p99 / max ms',
          'load workers CPU %',
          'machine busy % (all cores)',
          'worker tick lateness p99 / max ms',
        ],
        [row('hashmail', p.hashmail.load), row('direct pipe (baseline)', p.direct.load)],
      ),
      '',
    );
    const h = val(p.hashmail.load, (v) => v.latency.p99);
    const d = val(p.direct.load, (v) => v.latency.p99);
    const added = h !== undefined && d !== undefined ? h - d : undefined;
    const cpuH = val(p.hashmail.load, (v) => v.serverCpuPercent);
    const cpuD = val(p.direct.load, (v) => v.serverCpuPercent);
    out.push(
      `Added p99 (hashmail − direct pipe, same load): ${fmt(added, 2)} ms. Aim "added p99 under 1 ms at 9,000 sessions × 1 msg/s": ${verdict(added === undefined ? undefined : added < 1)}. Server CPU: ${ratio(cpuH, cpuD)} the direct pipe's.`,
      '',
    );
  }
  return out.join('\n');
}

/** 100,000 idle v2 sessions over several relay processes, from the measured per-session figures. */
function projection(v2: V2Results): string {
  const out: string[] = [];
  const processes = Math.ceil(PROJECTION.sessions / PROJECTION.sessionsPerProcess);
  for (const p of v2.sessions) {
    const m = p.hashmail.memory;
    if (!m.ok) continue;
    const t = p.transport === 'ws' ? 'WebSocket' : 'gRPC';
    const sessionsMiB = (PROJECTION.sessions * m.value.kibPerSession) / 1024;
    const processMiB = (processes * m.value.rssBeforeKiB) / 1024;
    out.push(
      `- v2 ${t}, memory: ${PROJECTION.sessions.toLocaleString('en-US')} sessions × ${fmt(m.value.kibPerSession, 1)} KiB = ${fmt(sessionsMiB, 0)} MiB, plus ${processes} processes (${PROJECTION.sessionsPerProcess.toLocaleString('en-US')} sessions = ${(PROJECTION.sessionsPerProcess * PROJECTION.socketsPerSession).toLocaleString('en-US')} sockets each, under the 20,000 open files) × ${fmt(m.value.rssBeforeKiB / 1024, 1)} MiB = ${fmt(processMiB, 0)} MiB; total ${fmt((sessionsMiB + processMiB) / 1024, 2)} GiB.`,
    );
    const load = p.hashmail.load;
    if (load?.ok) {
      // CPU scales with messages, i.e. with sessions, not with the process count.
      const total = load.value.serverCpuPercent * (PROJECTION.sessions / load.value.sessions);
      out.push(
        `- v2 ${t}, CPU at 1 msg/s per session: ${fmt(load.value.serverCpuPercent, 1)} % of one core for ${load.value.sessions.toLocaleString('en-US')} msg/s → ${PROJECTION.sessions.toLocaleString('en-US')} / ${load.value.sessions.toLocaleString('en-US')} × ${fmt(load.value.serverCpuPercent, 1)} % = ${fmt(total, 0)} % of one core (${fmt(total / 100, 1)} cores, over ${processes} processes).`,
      );
    }
  }
  return out.length > 0 ? out.join('\n') : 'Not computed (no v2 memory figure).';
}

export function renderV2(v2: V2Results, v1: V1Reference): string[] {
  const parts: string[] = ['## 5. Protocol v2: ping-pong latency (1 KiB)', ''];
  parts.push(v2.latency.length > 0 ? latencyTable(v2.latency) : 'Not measured.', '');
  parts.push('## 6. Protocol v2: one-way throughput (hashmail with mailbox.rateLimitIntervalMs 0)', '');
  parts.push(v2.throughput.length > 0 ? throughputTable(v2.throughput) : 'Not measured.', '');
  parts.push('## 7. Protocol v2: server memory per idle session', '');
  parts.push(v2.sessions.length > 0 ? memorySection(v2, v1) : 'Not measured.', '');
  const l = v2.load;
  parts.push('## 8. Protocol v2: sessions × 1 msg/s', '');
  if (l) {
    parts.push(
      `Every session sends ${l.ratePerSession} msg/s of ${l.sizeBytes} bytes, spread evenly (each of ${l.workers} workers sends to its due sessions every ${l.tickMs} ms), alternating direction; ${l.warmupMs / 1000} s warm-up, then ${l.durationMs / 1000} s measured. Latency: send time in the payload, computed by the receiving party.`,
      '',
    );
  }
  parts.push(loadSection(v2), '');
  parts.push('## 9. Projection: 100,000 idle v2 sessions on one machine', '', projection(v2), '');
  return parts;
}

/** Notes (failures, early stops) of the v2 runs. */
export function notesV2(v2: V2Results): string[] {
  const out: string[] = [];
  const add = (what: string, o: Outcome<{ note?: string | null }> | null): void => {
    if (!o) return;
    if (!o.ok) out.push(`${what}: FAILED: ${o.error}`);
    else if (o.value.note) out.push(`${what}: ${o.value.note}`);
  };
  for (const r of v2.latency) {
    add(`v2 latency ${r.label} (hashmail)`, r.hashmail);
    add(`v2 latency ${r.label} (direct)`, r.direct);
  }
  for (const r of v2.throughput) {
    add(`v2 throughput ${r.label} (hashmail)`, r.hashmail);
    add(`v2 throughput ${r.label} (direct)`, r.direct);
    for (const [name, o] of [['hashmail', r.hashmail], ['direct', r.direct]] as const) {
      if (o.ok && o.value.outOfOrder > 0) out.push(`v2 throughput ${r.label} (${name}): ${o.value.outOfOrder} messages out of order`);
    }
  }
  for (const p of v2.sessions) {
    for (const [name, run] of [['hashmail', p.hashmail], ['direct', p.direct]] as const) {
      const what = `v2 ${p.transport} sessions (${name})`;
      if (!run.memory.ok) out.push(`${what}: FAILED: ${run.memory.error}`);
      else if (run.memory.value.errors.length > 0) out.push(`${what} errors: ${run.memory.value.errors.join('; ')}`);
      if (run.load && !run.load.ok) out.push(`${what} load: FAILED: ${run.load.error}`);
      else if (run.load?.ok) {
        const v = run.load.value;
        if (v.lost > 0) out.push(`${what} load: ${v.lost} measured messages not received`);
        if (v.errors.length > 0) out.push(`${what} load errors (${v.failedParties} parties failed): ${v.errors.join('; ')}`);
      }
    }
  }
  return out;
}

/** Per-repetition spreads of the v2 latency and throughput rows. */
export function spreadsV2(v2: V2Results): string[] {
  const out: string[] = [];
  for (const row of [...v2.latency, ...v2.throughput]) {
    for (const [name, o] of [['hashmail', row.hashmail], ['direct', row.direct]] as const) {
      if (o.ok && o.value.spread) out.push(`${row.label}, ${name}: ${o.value.spread}`);
    }
  }
  return out;
}
