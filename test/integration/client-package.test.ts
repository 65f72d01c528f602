/**
 * The client-only package (hashmail-client, dist/client-package/, written by
 * `npm run build`) as an app gets it: `npm pack`ed, installed into a fresh
 * project in a temporary directory, then
 *
 * - the tarball holds the client and nothing of the repository (no test/,
 *   bench/, .ci/, src/, server modules), with LICENSE, `sideEffects: false`
 *   and exports for node, browser and the bundle;
 * - the install holds none of the server's dependencies, and the package
 *   depends on exactly what the client imports;
 * - from Node, two parties of one session (a connection phrase, gRPC and
 *   WebSocket) exchange a message through a real `hashmail serve`, importing
 *   `hashmail-client` from the temporary project (test/helpers/client-package-party.mjs);
 * - in headless Chromium, the installed minified bundle connects two
 *   parties through that server and they exchange a message.
 *
 * The install is offline first (`npm ci` fills the cache with the tarballs);
 * npm's cache may lack the registry metadata, and then it is retried with
 * `--prefer-offline`, which asks the registry only for what is missing.
 * Chromium as in browser.test.ts (CHROMIUM_PATH, never skipped).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { chromium, type Browser } from 'playwright-core';
import { withTimeout } from '../helpers/async-queue.js';
import { ROOT, startServer, type RunningServer } from '../helpers/server.js';

const run = promisify(execFile);

const PACKAGE_DIR = join(ROOT, 'dist/client-package');
const MANIFEST = JSON.parse(readFileSync(join(ROOT, 'src/client/package.json'), 'utf8')) as { name: string; dependencies: Record<string, string> };
const PARTY_SCRIPT = join(ROOT, 'test/helpers/client-package-party.mjs');
const CHROMIUM_PATH = process.env.HASHMAIL_TEST_CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
/** npm pack and install, network fallback included. */
const NPM_TIMEOUT_MS = 180_000;
const PARTY_TIMEOUT_MS = 30_000;
const STEP_TIMEOUT_MS = 15_000;
/** What the server needs and an app must not get. */
const SERVER_DEPENDENCIES = ['etcd3', 'http-proxy', 'pino', 'pino-pretty', 'prom-client', 'selfsigned', 'zod', 'qrcode'];
/** Compiled server folders (dist/*) that must not reach the client package. */
const SERVER_FOLDERS = ['cli', 'compose', 'config', 'directory', 'gateway', 'observe', 'relay', 'release'];

interface PackResult {
  filename: string;
  files: { path: string }[];
}

interface NpmTree {
  name?: string;
  dependencies?: Record<string, NpmTree>;
}

let work = '';
let app = '';
let pack: PackResult;
let server: RunningServer | null = null;
let browser: Browser | null = null;
let pageServer: Server | null = null;

function npm(args: string[], cwd: string): Promise<{ stdout: string; stderr: string }> {
  return run('npm', [...args, '--no-audit', '--no-fund', '--loglevel=error'], { cwd, timeout: NPM_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 });
}

/** Installs the tarball into `app`: from the cache alone if it can, else with the registry for what the cache lacks. */
async function installOffline(tarball: string): Promise<void> {
  try {
    await npm(['install', '--offline', tarball], app);
  } catch (err) {
    if (!String((err as { stderr?: string }).stderr).includes('ENOTCACHED')) throw err;
    await npm(['install', '--prefer-offline', tarball], app);
  }
}

/** Every package name in the installed tree. */
function treeNames(tree: NpmTree, into = new Set<string>()): Set<string> {
  for (const [name, sub] of Object.entries(tree.dependencies ?? {})) {
    into.add(name);
    treeNames(sub, into);
  }
  return into;
}

async function closeQuietly(s: Server): Promise<void> {
  s.closeAllConnections();
  await new Promise<void>((resolve) => s.close(() => resolve()));
}

describe('hashmail-client package', () => {
  before(async () => {
    if (!existsSync(join(PACKAGE_DIR, 'package.json'))) throw new Error(`${PACKAGE_DIR} is missing: run \`npm run build\` (it runs build:client-package)`);
    work = mkdtempSync(join(tmpdir(), 'hashmail-client-package-'));
    app = join(work, 'app');
    const { stdout } = await npm(['pack', '--json', '--pack-destination', work], PACKAGE_DIR);
    [pack] = JSON.parse(stdout) as PackResult[];
    mkdirSync(app);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'client-package-test-app', private: true, type: 'module' }));
    await installOffline(join(work, pack.filename));
    server = await startServer();
  });

  after(async () => {
    await browser?.close();
    browser = null;
    if (pageServer) await closeQuietly(pageServer);
    pageServer = null;
    await server?.stop();
    server = null;
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('the tarball holds the client, its declarations, the minified bundle, README and LICENSE, and nothing else', () => {
    const paths = pack.files.map((f) => f.path);
    for (const path of paths) {
      assert.ok(/^lib\/(client|wire|session|transport)\/[\w/-]+\.(js|d\.ts)$/.test(path) || ['package.json', 'README.md', 'LICENSE', 'hashmail-client.min.js'].includes(path), `unexpected file in the tarball: ${path}`);
    }
    for (const folder of SERVER_FOLDERS) assert.ok(!paths.some((p) => p.startsWith(`lib/${folder}/`)), `lib/${folder}/ shipped`);
    for (const path of ['LICENSE', 'README.md', 'hashmail-client.min.js', 'lib/client/index.js', 'lib/client/index.d.ts', 'lib/client/browser.js', 'lib/client/browser.d.ts']) {
      assert.ok(paths.includes(path), `${path} missing from the tarball`);
    }
    const installed = join(app, 'node_modules', MANIFEST.name);
    assert.match(readFileSync(join(installed, 'LICENSE'), 'utf8'), /^MIT License/);
    const pkg = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')) as Record<string, unknown>;
    const top = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(pkg.version, top.version, 'the version of the repository');
    assert.equal(pkg.license, top.license);
    assert.equal(pkg.sideEffects, false);
    assert.equal(pkg.scripts, undefined, 'no install-time scripts');
    const exportsField = pkg.exports as Record<string, Record<string, string>>;
    assert.equal(exportsField['.'].node, './lib/client/index.js');
    assert.equal(exportsField['.'].browser, './lib/client/browser.js');
    assert.equal(exportsField['./bundle'].default, './hashmail-client.min.js');
    // Minified: no indented line (the word list's lines are data, not code).
    const indented = readFileSync(join(installed, 'hashmail-client.min.js'), 'utf8').split('\n').filter((line) => /^\s+\S/.test(line));
    assert.deepEqual(indented.slice(0, 3), [], 'indented lines in hashmail-client.min.js: not minified');
  });

  test('the install holds the client dependencies and none of the server', async () => {
    const { stdout } = await npm(['ls', '--all', '--json'], app);
    const tree = JSON.parse(stdout) as NpmTree;
    const names = treeNames(tree);
    for (const dep of SERVER_DEPENDENCIES) assert.ok(!names.has(dep), `${dep} is installed with the client`);
    const client = tree.dependencies?.[MANIFEST.name];
    assert.ok(client, `${MANIFEST.name} not installed`);
    assert.deepEqual(Object.keys(client.dependencies ?? {}).sort(), Object.keys(MANIFEST.dependencies).sort());
  });

  test('from Node: two parties over gRPC and WebSocket exchange a message through hashmail serve', async () => {
    copyFileSync(PARTY_SCRIPT, join(app, 'party.mjs'));
    const { stdout } = await run(process.execPath, ['party.mjs', server!.address], { cwd: app, timeout: PARTY_TIMEOUT_MS });
    const result = JSON.parse(stdout) as { resolved: string; versions: number[]; toNode: string; toApp: string };
    assert.ok(result.resolved.startsWith(`file://${join(app, 'node_modules', MANIFEST.name)}/`), `hashmail-client resolved to ${result.resolved}`);
    assert.deepEqual(result.versions, [2, 2]);
    assert.equal(result.toNode, 'hello node');
    assert.equal(result.toApp, 'hello app');
  });

  test('in Chromium: the minified bundle connects two parties that exchange a message', async () => {
    if (!existsSync(CHROMIUM_PATH)) throw new Error(`Chromium not found at ${CHROMIUM_PATH}: install it (apt-get install -y chromium) or set HASHMAIL_TEST_CHROMIUM`);
    const bundle = readFileSync(join(app, 'node_modules', MANIFEST.name, 'hashmail-client.min.js'));
    const page = '<!doctype html><meta charset="utf-8"><script type="module">import * as hashmail from "/hashmail-client.min.js"; window.hashmail = hashmail; window.ready = true;</script>';
    pageServer = createServer((req, res) => {
      if (req.url === '/') res.writeHead(200, { 'Content-Type': 'text/html' }).end(page);
      else if (req.url === '/hashmail-client.min.js') res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(bundle);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve, reject) => {
      pageServer!.once('error', reject);
      pageServer!.listen(0, '127.0.0.1', resolve);
    });
    const pageUrl = `http://127.0.0.1:${(pageServer.address() as AddressInfo).port}/`;
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, timeout: STEP_TIMEOUT_MS * 2 });
    const tab = await browser.newPage();
    const pageErrors: string[] = [];
    tab.on('pageerror', (err) => pageErrors.push(err.message));
    await tab.goto(pageUrl, { timeout: STEP_TIMEOUT_MS });
    await tab.waitForFunction(() => (window as unknown as { ready?: boolean }).ready === true, undefined, { timeout: STEP_TIMEOUT_MS });
    // Plain JavaScript, not a function: tsx would wrap named functions in a helper the page does not have.
    const exchange = `(async () => {
      const hm = window.hashmail;
      const sid = crypto.getRandomValues(new Uint8Array(64));
      const first = async (c) => new TextDecoder().decode((await c[Symbol.asyncIterator]().next()).value);
      const a = await hm.connect({ server: ${JSON.stringify(`ws://${server!.address}`)}, sid, role: 'app' });
      const b = await hm.connect({ server: ${JSON.stringify(`ws://${server!.address}`)}, sid: hm.flipSid(sid), role: 'node' });
      try {
        const [toB, toA] = await Promise.all([first(b), first(a), a.send(new TextEncoder().encode('from the app')), b.send(new TextEncoder().encode('from the node'))]);
        return { versions: [a.version, b.version], toB, toA };
      } finally {
        await Promise.all([a.close(), b.close()]);
      }
    })()`;
    const result = await withTimeout(tab.evaluate(exchange), STEP_TIMEOUT_MS, 'the page: two parties exchange a message');
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(result, { versions: [2, 2], toB: 'from the app', toA: 'from the node' });
  });
});

describe('hashmail package tarball', () => {
  test('ships dist, proto, config, docs and LICENSE; no tests, benchmarks, CI, sources; no install-time script', async () => {
    // --ignore-scripts: prepack would rebuild; the files list is what is checked.
    const { stdout } = await npm(['pack', '--dry-run', '--json', '--ignore-scripts'], ROOT);
    const paths = (JSON.parse(stdout) as PackResult[])[0].files.map((f) => f.path);
    for (const path of paths) {
      assert.ok(/^(dist|proto|config|docs)\//.test(path) || ['package.json', 'README.md', 'LICENSE'].includes(path), `unexpected file in the hashmail tarball: ${path}`);
      assert.ok(!path.startsWith('dist/client-package/') && !path.startsWith('dist/release/'), `${path}: the client package and its builder are not the server's`);
    }
    for (const path of ['LICENSE', 'dist/cli/main.js', 'dist/client/index.js', 'dist/browser/hashmail-client.js', 'proto/hashmailrpc.proto']) assert.ok(paths.includes(path), `${path} missing`);
    const scripts = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts;
    for (const hook of ['preinstall', 'install', 'postinstall', 'prepare']) assert.equal(scripts[hook], undefined, `a ${hook} script runs (and warns) on every install of the package`);
  });
});
