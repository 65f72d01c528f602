/**
 * Repetitions that alternate the relay under test and the baseline, so a
 * burst of load from elsewhere on the machine hits both alike, and a median
 * over the repetitions instead of one lucky or unlucky run.
 */
import type { LatencyResult } from './latency.js';
import type { Outcome } from './report.js';
import { median } from './stats.js';
import type { ThroughputResult } from './throughput.js';

export interface Pair<T> {
  hashmail: Outcome<T>;
  direct: Outcome<T>;
}

/** Runs `reps` rounds of both, swapping which goes first each round; returns every outcome per side. */
export async function alternate<T>(
  reps: number,
  run: { hashmail: () => Promise<Outcome<T>>; direct: () => Promise<Outcome<T>> },
): Promise<{ hashmail: Outcome<T>[]; direct: Outcome<T>[] }> {
  const out = { hashmail: [] as Outcome<T>[], direct: [] as Outcome<T>[] };
  for (let i = 0; i < reps; i++) {
    const order: ('hashmail' | 'direct')[] = i % 2 === 0 ? ['direct', 'hashmail'] : ['hashmail', 'direct'];
    for (const side of order) out[side].push(await run[side]());
  }
  return out;
}

function successes<T>(outcomes: Outcome<T>[]): { values: T[]; failures: string[] } {
  const values: T[] = [];
  const failures: string[] = [];
  for (const o of outcomes) {
    if (o.ok) values.push(o.value);
    else failures.push(o.error);
  }
  return { values, failures };
}

const failedRuns = (failures: string[], total: number): string | null =>
  failures.length > 0 ? `${failures.length} of ${total} repetitions failed: ${[...new Set(failures)].join('; ')}` : null;

/** Median p50 and median p99 over the repetitions (each repetition its own sample of round trips). */
export function combineLatency(outcomes: Outcome<LatencyResult>[]): Outcome<LatencyResult> {
  const { values, failures } = successes(outcomes);
  if (values.length === 0) return { ok: false, error: failures.join('; ') || 'no repetitions' };
  const notes = values.map((v) => v.note).filter((n): n is string => n !== null);
  const failed = failedRuns(failures, outcomes.length);
  if (failed) notes.push(failed);
  return {
    ok: true,
    value: {
      count: values.reduce((acc, v) => acc + v.count, 0),
      p50: median(values.map((v) => v.p50)),
      p99: median(values.map((v) => v.p99)),
      mean: median(values.map((v) => v.mean)),
      max: Math.max(...values.map((v) => v.max)),
      note: notes.length > 0 ? notes.join('; ') : null,
      spread: `p50 ${values.map((v) => v.p50.toFixed(3)).join(', ')} ms; p99 ${values.map((v) => v.p99.toFixed(3)).join(', ')} ms`,
    },
  };
}

/** The repetition with the median MB/s (a real run, not a blend). */
export function combineThroughput(outcomes: Outcome<ThroughputResult>[]): Outcome<ThroughputResult> {
  const { values, failures } = successes(outcomes);
  if (values.length === 0) return { ok: false, error: failures.join('; ') || 'no repetitions' };
  const sorted = [...values].sort((a, b) => (Number.isNaN(a.mbPerSec) ? -1 : a.mbPerSec) - (Number.isNaN(b.mbPerSec) ? -1 : b.mbPerSec));
  const chosen = sorted[Math.floor((sorted.length - 1) / 2)];
  const notes = values.map((v) => v.note).filter((n): n is string => n !== null);
  const failed = failedRuns(failures, outcomes.length);
  if (failed) notes.push(failed);
  const spread = `MB/s ${sorted.map((v) => v.mbPerSec.toFixed(1)).join(', ')}`;
  return { ok: true, value: { ...chosen, note: notes.length > 0 ? notes.join('; ') : null, spread } };
}
