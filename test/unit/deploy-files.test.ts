/**
 * The shipped systemd unit and container file run the built binary directly
 * (not npm) with flags `hashmail serve` accepts; `systemd-analyze verify`
 * checks the unit where it is installed.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { SERVE_USAGE } from '../../src/cli/serve.js';
import { ROOT } from '../helpers/server.js';

const UNIT = join(ROOT, 'config/hashmail.service');
const CONTAINERFILE = join(ROOT, 'config/Containerfile');
const INSTALL_DIR = '/opt/hashmail';

/** `[Section]` -> key -> values (a key may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | null = null;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      current = new Map();
      sections.set(header[1], current);
      continue;
    }
    const eq = line.indexOf('=');
    assert.ok(current && eq > 0, `unit line outside a section or without '=': ${line}`);
    const key = line.slice(0, eq);
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1)]);
  }
  return sections;
}

/** Every `--flag` of a command line. */
function flagsOf(args: string[]): string[] {
  return args.filter((a) => a.startsWith('--'));
}

test('the systemd unit runs node on the built dist/cli/main.js serve with flags serve accepts, never npm', () => {
  const unit = parseUnit(readFileSync(UNIT, 'utf8'));
  const service = unit.get('Service');
  assert.ok(service, '[Service] section');
  assert.equal(service.get('Type')?.[0], 'simple');
  const exec = service.get('ExecStart');
  assert.equal(exec?.length, 1);
  const args = exec[0].split(/\s+/);
  assert.match(args[0], /\/node$/, 'ExecStart starts node itself');
  assert.equal(args[1], `${INSTALL_DIR}/dist/cli/main.js`);
  assert.ok(existsSync(join(ROOT, 'dist/cli/main.js')), 'the path is what npm run build produces');
  assert.equal(args[2], 'serve');
  assert.doesNotMatch(exec[0], /\bnpm\b/);
  for (const flag of flagsOf(args)) assert.ok(SERVE_USAGE.includes(`  ${flag} `), `serve knows ${flag}`);
  const dataDir = args[args.indexOf('--data-dir') + 1];
  assert.ok(dataDir.startsWith('/'), 'an absolute data directory');
  assert.equal(service.get('ExecReload')?.[0], '/bin/kill -HUP $MAINPID');
  assert.ok(unit.get('Install')?.get('WantedBy'));
});

test('systemd-analyze verify accepts the unit (pointed at this checkout)', (t) => {
  if (spawnSync('systemd-analyze', ['--version']).status !== 0) {
    t.skip('systemd-analyze not installed');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'hashmail-unit-'));
  try {
    // Same unit, with the binary where this checkout has it, so verify can check that it exists.
    const text = readFileSync(UNIT, 'utf8')
      .replace(/^ExecStart=\S+/m, `ExecStart=${process.execPath}`)
      .replaceAll(`${INSTALL_DIR}/dist/`, `${ROOT.replace(/\/$/, '')}/dist/`);
    const file = join(dir, 'hashmail.service');
    writeFileSync(file, text);
    execFileSync('systemd-analyze', ['verify', file], { cwd: dir, stdio: 'pipe' });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the container file is under config/ and runs the built binary with serve flags it accepts', () => {
  for (const name of ['Dockerfile', 'Containerfile']) assert.equal(existsSync(join(ROOT, name)), false, `no top-level ${name}`);
  const text = readFileSync(CONTAINERFILE, 'utf8');
  const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(text);
  const cmd = /^CMD (\[.*\])$/m.exec(text);
  assert.ok(entrypoint && cmd);
  assert.deepEqual(JSON.parse(entrypoint[1]), ['node', `${INSTALL_DIR}/dist/cli/main.js`]);
  const args = JSON.parse(cmd[1]) as string[];
  assert.equal(args[0], 'serve');
  for (const flag of flagsOf(args)) assert.ok(SERVE_USAGE.includes(`  ${flag} `), `serve knows ${flag}`);
  assert.ok(args[args.indexOf('--data-dir') + 1].startsWith('/'));
});
