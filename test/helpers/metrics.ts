/**
 * Reading Prometheus metrics from a running server's admin listener, summed
 * over labels (the harness `metric()` matches one exact labelled line).
 */
import type { RunningServer } from './server.js';

/** Sum of every sample of `name` (any labels); undefined if the metric is absent. */
export async function metricSum(server: RunningServer, name: string): Promise<number | undefined> {
  const { body } = await server.admin('/metrics');
  return sumIn(body, name);
}

export function sumIn(body: string, name: string): number | undefined {
  let sum: number | undefined;
  for (const line of body.split('\n')) {
    if (!(line.startsWith(`${name} `) || line.startsWith(`${name}{`))) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) sum = (sum ?? 0) + value;
  }
  return sum;
}

/** Several sums from one scrape. */
export async function metricSums(server: RunningServer, names: readonly string[]): Promise<Record<string, number | undefined>> {
  const { body } = await server.admin('/metrics');
  const out: Record<string, number | undefined> = {};
  for (const name of names) out[name] = sumIn(body, name);
  return out;
}

/** The non-zero sample lines of the metrics named, for failure messages. */
export async function metricLines(server: RunningServer, names: readonly string[]): Promise<string> {
  const { body } = await server.admin('/metrics');
  return body
    .split('\n')
    .filter((l) => names.some((n) => l.startsWith(`${n} `) || l.startsWith(`${n}{`)) && !l.endsWith(' 0'))
    .join('; ');
}
