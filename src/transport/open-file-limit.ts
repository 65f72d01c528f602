/**
 * The process's open-file limit (soft RLIMIT_NOFILE), read from
 * /proc/self/limits on Linux; null elsewhere. The public listener keeps its
 * sockets below it, so a connection flood can never take the descriptors
 * that health checks, the admin listener, etcd and log files need.
 */
import { readFileSync } from 'node:fs';

export function openFileLimit(): number | null {
  try {
    const line = readFileSync('/proc/self/limits', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
    const n = Number(soft);
    return soft === 'unlimited' || !Number.isFinite(n) ? null : n;
  } catch {
    return null;
  }
}
