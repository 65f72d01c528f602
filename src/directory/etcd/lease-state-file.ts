/**
 * The lease ids of this relay, kept in a file that outlives a restart. A
 * relay that starts again revokes the leases its previous run left, so that
 * run's sessions move at once instead of after the TTL.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

const HEX_LEASE = /^[0-9a-f]{1,16}$/;

/** Lease ids (hex) found in the file; none when it is missing or unreadable. */
export function readLeaseState(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  try {
    const v = JSON.parse(text) as { leases?: unknown };
    return Array.isArray(v.leases) ? v.leases.filter((l): l is string => typeof l === 'string' && HEX_LEASE.test(l)) : [];
  } catch {
    return [];
  }
}

/** Writes the lease ids atomically (a crash mid-write leaves the old file, never half of one). */
export function writeLeaseState(file: string, leases: readonly string[]): void {
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify({ leases })}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}
