/**
 * V8 flags for the server processes' young generation, set before they load
 * their modules.
 *
 * Why: a relayed message crosses these processes as Buffers whose bytes live
 * outside the JS heap (V8 counts them as external memory). V8 checks its
 * heap limits right after each scavenge of the young generation, and counts
 * the external bytes of the Buffers that scavenge found dead until they are
 * swept, which V8 does on a background thread. A gateway carrying 32 KiB
 * messages so ran about 70 full mark-compacts where `serve` ran one: 12-17
 * ms of CPU per MB carried instead of 6-9 (BENCHMARKS.md, sessions 18 and
 * 19). `--no-concurrent-array-buffer-sweeping` sweeps them in the scavenge
 * itself (a walk of the young Buffers), so the check sees them gone.
 *
 * The young generation is kept at its initial size (1 MiB semi-spaces;
 * V8 grows it to 16 MiB at start-up otherwise): scavenges then come often
 * enough that few dead Buffers wait for one, which halved the gateway's and
 * relay's CPU per MB again and saves 15-30 MiB per process. It costs relays
 * holding 5,000-8,000 sessions each: they placed 20,000 sessions in 72 s
 * instead of 59 (100,000 in 770 s instead of 588 with V8's defaults), so
 * `HASHMAIL_YOUNG_GENERATION=sweep` sets only the sweep and lets V8 size
 * the young generation (BENCHMARKS.md section 11, session 19).
 *
 * An operator who sizes the young generation with Node's own flags
 * (`--max-semi-space-size`, `--min-semi-space-size`,
 * `--semi-space-growth-factor`, on the command line or in NODE_OPTIONS)
 * keeps that sizing; `HASHMAIL_YOUNG_GENERATION=grow` sets nothing at all.
 */
import v8 from 'node:v8';

const NODE_SEMI_SPACE_FLAG = /--(max|min)[-_]semi[-_]space[-_]size|--semi[-_]space[-_]growth[-_]factor/;
export const SWEEP_IN_SCAVENGE = '--no-concurrent-array-buffer-sweeping';
export const PIN_SEMI_SPACES = '--semi-space-growth-factor=1';

/** The V8 flags a server process sets, by HASHMAIL_YOUNG_GENERATION (unset or `small`, `sweep`, `grow`) and the sizing Node was given. */
export function youngGenerationFlags(execArgv: readonly string[], env: NodeJS.ProcessEnv): string[] {
  const mode = env.HASHMAIL_YOUNG_GENERATION;
  if (mode === 'grow') return [];
  const sizedByNode = execArgv.some((a) => NODE_SEMI_SPACE_FLAG.test(a)) || NODE_SEMI_SPACE_FLAG.test(env.NODE_OPTIONS ?? '');
  return mode === 'sweep' || sizedByNode ? [SWEEP_IN_SCAVENGE] : [SWEEP_IN_SCAVENGE, PIN_SEMI_SPACES];
}

/** Sets the flags of youngGenerationFlags; V8 reads both while the process runs, so they apply after start. */
export function tuneYoungGeneration(execArgv: readonly string[] = process.execArgv, env: NodeJS.ProcessEnv = process.env): string[] {
  const flags = youngGenerationFlags(execArgv, env);
  for (const flag of flags) v8.setFlagsFromString(flag);
  return flags;
}
