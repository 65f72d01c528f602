/**
 * The browser bundle (dist/browser/hashmail-client.js, `npm run
 * build:browser`) in a real Chromium driven by playwright-core, against real
 * `hashmail serve` processes. The page (test/helpers/browser-page.html, served
 * with the bundle from a loopback HTTP server this test starts) is one party;
 * the other is a Node party of the client library over gRPC or WebSocket.
 *
 * - v2: presence seen in the page as the Node party attaches and leaves, and
 *   100 random messages (0 to 32 KiB) each way, compared by SHA-256 in order.
 * - v1-only relay: a browser cannot read the HTTP status of a refused
 *   WebSocket handshake, so the library cannot tell "no v2 here" (404) from
 *   "relay down". With protocol 'auto' it probes v1 (V2HandshakeUnexplained
 *   in negotiate.ts) and falls back when the relay takes a v1 stream; with
 *   protocol 'v2' it rejects with ConnectionLost (named
 *   V2HandshakeUnexplained), not UnsupportedVersion as in Node.
 *
 * - finding the relay: the page computes the session's route (WebCrypto) as
 *   the directory does, asks a lookup instance (GET /v2/relay, CORS
 *   allow-all) and dials the real relay it names; a server with no lookup
 *   (a 404 without CORS headers, a failed fetch to the page) is dialed
 *   directly, as the tests above show.
 *
 * - connection phrase: the bundle decodes a v2 URL made in Node (and names a
 *   bad checksum), and the page connects from that URL alone.
 *
 * Chromium must be at CHROMIUM_PATH (Debian/CI: `apt-get install -y
 * chromium`); a missing one fails the suite, it is never skipped. Every wait
 * is bounded; everything listens on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { withTimeout } from '../helpers/async-queue.js';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { connect, UnsupportedVersion, type MailboxConnection, type ProtocolChoice, type Role, type TransportName } from '../../src/client/index.js';
import { flipSid } from '../../src/client/bytes.js';
import { encodeConnectionPhrase, entropyToWords, loadEnglishWordlist, newPhraseEntropy } from '../../src/client/phrase.js';
import { routeOfSid } from '../../src/directory/route.js';
import { startLookupInstance } from '../helpers/lookup-instance.js';
import { ROOT, startServer, type RunningServer } from '../helpers/server.js';

/** Debian's package (CI installs it in .ci/run); HASHMAIL_TEST_CHROMIUM points elsewhere. */
const CHROMIUM_PATH = process.env.HASHMAIL_TEST_CHROMIUM ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const BUNDLE_FILE = join(ROOT, 'dist/browser/hashmail-client.js');
const PAGE_FILE = join(ROOT, 'test/helpers/browser-page.html');
const BROWSER_LAUNCH_TIMEOUT_MS = 30_000;
const STEP_TIMEOUT_MS = 10_000;
/** 100 messages of up to 32 KiB each way, hashed on both sides. */
const EXCHANGE_TIMEOUT_MS = 60_000;
const MESSAGES_EACH_WAY = 100;
const MAX_MESSAGE_BYTES = 32 * 1024;
const V1_ONLY = { HASHMAIL_V2__ENABLED: 'false' };

/** The options the page's harness takes: ConnectOptions with the SID as hex (or a phrase). */
interface PageConnectOptions {
  server?: string;
  sidHex?: string;
  phrase?: string;
  insecure?: boolean;
  transport?: TransportName;
  protocol?: ProtocolChoice;
  role: Role;
}

interface PageError {
  name: string;
  message: string;
  code: number | null;
  clientError: boolean;
  connectionLost: boolean;
  unsupportedVersion: boolean;
  sessionNotFound: boolean;
}

type PageConnectResult = { id: number; version: 1 | 2; peerPresent: boolean } | { error: PageError };

interface PageState {
  version: 1 | 2;
  peerPresent: boolean;
  /** Every 'presence' event since connect resolved. */
  presence: boolean[];
  receivedCount: number;
  ended: PageError | 'done' | null;
  /** `HOST:PORT` of the relay the party is attached to. */
  relay: string;
}

type PageDecoded =
  | { version: number; mailboxes: string[]; words: string[]; entropy: string }
  | { error: { name: string; code: string; message: string; phraseError: boolean } };

/** `window.harness` of browser-page.html. */
interface Harness {
  decodePhrase(text: string): Promise<PageDecoded>;
  connect(options: PageConnectOptions): Promise<PageConnectResult>;
  state(id: number): PageState;
  received(id: number): string[];
  sendRandom(id: number, sizes: number[]): Promise<string[]>;
  route(sidHex: string): Promise<string>;
  close(id: number): Promise<void>;
  closeAll(): Promise<void>;
}

interface HarnessWindow {
  harness: Harness;
  harnessReady?: boolean;
}

let browser: Browser | null = null;
let page: Page;
let pageServer: Server | null = null;
let pageUrl = '';
const pageErrors: string[] = [];
const servers: RunningServer[] = [];
let nodeParties: MailboxConnection[] = [];

/** `promise`, or a rejection naming `what` after `ms` (the shared withTimeout with this file's default step). */
function bounded<T>(promise: Promise<T>, what: string, ms = STEP_TIMEOUT_MS): Promise<T> {
  return withTimeout(promise, ms, what);
}

/** Serves the harness page and the bundle (with its source map) on 127.0.0.1:0. */
async function startPageServer(): Promise<{ server: Server; url: string }> {
  const files: Record<string, { body: Buffer; type: string }> = {
    '/': { body: readFileSync(PAGE_FILE), type: 'text/html; charset=utf-8' },
    '/hashmail-client.js': { body: readFileSync(BUNDLE_FILE), type: 'text/javascript; charset=utf-8' },
    '/hashmail-client.js.map': { body: readFileSync(`${BUNDLE_FILE}.map`), type: 'application/json' },
  };
  const server = createServer((req, res) => {
    const file = files[new URL(req.url ?? '/', 'http://127.0.0.1').pathname];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'Content-Type': file.type, 'Cache-Control': 'no-store' }).end(file.body);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  return { server, url: `http://127.0.0.1:${port}/` };
}

/** Bounds a page.evaluate, which has no timeout of its own. */
function inPage<R>(evaluation: Promise<R>, what: string, ms = STEP_TIMEOUT_MS): Promise<R> {
  return bounded(evaluation, `the page: ${what}`, ms);
}

async function browserParty(server: RunningServer, options: Omit<PageConnectOptions, 'server' | 'transport'>): Promise<PageConnectResult> {
  const full: PageConnectOptions = { server: `ws://127.0.0.1:${server.port}`, transport: 'websocket', ...options };
  return inPage(page.evaluate((o) => (window as unknown as HarnessWindow).harness.connect(o), full), 'connect');
}

async function attachedBrowserParty(server: RunningServer, options: Omit<PageConnectOptions, 'server' | 'transport'>): Promise<{ id: number; version: 1 | 2; peerPresent: boolean }> {
  const result = await browserParty(server, options);
  if ('error' in result) assert.fail(`the page's connect failed: ${result.error.name}: ${result.error.message}`);
  return result;
}

function pageState(id: number): Promise<PageState> {
  return inPage(page.evaluate((i) => (window as unknown as HarnessWindow).harness.state(i), id), 'state');
}

/** Waits until the page's party has seen `count` presence events. */
async function pagePresenceEvents(id: number, count: number): Promise<boolean[]> {
  await page.waitForFunction(({ i, n }) => (window as unknown as HarnessWindow).harness.state(i).presence.length >= n, { i: id, n: count }, { timeout: STEP_TIMEOUT_MS });
  return (await pageState(id)).presence;
}

async function nodeParty(server: RunningServer, sid: Uint8Array, role: Role, transport: TransportName, protocol: ProtocolChoice): Promise<MailboxConnection> {
  const conn = await bounded(connect({ server: server.address, insecure: true, sid, role, transport, protocol }), `the Node party (${transport}) to connect`);
  nodeParties.push(conn);
  return conn;
}

const readers = new WeakMap<MailboxConnection, AsyncIterator<Uint8Array>>();

/** SHA-256 hex of the next `count` messages `conn` receives. */
async function receiveDigests(conn: MailboxConnection, count: number): Promise<string[]> {
  let it = readers.get(conn);
  if (!it) {
    it = conn[Symbol.asyncIterator]();
    readers.set(conn, it);
  }
  const digests: string[] = [];
  while (digests.length < count) {
    const r = await it.next();
    assert.ok(!r.done, `the Node party's iterator ended after ${digests.length} of ${count} messages`);
    digests.push(sha256(r.value));
  }
  return digests;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

const newSid = (): Uint8Array => new Uint8Array(randomBytes(64));

const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/** Random sizes in [0, MAX_MESSAGE_BYTES], the first two being the extremes. */
function messageSizes(count: number): number[] {
  const sizes = Array.from({ length: count }, () => randomInt(0, MAX_MESSAGE_BYTES + 1));
  if (count > 0) sizes[0] = 0;
  if (count > 1) sizes[1] = MAX_MESSAGE_BYTES;
  return sizes;
}

/**
 * `count` random messages each way at once between the page's party `id`
 * and `node`; each side's received digests must equal what the other sent,
 * in order.
 */
async function exchange(id: number, node: MailboxConnection, count: number): Promise<void> {
  const toPage = messageSizes(count);
  const toNode = messageSizes(count);
  const already = (await pageState(id)).receivedCount;
  const nodeSends = (async () => {
    const digests: string[] = [];
    for (const size of toPage) {
      const msg = new Uint8Array(randomBytes(size));
      digests.push(sha256(msg));
      await node.send(msg);
    }
    return digests;
  })();
  const [sentByNode, receivedByNode, sentByPage] = await bounded(
    Promise.all([
      nodeSends,
      receiveDigests(node, count),
      page.evaluate(({ i, sizes }) => (window as unknown as HarnessWindow).harness.sendRandom(i, sizes), { i: id, sizes: toNode }),
    ]),
    `${count} messages each way`,
    EXCHANGE_TIMEOUT_MS,
  );
  await page.waitForFunction(
    ({ i, n }) => (window as unknown as HarnessWindow).harness.state(i).receivedCount >= n,
    { i: id, n: already + count },
    { timeout: EXCHANGE_TIMEOUT_MS },
  );
  const receivedByPage = (await inPage(page.evaluate((i) => (window as unknown as HarnessWindow).harness.received(i), id), 'received digests')).slice(already);
  assert.deepEqual(receivedByPage, sentByNode, 'the page received what the Node party sent, in order');
  assert.deepEqual(receivedByNode, sentByPage, 'the Node party received what the page sent, in order');
}

function assertNoPageErrors(): void {
  assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
}

async function closeAllParties(): Promise<void> {
  if (browser?.isConnected()) {
    await inPage(page.evaluate(() => (window as unknown as HarnessWindow).harness.closeAll()), 'closeAll').catch(() => undefined);
  }
  await Promise.all(nodeParties.map((c) => c.close()));
  nodeParties = [];
}

describe('browser bundle in Chromium', () => {
  before(async () => {
    if (!existsSync(CHROMIUM_PATH)) {
      throw new Error(`Chromium not found at ${CHROMIUM_PATH}: the browser test needs it; install it with \`apt-get install -y chromium\` (Debian; CI does so in .ci/run) or point HASHMAIL_TEST_CHROMIUM at a Chromium binary`);
    }
    if (!existsSync(BUNDLE_FILE)) throw new Error(`${BUNDLE_FILE} is missing: run \`npm run build\` (it runs build:browser)`);
    ({ server: pageServer, url: pageUrl } = await startPageServer());
    browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, timeout: BROWSER_LAUNCH_TIMEOUT_MS });
    const context = await browser.newContext();
    page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(err.message));
    await page.goto(pageUrl, { timeout: STEP_TIMEOUT_MS });
    await page.waitForFunction(() => (window as unknown as HarnessWindow).harnessReady === true, undefined, { timeout: STEP_TIMEOUT_MS });
  });

  afterEach(closeAllParties);

  after(async () => {
    await closeAllParties();
    await browser?.close();
    browser = null;
    if (pageServer) {
      pageServer.closeAllConnections();
      await new Promise<void>((resolve) => pageServer!.close(() => resolve()));
      pageServer = null;
    }
    await Promise.all(servers.map((s) => s.stop()));
  });

  describe('protocol v2', () => {
    let server: RunningServer;
    before(async () => {
      server = await startServer();
      servers.push(server);
    });

    test('page first, Node party over gRPC attaches, leaves and comes back; 100 messages each way', async () => {
      const sid = newSid();
      const b = await attachedBrowserParty(server, { sidHex: toHex(flipSid(sid)), protocol: 'v2', role: 'app' });
      assert.equal(b.version, 2);
      assert.equal(b.peerPresent, false, 'the page waits for its peer');

      const node = await nodeParty(server, sid, 'node', 'grpc', 'v2');
      assert.equal(node.version, 2);
      assert.equal(node.peerPresent, true, "the Welcome tells the Node party the page is here");
      assert.deepEqual(await pagePresenceEvents(b.id, 1), [true], 'the page saw the Node party attach');
      assert.equal((await pageState(b.id)).peerPresent, true);

      await exchange(b.id, node, MESSAGES_EACH_WAY);

      await node.close();
      assert.deepEqual(await pagePresenceEvents(b.id, 2), [true, false], 'the page saw the Node party leave');

      const again = await nodeParty(server, sid, 'node', 'grpc', 'v2');
      assert.deepEqual(await pagePresenceEvents(b.id, 3), [true, false, true], 'the page saw it come back');
      await exchange(b.id, again, 5);
      await again.close();
      assert.deepEqual(await pagePresenceEvents(b.id, 4), [true, false, true, false]);
      const state = await pageState(b.id);
      assert.equal(state.ended, null, 'the page party is still attached');
      assert.equal(state.peerPresent, false);
      assertNoPageErrors();
    });

    test('the page computes the route as the directory does, looks it up (GET /v2/relay) on another instance and dials the relay it names', async () => {
      const sid = newSid();
      const pageRoute = await inPage(page.evaluate((hex) => (window as unknown as HarnessWindow).harness.route(hex), toHex(sid)), 'route');
      assert.equal(pageRoute, routeOfSid(sid));
      assert.equal(await inPage(page.evaluate((hex) => (window as unknown as HarnessWindow).harness.route(hex), toHex(flipSid(sid))), 'route'), pageRoute);

      const instance = await startLookupInstance(server.address);
      try {
        const options: PageConnectOptions = { server: `ws://${instance.httpAddress}`, sidHex: toHex(flipSid(sid)), transport: 'websocket', protocol: 'v2', role: 'app' };
        const result = await inPage(page.evaluate((o) => (window as unknown as HarnessWindow).harness.connect(o), options), 'connect through the lookup');
        if ('error' in result) assert.fail(`the page's connect failed: ${result.error.name}: ${result.error.message}`);
        assert.deepEqual(instance.lookups, [{ transport: 'http', route: pageRoute, create: true }]);
        assert.equal((await pageState(result.id)).relay, server.address, 'the page attached to the relay the lookup named');
        const node = await nodeParty(server, sid, 'node', 'grpc', 'v2');
        assert.equal(node.peerPresent, true, 'both parties on one relay');
        await exchange(result.id, node, 20);
        assertNoPageErrors();
      } finally {
        await instance.close();
      }
    });

    test('connection phrase: the bundle decodes a v2 URL, refuses a bad checksum, and connects from the URL alone', async () => {
      const entropy = newPhraseEntropy();
      const url = await encodeConnectionPhrase({ entropy, mailboxes: [server.address, '[::1]:443'] });
      const decode = (text: string): Promise<PageDecoded> => inPage(page.evaluate((t) => (window as unknown as HarnessWindow).harness.decodePhrase(t), text), 'decodePhrase');
      assert.deepEqual(await decode(url), { version: 2, mailboxes: [server.address, '[::1]:443'], words: entropyToWords(entropy, await loadEnglishWordlist()), entropy: toHex(entropy) });
      const bad = await decode(url.replace(/check=(.)/, (_, c: string) => `check=${c === '0' ? '1' : '0'}`));
      assert.ok('error' in bad && bad.error.phraseError && bad.error.code === 'BAD_CHECKSUM', JSON.stringify(bad));

      const node = await bounded(connect({ phrase: url, role: 'node', insecure: true }), 'the Node party to connect from the phrase');
      nodeParties.push(node);
      const result = await inPage(page.evaluate((o) => (window as unknown as HarnessWindow).harness.connect(o), { phrase: url, insecure: true, role: 'app' as Role }), 'connect from the phrase');
      if ('error' in result) assert.fail(`the page's connect failed: ${result.error.name}: ${result.error.message}`);
      assert.equal(result.version, 2);
      assert.equal(result.peerPresent, true, 'the page and the Node party share the session the phrase names');
      await exchange(result.id, node, 10);
      assertNoPageErrors();
    });

    test('Node party over WebSocket first, then the page; 100 messages each way; the Node party leaves', async () => {
      const sid = newSid();
      const node = await nodeParty(server, sid, 'node', 'websocket', 'v2');
      assert.equal(node.peerPresent, false);
      const nodeSeesPage = bounded(
        new Promise<void>((resolve) => node.once('presence', (present) => present && resolve())),
        'the Node party to see the page',
      );

      const b = await attachedBrowserParty(server, { sidHex: toHex(flipSid(sid)), protocol: 'v2', role: 'app' });
      assert.equal(b.version, 2);
      assert.equal(b.peerPresent, true, "the page's Welcome says the Node party is here");
      await nodeSeesPage;

      await exchange(b.id, node, MESSAGES_EACH_WAY);

      await node.close();
      // Presence at attach came with the Welcome (before connect resolved); the leave is the first event.
      assert.deepEqual(await pagePresenceEvents(b.id, 1), [false], 'the page saw the Node party leave');
      assertNoPageErrors();
    });
  });

  describe(`v1-only relay (${Object.entries(V1_ONLY).map(([k, v]) => `${k}=${v}`).join(' ')})`, () => {
    let server: RunningServer;
    before(async () => {
      server = await startServer({ env: V1_ONLY });
      servers.push(server);
    });

    test("protocol 'v2': the browser cannot see the 404, so ConnectionLost (V2HandshakeUnexplained), not UnsupportedVersion as in Node", async () => {
      const result = await browserParty(server, { sidHex: toHex(newSid()), protocol: 'v2', role: 'app' });
      assert.ok('error' in result, 'a v2-only connect to a v1-only relay attached');
      assert.equal(result.error.name, 'V2HandshakeUnexplained', result.error.message);
      assert.ok(result.error.connectionLost, 'it is a ConnectionLost');
      assert.equal(result.error.unsupportedVersion, false);
      assert.equal(result.error.code, 14, 'UNAVAILABLE');

      // Node's `ws` reads the status, so the same call there is UnsupportedVersion.
      const inNode = await connect({ server: server.address, insecure: true, sid: newSid(), transport: 'websocket', protocol: 'v2' }).then(
        (conn) => {
          nodeParties.push(conn);
          return assert.fail('Node attached over v2 to a v1-only relay');
        },
        (err: unknown) => err,
      );
      assert.ok(inNode instanceof UnsupportedVersion, String(inNode));
      assertNoPageErrors();
    });

    test("protocol 'auto': the page (app) probes v1 and falls back; a Node node over gRPC creates the boxes; 100 messages each way", async () => {
      const sid = newSid();
      // The page first: in v1 an app retries "stream not found" until the node has created the boxes.
      const pageConnecting = browserParty(server, { sidHex: toHex(flipSid(sid)), protocol: 'auto', role: 'app' });
      const node = await nodeParty(server, sid, 'node', 'grpc', 'auto');
      assert.equal(node.version, 1);
      const result = await pageConnecting;
      if ('error' in result) assert.fail(`the page's connect failed: ${result.error.name}: ${result.error.message}`);
      assert.equal(result.version, 1, 'the page fell back to v1');
      assert.equal(result.peerPresent, false, 'v1 cannot tell presence');

      await exchange(result.id, node, MESSAGES_EACH_WAY);
      const state = await pageState(result.id);
      assert.deepEqual(state.presence, [], 'no presence events in v1');
      assert.equal(state.ended, null);
      assertNoPageErrors();
    });

    test("the page as the node creates the boxes with fetch (CORS preflight) and talks v1 to a Node app over WebSocket", async () => {
      const sid = newSid();
      const b = await attachedBrowserParty(server, { sidHex: toHex(sid), protocol: 'auto', role: 'node' });
      assert.equal(b.version, 1);
      const app = await nodeParty(server, flipSid(sid), 'app', 'websocket', 'auto');
      assert.equal(app.version, 1);
      await exchange(b.id, app, 20);
      assertNoPageErrors();
    });
  });

  test('an unreachable relay rejects the first connect at once with ConnectionLost', async () => {
    const probe = createTcpServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((resolve) => probe.close(() => resolve()));
    const options: PageConnectOptions = { server: `ws://127.0.0.1:${port}`, sidHex: toHex(newSid()), transport: 'websocket', protocol: 'auto', role: 'app' };
    const result = await inPage(page.evaluate((o) => (window as unknown as HarnessWindow).harness.connect(o), options), 'connect to a closed port');
    assert.ok('error' in result, 'attached to a closed port');
    assert.ok(result.error.connectionLost, `${result.error.name}: ${result.error.message}`);
    assertNoPageErrors();
  });
});
