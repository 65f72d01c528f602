/**
 * Builds the client-only package (hashmail-client) in dist/client-package/
 * from the compiled tree: `npm run build:client-package`, which `npm run
 * build` runs after tsc. An app that installs it gets the client and what
 * the client imports, never the server's dependencies (etcd3, pino, zod...).
 *
 * Which files ship is not a list kept by hand: starting from the two entries
 * (client/index.js for Node, client/browser.js for bundlers) it follows every
 * relative import, static or dynamic, of the compiled JavaScript and of the
 * declarations, so a client file that starts importing from wire/ or session/
 * takes it along. The packages those files import must be exactly the
 * manifest's `dependencies` (src/client/package.json), at the ranges of the
 * top-level package.json: a new import, or a range bumped on one side only,
 * fails the build instead of shipping a package that breaks on install.
 *
 * The minified browser bundle (hashmail-client.min.js) is written by esbuild
 * right after this script (see package.json); `files` names it.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, posix, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file runs from dist/release/). */
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DIST = join(ROOT, 'dist');
const OUT = join(DIST, 'client-package');
/** Where the compiled files go inside the package (its exports point there). */
const LIB_DIR = 'lib';
const ENTRIES = ['client/index.js', 'client/browser.js'];
const MANIFEST = join(ROOT, 'src/client/package.json');
const PACKAGE_README = join(ROOT, 'src/client/README.md');

interface Manifest {
  name: string;
  version?: string;
  license: string;
  dependencies: Record<string, string>;
  [key: string]: unknown;
}

/** Module specifiers of `from '...'`, `import '...'`, `import('...')` outside comments. */
function specifiers(source: string): string[] {
  // JSDoc examples say `import { connect } from 'hashmail'`: comments are not imports.
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const found: string[] = [];
  for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(['"])([^'"\n]+)\1/g)) found.push(m[2]);
  return found;
}

/** `@scope/name/sub/path` -> `@scope/name`; `name/sub` -> `name`. */
function packageName(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

const isBuiltin = (spec: string): boolean => spec.startsWith('node:') || builtinModules.includes(spec);

/**
 * Every compiled file reachable from the entries (paths relative to dist/,
 * POSIX), and the packages they import.
 */
export function clientClosure(dist: string, entries: string[]): { files: string[]; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string): void => {
    if (files.has(file)) return;
    const abs = join(dist, file);
    if (!existsSync(abs)) throw new Error(`${file} is imported by the client but missing from dist/: run tsc first`);
    files.add(file);
    for (const spec of specifiers(readFileSync(abs, 'utf8'))) {
      if (spec.startsWith('.')) {
        const target = posix.normalize(posix.join(posix.dirname(file), spec));
        // A declaration's './x.js' means the declarations of x.
        visit(file.endsWith('.d.ts') ? target.replace(/\.js$/, '.d.ts') : target);
      } else if (!isBuiltin(spec)) {
        packages.add(packageName(spec));
      }
    }
  };
  for (const entry of entries) {
    visit(entry);
    visit(entry.replace(/\.js$/, '.d.ts'));
  }
  // A .js file's declarations come along even when only its code was reached, and the other way round.
  // Until no twin brings a new file: a twin's own imports may reach files whose twins are not in yet.
  for (let before = -1; before !== files.size; ) {
    before = files.size;
    for (const file of [...files]) {
      const twin = file.endsWith('.d.ts') ? file.replace(/\.d\.ts$/, '.js') : file.replace(/\.js$/, '.d.ts');
      if (existsSync(join(dist, twin))) visit(twin);
    }
  }
  return { files: [...files].sort(), packages };
}

/** Throws naming every difference between the imported packages and the manifest's dependencies. */
export function checkDependencies(manifest: Manifest, top: Manifest, imported: Set<string>): void {
  const problems: string[] = [];
  const declared = new Set(Object.keys(manifest.dependencies));
  for (const name of imported) {
    if (!declared.has(name)) problems.push(`the client imports '${name}', which src/client/package.json does not list in dependencies`);
  }
  for (const name of declared) {
    if (!imported.has(name)) problems.push(`src/client/package.json lists '${name}', which no client file imports`);
    const range = top.dependencies[name];
    if (range === undefined) problems.push(`'${name}' is not a dependency of the top-level package.json`);
    else if (range !== manifest.dependencies[name]) problems.push(`'${name}': src/client/package.json says ${manifest.dependencies[name]}, package.json says ${range}`);
  }
  if (manifest.license !== top.license) problems.push(`license: src/client/package.json says ${manifest.license}, package.json says ${top.license}`);
  if (problems.length > 0) throw new Error(`client package: ${problems.join('; ')}`);
}

/** The compiled file without its source-map comment: the maps and sources do not ship. */
function withoutSourceMap(text: string): string {
  return text.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n');
}

export function buildClientPackage(): { out: string; files: string[]; dependencies: Record<string, string> } {
  const top = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Manifest;
  const manifest = JSON.parse(readFileSync(MANIFEST, 'utf8')) as Manifest;
  const { files, packages } = clientClosure(DIST, ENTRIES);
  checkDependencies(manifest, top, packages);

  rmSync(OUT, { recursive: true, force: true });
  for (const file of files) {
    const target = join(OUT, LIB_DIR, file);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, withoutSourceMap(readFileSync(join(DIST, file), 'utf8')));
  }
  // Name first, then the version of this checkout, then the rest as the manifest orders it.
  const { '//': _comment, name, ...fields } = manifest;
  const pkg = { name, version: top.version, ...fields };
  writeFileSync(join(OUT, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`);
  copyFileSync(join(ROOT, 'LICENSE'), join(OUT, 'LICENSE'));
  copyFileSync(PACKAGE_README, join(OUT, 'README.md'));
  return { out: OUT, files, dependencies: manifest.dependencies };
}

if (resolve(process.argv[1] ?? '') === fileURLToPath(import.meta.url)) {
  const { out, files, dependencies } = buildClientPackage();
  console.log(`client package: ${relative(ROOT, out)}, ${files.length} files, dependencies ${Object.keys(dependencies).join(', ')}`);
}
