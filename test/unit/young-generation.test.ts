import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { PIN_SEMI_SPACES, SWEEP_IN_SCAVENGE, youngGenerationFlags } from '../../src/cli/young-generation.js';

const MODULE = fileURLToPath(new URL('../../src/cli/young-generation.ts', import.meta.url));

/**
 * A fresh Node process that applies the tuning as a server command does
 * (with `env`), allocates enough surviving objects to make V8 grow its young
 * generation, and prints the new space's size in MiB.
 */
function newSpaceMiBAfterChurn(env: NodeJS.ProcessEnv): number {
  const script = `
    import v8 from 'node:v8';
    import { tuneYoungGeneration } from ${JSON.stringify(MODULE)};
    tuneYoungGeneration();
    let keep = [];
    for (let i = 0; i < 300000; i++) {
      keep.push({ a: i, b: [i, i + 1], c: 'x' + i });
      if (keep.length > 100000) keep = keep.slice(50000);
    }
    const space = v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space');
    process.stdout.write(String(space.space_size / 1048576));
  `;
  const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    encoding: 'utf8',
    env: { PATH: process.env.PATH, ...env },
    timeout: 60_000,
  });
  return Number(out);
}

describe('young generation tuning of the server processes', () => {
  it('keeps the young generation at its initial size by default; HASHMAIL_YOUNG_GENERATION=sweep or grow lets V8 grow it', () => {
    const kept = newSpaceMiBAfterChurn({});
    const grown = newSpaceMiBAfterChurn({ HASHMAIL_YOUNG_GENERATION: 'sweep' });
    assert.ok(kept <= 4, `by default the new space stays small, got ${kept} MiB`);
    assert.ok(grown > 4, `with sweep V8 grows the new space (got ${grown} MiB): the test no longer provokes growth`);
    assert.ok(newSpaceMiBAfterChurn({ HASHMAIL_YOUNG_GENERATION: 'grow' }) > 4);
  });

  it('sweeps dead Buffers in the scavenge unless told grow; Node\'s own semi-space sizing wins over the pinning', () => {
    assert.deepEqual(youngGenerationFlags([], {}), [SWEEP_IN_SCAVENGE, PIN_SEMI_SPACES]);
    assert.deepEqual(youngGenerationFlags([], { HASHMAIL_YOUNG_GENERATION: 'small' }), [SWEEP_IN_SCAVENGE, PIN_SEMI_SPACES]);
    assert.deepEqual(youngGenerationFlags([], { HASHMAIL_YOUNG_GENERATION: 'sweep' }), [SWEEP_IN_SCAVENGE]);
    assert.deepEqual(youngGenerationFlags([], { HASHMAIL_YOUNG_GENERATION: 'grow' }), []);
    for (const sized of [['--max-semi-space-size=8'], ['--min_semi_space_size=2']]) {
      assert.deepEqual(youngGenerationFlags(sized, {}), [SWEEP_IN_SCAVENGE], sized[0]);
    }
    assert.deepEqual(youngGenerationFlags([], { NODE_OPTIONS: '--max-old-space-size=4096 --semi-space-growth-factor=4' }), [SWEEP_IN_SCAVENGE]);
    assert.deepEqual(youngGenerationFlags(['--max-old-space-size=4096'], { NODE_OPTIONS: '--enable-source-maps' }), [SWEEP_IN_SCAVENGE, PIN_SEMI_SPACES]);
  });
});
