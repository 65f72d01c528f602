/**
 * The parent side of the load generators: forks N load-worker.ts children,
 * spreads session counts over them, sends each the same command and gathers
 * the replies, every wait bounded. close() always ends them (SIGKILL after a
 * grace period), and children.ts kills them if the benchmark dies first.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { isRunning, stopChild, track } from './children.js';
import { ROOT } from './server-process.js';
import type { WorkerCommand, WorkerReply } from './load-worker.js';

const WORKER_ENTRY = join(ROOT, 'bench/load-worker.ts');
const WORKER_START_TIMEOUT_MS = 20_000;
const WORKER_CLOSE_GRACE_MS = 5_000;

export class WorkerPool {
  private constructor(private readonly workers: ChildProcess[]) {}

  static async start(count: number): Promise<WorkerPool> {
    const workers: ChildProcess[] = [];
    for (let i = 0; i < count; i++) {
      workers.push(track(fork(WORKER_ENTRY, [], { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })));
    }
    const pool = new WorkerPool(workers);
    // A worker takes commands once it says so (its message handler is installed).
    await Promise.all(
      workers.map(
        (w, i) =>
          new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`load worker ${i} not ready within ${WORKER_START_TIMEOUT_MS} ms`)), WORKER_START_TIMEOUT_MS);
            w.on('message', (m: WorkerReply) => {
              if (m.op !== 'ready') return;
              clearTimeout(timer);
              resolve();
            });
            w.once('exit', (code) => {
              clearTimeout(timer);
              reject(new Error(`load worker ${i} exited (${code}) before ready`));
            });
          }),
      ),
    ).catch(async (err: unknown) => {
      await pool.close();
      throw err;
    });
    return pool;
  }

  get size(): number {
    return this.workers.length;
  }

  /** The workers' process ids (their CPU and memory are read from /proc). */
  get pids(): number[] {
    return this.workers.map((w) => w.pid ?? 0);
  }

  /** Sends `commandFor(i)` to worker i and waits for each one's reply of kind `expect`. */
  async each<K extends WorkerReply['op']>(
    commandFor: (i: number) => WorkerCommand,
    expect: K,
    timeoutMs: number,
  ): Promise<Extract<WorkerReply, { op: K }>[]> {
    return Promise.all(
      this.workers.map(
        (w, i) =>
          new Promise<Extract<WorkerReply, { op: K }>>((resolve, reject) => {
            const cleanup = (): void => {
              clearTimeout(timer);
              w.off('message', onMessage);
              w.off('exit', onExit);
            };
            const timer = setTimeout(() => {
              cleanup();
              reject(new Error(`load worker ${i}: no "${expect}" within ${timeoutMs} ms`));
            }, timeoutMs);
            const onMessage = (m: WorkerReply): void => {
              if (m.op === expect) {
                cleanup();
                resolve(m as Extract<WorkerReply, { op: K }>);
              } else if (m.op === 'error') {
                cleanup();
                reject(new Error(`load worker ${i}: ${m.message}`));
              }
            };
            const onExit = (code: number | null): void => {
              cleanup();
              reject(new Error(`load worker ${i} exited (${code})`));
            };
            w.on('message', onMessage);
            w.once('exit', onExit);
            w.send(commandFor(i));
          }),
      ),
    );
  }

  /** Splits `total` over the workers as evenly as it goes. */
  share(total: number, i: number): number {
    const n = this.workers.length;
    return Math.floor(total / n) + (i < total % n ? 1 : 0);
  }

  /** Asks each worker to close its sessions and exit; kills any that does not. */
  async close(): Promise<void> {
    await Promise.all(
      this.workers.map(async (w) => {
        if (!isRunning(w)) return;
        const exited = new Promise<void>((resolve) => w.once('exit', () => resolve()));
        if (w.connected) w.send({ op: 'close' } satisfies WorkerCommand);
        const timer = setTimeout(() => void stopChild(w, 'SIGKILL', 1_000), WORKER_CLOSE_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }),
    );
  }
}
