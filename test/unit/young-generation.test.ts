import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { youngGenerationLeftAlone } from '../../src/cli/young-generation.js';

const MODULE = fileURLToPath(new URL('../../src/cli/young-generation.ts', import.meta.url));

/**
 * A fresh Node process that (optionally) applies the tuning, allocates enough
 * surviving objects to make V8 grow its young generation, and prints the new
 * space's size in MiB.
 */
function newSpaceMiBAfterChurn(apply: boolean, env: NodeJS.ProcessEnv = {}): number {
  const script = `
    import v8 from 'node:v8';
    import { keepYoungGenerationSmall } from ${JSON.stringify(MODULE)};
    if (${apply}) keepYoungGenerationSmall();
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
  it('keeps the young generation at its initial size under allocation that grows it otherwise', () => {
    const grown = newSpaceMiBAfterChurn(false);
    const kept = newSpaceMiBAfterChurn(true);
    assert.ok(grown > 4, `without the tuning V8 grows the new space (got ${grown} MiB): the test no longer provokes growth`);
    assert.ok(kept <= 4, `with the tuning the new space stays small, got ${kept} MiB`);
  });

  it('leaves V8 alone when asked to, or when Node was given its own semi-space sizing', () => {
    assert.equal(newSpaceMiBAfterChurn(true, { HASHMAIL_YOUNG_GENERATION: 'grow' }) > 4, true);
    assert.equal(youngGenerationLeftAlone([], {}), false);
    assert.equal(youngGenerationLeftAlone([], { HASHMAIL_YOUNG_GENERATION: 'grow' }), true);
    assert.equal(youngGenerationLeftAlone(['--max-semi-space-size=8'], {}), true);
    assert.equal(youngGenerationLeftAlone(['--min_semi_space_size=2'], {}), true);
    assert.equal(youngGenerationLeftAlone([], { NODE_OPTIONS: '--max-old-space-size=4096 --semi-space-growth-factor=4' }), true);
    assert.equal(youngGenerationLeftAlone(['--max-old-space-size=4096'], { NODE_OPTIONS: '--enable-source-maps' }), false);
  });
});
