/**
 * "Did you mean" for misspelled config keys and variables: the closest
 * known name by edit distance, if it is close enough to be a typo.
 */

/** Edits allowed per this many characters of the typed name (and at least one). */
const CHARS_PER_EDIT = 4;

/** Levenshtein distance, case-insensitive (a wrong case is one typo-free fix). */
export function editDistance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let previous = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const current = [i];
    for (let j = 1; j <= y.length; j++) {
      current[j] = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1));
    }
    previous = current;
  }
  return previous[y.length];
}

/** The known name closest to `typed`, or null if none is within a typo's distance. */
export function closestName(typed: string, known: Iterable<string>): string | null {
  const allowed = Math.max(1, Math.floor(typed.length / CHARS_PER_EDIT));
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const name of known) {
    const d = editDistance(typed, name);
    if (d < bestDistance) {
      best = name;
      bestDistance = d;
    }
  }
  return bestDistance <= allowed ? best : null;
}
