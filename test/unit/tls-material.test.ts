/**
 * The generated certificate pair: kept across starts, and whole when many
 * processes start on one fresh data dir at once (a cluster started together).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadTlsMaterial } from '../../src/transport/tls-material.js';

const RACERS = 4;

function tempDir(t: { after(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'hashmail-tls-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return join(dir, 'data');
}

test('generated once, then loaded: the same certificate after a restart', (t) => {
  const dataDir = tempDir(t);
  const first = loadTlsMaterial({ certFile: '', keyFile: '', dataDir });
  assert.equal(first.generated, true);
  const again = loadTlsMaterial({ certFile: '', keyFile: '', dataDir });
  assert.equal(again.generated, false);
  assert.equal(again.fingerprint256, first.fingerprint256);
  assert.deepEqual(readdirSync(dataDir).sort(), ['tls.cert', 'tls.key'], 'no temporary file left');
});

test(`${RACERS} processes generating on one fresh data dir at once all start, on one pair`, async (t) => {
  const dataDir = tempDir(t);
  mkdirSync(dataDir, { recursive: true });
  const go = join(dataDir, '..', 'go');
  const moduleUrl = new URL('../../src/transport/tls-material.ts', import.meta.url).href;
  const script = `
    const { existsSync } = await import('node:fs');
    const { loadTlsMaterial } = await import(${JSON.stringify(moduleUrl)});
    loadTlsMaterial({ certFile: '', keyFile: '', dataDir: ${JSON.stringify(join(dataDir, '..', 'warm'))} });
    process.stdout.write('ready\\n');
    for (let i = 0; i < 5000 && !existsSync(${JSON.stringify(go)}); i++) await new Promise((r) => setTimeout(r, 2));
    try {
      process.stdout.write(loadTlsMaterial({ certFile: '', keyFile: '', dataDir: ${JSON.stringify(dataDir)} }).fingerprint256 + '\\n');
    } catch (err) {
      process.stdout.write('failed: ' + err.message + '\\n');
    }
  `;
  const racers = Array.from({ length: RACERS }, () => spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] }));
  t.after(() => racers.forEach((r) => r.kill('SIGKILL')));
  const outputs = racers.map((r) => {
    let out = '';
    r.stdout.on('data', (d: Buffer) => (out += d.toString()));
    return { ready: waitFor(r, () => out.includes('ready\n')), done: once(r, 'exit').then(() => out) };
  });
  // Each racer has loaded the generator (its own warm-up pair) before the go, so the generations overlap.
  await Promise.all(outputs.map((o) => o.ready));
  writeFileSync(go, '');
  const fingerprints = (await Promise.all(outputs.map((o) => o.done))).map((out) => out.split('\n')[1]);
  for (const f of fingerprints) assert.match(f, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, `every racer started: ${fingerprints.join(' | ')}`);
  assert.equal(new Set(fingerprints).size, 1, 'one pair for all');
  assert.equal(loadTlsMaterial({ certFile: '', keyFile: '', dataDir }).fingerprint256, fingerprints[0], 'the pair on disk is theirs');
  assert.deepEqual(readdirSync(dataDir).sort(), ['tls.cert', 'tls.key'], 'no temporary file left');
});

test('a key left alone long ago (a start killed between the two files) is replaced with a whole pair, at once', (t) => {
  const dataDir = tempDir(t);
  mkdirSync(dataDir, { recursive: true });
  writeFileSync(join(dataDir, 'tls.key'), 'not a key\n');
  const anHourAgo = new Date(Date.now() - 3_600_000);
  utimesSync(join(dataDir, 'tls.key'), anHourAgo, anHourAgo);
  const material = loadTlsMaterial({ certFile: '', keyFile: '', dataDir });
  assert.equal(material.generated, true);
  assert.equal(existsSync(join(dataDir, 'tls.cert')), true);
  assert.equal(loadTlsMaterial({ certFile: '', keyFile: '', dataDir }).fingerprint256, material.fingerprint256);
});

function waitFor(child: ReturnType<typeof spawn>, check: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const onData = (): void => {
      if (!check()) return;
      child.stdout?.off('data', onData);
      resolve();
    };
    child.stdout?.on('data', onData);
    child.once('exit', (code) => (check() ? resolve() : reject(new Error(`racer exited (${code}) before ready`))));
  });
}
