/**
 * Keeps V8's young generation at its initial size (1 MiB semi-spaces) in the
 * server processes, before they load their modules.
 *
 * Why: a relayed message crosses these processes as Buffers whose bytes live
 * outside the JS heap (V8 counts them as external memory). V8 runs a full
 * mark-compact of the whole heap whenever external memory grew by 64 MiB since
 * the last one, unless a scavenge of the young generation has freed the dead
 * Buffers first. Start-up grows the young generation to 16 MiB semi-spaces
 * (loading modules keeps much alive); with semi-spaces that large, a gateway
 * carrying 32 KiB messages allocated its 64 MiB of Buffers before its young
 * generation filled, and ran about 70 mark-compacts where `serve` ran one:
 * 15-17 ms of CPU per MB carried instead of 6 (BENCHMARKS.md, session 18).
 * Whether a process ended up there depended on whether V8 happened to shrink
 * the young generation while idle. Fixed small semi-spaces scavenge after each
 * MiB of JS allocation, which frees the Buffers in time.
 *
 * An operator who sizes the young generation with Node's own flags
 * (`--max-semi-space-size`, `--min-semi-space-size`,
 * `--semi-space-growth-factor`, on the command line or in NODE_OPTIONS) keeps
 * theirs; `HASHMAIL_YOUNG_GENERATION=grow` leaves V8's default as well.
 */
import v8 from 'node:v8';

const NODE_SEMI_SPACE_FLAG = /--(max|min)[-_]semi[-_]space[-_]size|--semi[-_]space[-_]growth[-_]factor/;

/** Whether the process was started with its own young-generation sizing, or asked for V8's default. */
export function youngGenerationLeftAlone(execArgv: readonly string[], env: NodeJS.ProcessEnv): boolean {
  if (env.HASHMAIL_YOUNG_GENERATION === 'grow') return true;
  return execArgv.some((a) => NODE_SEMI_SPACE_FLAG.test(a)) || NODE_SEMI_SPACE_FLAG.test(env.NODE_OPTIONS ?? '');
}

/** Stops the young generation from growing past its initial size (see above); a no-op when left alone. */
export function keepYoungGenerationSmall(execArgv: readonly string[] = process.execArgv, env: NodeJS.ProcessEnv = process.env): boolean {
  if (youngGenerationLeftAlone(execArgv, env)) return false;
  // Read by V8 each time it considers growing the young generation, so it applies after start.
  v8.setFlagsFromString('--semi-space-growth-factor=1');
  // V8 checks its heap limits right after a scavenge, counting the external bytes of the Buffers that scavenge
  // found dead until they are swept; swept on a background thread, they were still counted, and started a
  // mark-compact after most scavenges. Sweeping them in the scavenge itself costs a walk of the young Buffers.
  v8.setFlagsFromString('--no-concurrent-array-buffer-sweeping');
  return true;
}
