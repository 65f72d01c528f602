/**
 * Every child process the benchmark starts is registered here and killed
 * when the benchmark ends, whichever way it ends (normal exit, exception,
 * SIGINT/SIGTERM). Only these processes, by pid: nothing by name.
 */
import type { ChildProcess } from 'node:child_process';

const children = new Set<ChildProcess>();
/** Started by someone else (the etcd test helper): killed by pid. */
const foreignPids = new Set<number>();
let installed = false;

export function trackPid(pid: number): void {
  if (pid > 0) foreignPids.add(pid);
  installHandlers();
}

/** Stopped by its owner: the pid may be reused, so it is no longer ours to kill. */
export function untrackPid(pid: number): void {
  foreignPids.delete(pid);
}

/** Runs a bench script's main; on failure prints the error, kills every child and sets exit code 1. */
export async function runBench(main: () => Promise<void>): Promise<void> {
  installHandlers();
  await main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
    killAll();
    process.exitCode = 1;
  });
}

export function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  installHandlers();
  return child;
}

export function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

/** Sends `signal`, then SIGKILL after `graceMs`; resolves on exit (or after the kill, bounded). */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  if (!isRunning(child)) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs + 2_000))]);
  clearTimeout(timer);
}

/** Synchronous last resort (process 'exit' cannot wait). */
export function killAll(): void {
  for (const child of children) {
    if (isRunning(child)) child.kill('SIGKILL');
  }
  children.clear();
  for (const pid of foreignPids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  foreignPids.clear();
}

function installHandlers(): void {
  if (installed) return;
  installed = true;
  process.on('exit', killAll);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(signal, () => {
      process.stderr.write(`bench: ${signal}, stopping child processes\n`);
      killAll();
      process.exit(130);
    });
  }
}
