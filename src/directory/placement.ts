/**
 * Where a new session goes. Both policies skip draining instances
 * and gateways (which own no session).
 * - random: uniform over the candidates (the seed's proposal).
 * - load-aware (default): power of two choices: two distinct candidates at
 *   random, the one with fewer published sessions wins. Stays near the mean
 *   even when the published load lags, unlike "pick the least loaded", which
 *   sends a whole burst to one instance.
 */
import type { InstanceRecord } from './directory.js';

export type PlacementPolicy = 'random' | 'load-aware';

export type RandomIndex = (n: number) => number;

const mathRandomIndex: RandomIndex = (n) => Math.floor(Math.random() * n);

/** The instance a new session goes to, or null when none can take it. */
export function choosePlacement(
  instances: readonly InstanceRecord[],
  policy: PlacementPolicy,
  random: RandomIndex = mathRandomIndex,
): InstanceRecord | null {
  const candidates = instances.filter((i) => !i.draining && i.role === 'relay');
  if (candidates.length === 0) return null;
  if (candidates.length === 1) return candidates[0];
  const i = random(candidates.length);
  const first = candidates[i];
  if (policy === 'random') return first;
  // A second, distinct index, uniform over the others.
  const j = random(candidates.length - 1);
  const second = candidates[j >= i ? j + 1 : j];
  return load(second) < load(first) ? second : first;
}

function load(instance: InstanceRecord): number {
  return instance.load.sessions;
}
