/**
 * The "before" server of a before/after benchmark: an older commit of this
 * repository, exported outside the repository (`git archive`, so no
 * worktree is registered in the shared .git), node_modules hard-linked from
 * this checkout, and built with `npm run build`. A build the bench made in a
 * temporary directory is removed afterwards; one made at a path the caller
 * gave is kept, so later runs reuse it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { ROOT, type HashmailBuild } from './server-process.js';

/** tsc and esbuild of the whole project on a small machine. */
const BUILD_TIMEOUT_MS = 240_000;
const GIT_TIMEOUT_MS = 60_000;
const CLI_ENTRY = 'cli/main.js';

export interface PreparedBuild {
  build: HashmailBuild;
  /** What the report says about it (commit, where it came from). */
  label: string;
  /** Removes what the bench created (nothing for a build the caller keeps). */
  dispose(): void;
}

/** `path` as a built checkout: the checkout itself, or its dist/ directory. Null if neither holds cli/main.js. */
function builtAt(path: string): HashmailBuild | null {
  const dir = resolve(path);
  if (existsSync(join(dir, CLI_ENTRY)) && basename(dir) === 'dist') return { root: dirname(dir), bin: join(dir, CLI_ENTRY) };
  if (existsSync(join(dir, 'dist', CLI_ENTRY))) return { root: dir, bin: join(dir, 'dist', CLI_ENTRY) };
  return null;
}

export function shortCommit(ref: string, cwd = ROOT): string {
  return execFileSync('git', ['rev-parse', '--short', `${ref}^{commit}`], { cwd, encoding: 'utf8', timeout: GIT_TIMEOUT_MS }).trim();
}

/** This checkout's commit, marked when src/ has uncommitted changes (the build may not match the commit). */
export function currentLabel(): string {
  const commit = shortCommit('HEAD');
  const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, encoding: 'utf8', timeout: GIT_TIMEOUT_MS }).trim();
  return dirty ? `${commit} + uncommitted src changes` : commit;
}

/** Exports `ref` into the empty directory `dir` and builds it there. */
function exportAndBuild(ref: string, dir: string, log: (line: string) => void): void {
  mkdirSync(dir, { recursive: true });
  if (readdirSync(dir).length > 0) throw new Error(`baseline directory ${dir} is not empty and holds no build`);
  const tar = `${dir}.tar`;
  try {
    execFileSync('git', ['archive', '--format=tar', '-o', tar, `${ref}^{commit}`], { cwd: ROOT, timeout: GIT_TIMEOUT_MS });
    execFileSync('tar', ['-xf', tar, '-C', dir], { timeout: GIT_TIMEOUT_MS });
  } finally {
    rmSync(tar, { force: true });
  }
  try {
    // Hard links: instant and no extra space; same package.json, so the same dependencies.
    execFileSync('cp', ['-al', join(ROOT, 'node_modules'), join(dir, 'node_modules')], { timeout: GIT_TIMEOUT_MS });
  } catch {
    // Another filesystem: a link to this checkout's node_modules serves as well.
    rmSync(join(dir, 'node_modules'), { recursive: true, force: true });
    symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir');
  }
  log(`baseline: npm run build in ${dir}`);
  execFileSync('npm', ['run', 'build'], { cwd: dir, timeout: BUILD_TIMEOUT_MS, stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * The build of commit `ref`: at `path` if given (built there first if it holds
 * no build, and kept), else built in a temporary directory that dispose()
 * removes.
 */
export function prepareBaseline(ref: string, path: string | null, log: (line: string) => void): PreparedBuild {
  const commit = shortCommit(ref);
  if (path) {
    const existing = builtAt(path);
    if (existing) {
      log(`baseline: using the build at ${existing.root}`);
      return { build: existing, label: `${commit} (build at ${existing.root})`, dispose: () => undefined };
    }
    exportAndBuild(ref, resolve(path), log);
    return { build: builtAt(path)!, label: commit, dispose: () => undefined };
  }
  const dir = mkdtempSync(join(tmpdir(), `hashmail-baseline-${commit}-`));
  const dispose = (): void => rmSync(dir, { recursive: true, force: true });
  try {
    exportAndBuild(ref, dir, log);
  } catch (err) {
    dispose();
    throw err;
  }
  return { build: builtAt(dir)!, label: commit, dispose };
}
