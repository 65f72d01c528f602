/**
 * The client package builder (src/release/client-package.ts) on a small
 * compiled tree in a temporary directory: which files it takes and which
 * packages they import, and the dependency check that fails the build.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { checkDependencies, clientClosure } from '../../src/release/client-package.js';

const dist = mkdtempSync(join(tmpdir(), 'hashmail-closure-'));
after(() => rmSync(dist, { recursive: true, force: true }));

function write(files: Record<string, string>): void {
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(dist, path)), { recursive: true });
    writeFileSync(join(dist, path), text);
  }
}

write({
  'client/index.js': "/** import { connect } from 'hashmail'; */\nimport { a } from './a.js';\nexport * from '../wire/w.js';\nconst g = () => import('./lazy.js');\n",
  'client/index.d.ts': "export * from '../wire/w.js';\nimport type { T } from './types.js';\n",
  'client/a.js': "import ws from 'ws';\nimport { x } from '@scure/bip39/wordlists/english.js';\nimport { once } from 'node:events';\nimport fs from 'fs';\n",
  'client/a.d.ts': '',
  'client/lazy.js': "// import 'etcd3' is not an import\nimport { Client } from '@grpc/grpc-js';\n",
  'client/lazy.d.ts': '',
  'client/types.d.ts': "import type { Socket } from 'node:net';\n",
  'wire/w.js': '',
  'wire/w.d.ts': '',
  'server/never.js': "import 'etcd3';\n",
});

test('follows static, dynamic and re-exports and the declarations; comments are not imports', () => {
  const { files, packages } = clientClosure(dist, ['client/index.js']);
  assert.deepEqual(files, ['client/a.d.ts', 'client/a.js', 'client/index.d.ts', 'client/index.js', 'client/lazy.d.ts', 'client/lazy.js', 'client/types.d.ts', 'wire/w.d.ts', 'wire/w.js']);
  assert.deepEqual([...packages].sort(), ['@grpc/grpc-js', '@scure/bip39', 'ws']);
});

test('a missing file is named', () => {
  write({ 'client/broken.js': "import './gone.js';\n" });
  assert.throws(() => clientClosure(dist, ['client/broken.js']), /client\/gone\.js is imported by the client but missing/);
});

test('dependencies must be exactly the imported packages, at the top-level ranges', () => {
  const top = { name: 'hashmail', license: 'MIT', dependencies: { ws: '^8.23.0', '@grpc/grpc-js': '^1.14.7', zod: '^4.6.7' } };
  const ok = { name: 'hashmail-client', license: 'MIT', dependencies: { ws: '^8.23.0', '@grpc/grpc-js': '^1.14.7' } };
  checkDependencies(ok, top, new Set(['ws', '@grpc/grpc-js']));
  assert.throws(() => checkDependencies(ok, top, new Set(['ws', '@grpc/grpc-js', 'zod'])), /imports 'zod', which src\/client\/package.json does not list/);
  assert.throws(() => checkDependencies(ok, top, new Set(['ws'])), /lists '@grpc\/grpc-js', which no client file imports/);
  assert.throws(() => checkDependencies({ ...ok, dependencies: { ws: '^8.0.0', '@grpc/grpc-js': '^1.14.7' } }, top, new Set(['ws', '@grpc/grpc-js'])), /'ws': src\/client\/package.json says \^8.0.0, package.json says \^8.23.0/);
  assert.throws(() => checkDependencies({ ...ok, license: 'ISC' }, top, new Set(['ws', '@grpc/grpc-js'])), /license/);
});
