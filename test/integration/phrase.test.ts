/**
 * `hashmail phrase` as a user runs it (spawning dist/cli/main.js): the
 * --json objects of new, decode, qr and sid; the PNG QR code read back by an
 * independent decoder (zbarimg from Debian's zbar-tools, installed by
 * .ci/run: a missing one fails the test); the terminal QR within 80 columns;
 * errors on stderr with their exit codes. Then the client library connecting
 * from a URL made by `phrase new` to a real `hashmail serve`, with a dead
 * mailbox listed first.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { connect, type MailboxConnection } from '../../src/client/index.js';
import { withTimeout } from '../helpers/async-queue.js';
import { REFUSING_PORT } from '../helpers/etcd.js';
import { BIN, startServer, type RunningServer } from '../helpers/server.js';

const CLI_TIMEOUT_MS = 20_000;
const STEP_TIMEOUT_MS = 10_000;
const ZBARIMG = process.env.HASHMAIL_TEST_ZBARIMG ?? '/usr/bin/zbarimg';
const WORDS = 'abuse boss fly battle rubber wasp afraid hamster guide essence';
const ENTROPY = '0123456789abcdef0123456789a8';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout: CLI_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);
      resolve({ code: err ? Number(err.code) : 0, stdout, stderr });
    });
  });
}

const hashmail = (...args: string[]): Promise<Run> => run(process.execPath, [BIN, 'phrase', ...args]);

/** Runs a --json command: exit 0, nothing on stderr, exactly one JSON object on stdout. */
async function json(...args: string[]): Promise<Record<string, unknown>> {
  const r = await hashmail(...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stderr, '');
  assert.equal(r.stdout.trim().split('\n').length, 1, 'one line');
  const object = JSON.parse(r.stdout) as unknown;
  assert.ok(object && typeof object === 'object' && !Array.isArray(object));
  return object as Record<string, unknown>;
}

const sha512 = (hex: string): string => createHash('sha512').update(Buffer.from(hex, 'hex')).digest('hex');
const flip = (hex: string): string => hex.slice(0, -1) + (parseInt(hex.slice(-1), 16) ^ 1).toString(16);

let dir: string;
before(() => {
  dir = mkdtempSync(join(tmpdir(), 'hashmail-phrase-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('hashmail phrase', () => {
  test('new --json: url, words, entropy, mailbox; decode and sid agree with it', async () => {
    const made = await json('new', '--mailbox', 'Mailbox.Example.com:443', '--mailbox', '[2001:db8::1]:8443,127.0.0.1:10009');
    assert.deepEqual(Object.keys(made).sort(), ['entropy', 'mailbox', 'mailboxes', 'url', 'words']);
    assert.match(made.url as string, /^hashmail\+v2:[a-z]+(-[a-z]+){9}\?mailbox=mailbox\.example\.com:443&mailbox=%5B2001:db8::1%5D:8443&mailbox=127\.0\.0\.1:10009&check=[0-9a-f]{8}$/);
    assert.equal(made.mailbox, 'mailbox.example.com:443');
    assert.deepEqual(made.mailboxes, ['mailbox.example.com:443', '[2001:db8::1]:8443', '127.0.0.1:10009']);
    assert.match(made.entropy as string, /^[0-9a-f]{27}[048c]$/, '14 bytes, last 2 bits zero');
    assert.equal((made.words as string[]).length, 10);

    const decoded = await json('decode', made.url as string);
    assert.deepEqual(decoded, { version: 2, mailbox: made.mailbox, mailboxes: made.mailboxes, words: made.words, entropy: made.entropy });
    const sids = await json('sid', made.url as string);
    assert.deepEqual(sids, { entropy: made.entropy, s2c: sha512(made.entropy as string), c2s: flip(sha512(made.entropy as string)) });
  });

  test('decode and sid of legacy words, as 10 arguments or one quoted string: v1, no mailbox', async () => {
    const expected = { version: 1, words: WORDS.split(' '), entropy: ENTROPY };
    assert.deepEqual(await json('decode', ...WORDS.split(' ')), expected);
    assert.deepEqual(await json('decode', WORDS), expected);
    assert.deepEqual(await json('sid', ...WORDS.split(' ')), { entropy: ENTROPY, s2c: sha512(ENTROPY), c2s: flip(sha512(ENTROPY)) });
    const text = await hashmail('decode', WORDS);
    assert.match(text.stdout, /^version: v1 \(a legacy 10-word pairing phrase/);
  });

  test('qr --png is read back to the same URL by zbarimg; --svg is an SVG; the terminal code fits 80 columns', async () => {
    const { url } = await json('new', '--mailbox', 'mailbox.terminal.lightning.today:443');
    const png = join(dir, 'phrase.png');
    const svg = join(dir, 'phrase.svg');
    assert.deepEqual(await json('qr', url as string, '--png', png, '--svg', svg), { url, errorCorrection: 'M', png, svg });
    const scanned = await run(ZBARIMG, ['--quiet', '--raw', png]);
    assert.equal(scanned.code, 0, scanned.stderr);
    assert.equal(scanned.stdout.trim(), url);
    assert.match(readFileSync(svg, 'utf8'), /^<svg [^>]*viewBox/);

    // The longest words and an onion mailbox: still within 80 columns.
    const long = await json('new', '--mailbox', `${'a'.repeat(56)}.onion:443`);
    for (const u of [url, long.url] as string[]) {
      const terminal = await hashmail('qr', u);
      assert.equal(terminal.code, 0, terminal.stderr);
      // eslint-disable-next-line no-control-regex
      const lines = terminal.stdout.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter(Boolean);
      assert.ok(lines.length > 20, 'a QR code was printed');
      assert.ok(lines.every((l) => [...l].length <= 80), `widest line ${Math.max(...lines.map((l) => [...l].length))}`);
      assert.ok(lines.every((l) => /^[ █▀▄]+$/.test(l)));
    }
  });

  test('errors: the reason on stderr, exit 1; usage mistakes exit 2', async () => {
    const typo = await hashmail('decode', ...WORDS.replace('hamster', 'hamstr').split(' '));
    assert.equal(typo.code, 1);
    assert.equal(typo.stdout, '');
    assert.match(typo.stderr, /^hashmail phrase decode: unknown word 'hamstr' \(word 8 .*did you mean 'hamster'\?\n$/);
    const cases: Array<[string[], RegExp]> = [
      [['decode', 'https://example.com/'], /scheme is 'https:'/],
      [['sid', 'hashmail+v9:abandon?mailbox=a:1&check=00000000'], /unknown connection phrase version v9/],
      [['decode', `hashmail+v2:${WORDS.replace(/ /g, '-')}?mailbox=a:1&check=00000000`], /bad checksum/],
      [['decode', 'abandon', 'abandon'], /has 10 words, got 2/],
      [['new', '--mailbox', 'example.com'], /bad mailbox address 'example.com': expected HOST:PORT/],
      [['qr', WORDS], /qr needs a hashmail\+v2: URL/],
    ];
    for (const [args, message] of cases) {
      const r = await hashmail(...args);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
    for (const args of [[], ['frobnicate'], ['new'], ['decode'], ['new', '--mailbox', 'a:1', '--bogus'], ['qr', 'x', '--json']]) {
      const r = await hashmail(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /Usage: hashmail phrase new/);
    }
    // Too wide for 80 columns even at level L: the URL and words of `new` are still printed; `qr` refuses.
    const host = (c: string): string => Array(4).fill(c.repeat(60)).join('.');
    const wide = await hashmail('new', '--mailbox', `${host('a')}:1`, '--mailbox', `${host('b')}:1`);
    assert.equal(wide.code, 0, wide.stderr);
    assert.match(wide.stdout, /^hashmail\+v2:.*\n\nwords: [a-z ]+\n.*\(the phrase is too long for a QR code in 80 columns: write it with --png FILE or --svg FILE\)\n$/s);
    const refused = await hashmail('qr', wide.stdout.split('\n')[0]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /too long for a QR code in 80 columns/);

    const help = await hashmail('--help');
    assert.equal(help.code, 0);
    assert.match(help.stdout, /hashmail phrase sid URL\|WORDS/);
  });
});

describe('client library from a v2 connection phrase', () => {
  let server: RunningServer;
  const open: MailboxConnection[] = [];
  before(async () => {
    server = await startServer();
  });
  after(async () => {
    await Promise.all(open.map((c) => c.close()));
    await server?.stop();
  });

  test('node (gRPC) and app (WebSocket) meet on the phrase; a dead first mailbox is skipped', async () => {
    const dead = REFUSING_PORT;
    const { url } = await json('new', '--mailbox', `127.0.0.1:${dead}`, '--mailbox', server.address);
    const phrase = url as string;
    // `server` is the app's default for legacy phrases: a v2 phrase's own mailboxes win.
    const node = await withTimeout(connect({ phrase, role: 'node', insecure: true, server: `127.0.0.1:${dead}` }), STEP_TIMEOUT_MS, 'node connect');
    open.push(node);
    const app = await withTimeout(connect({ phrase, transport: 'websocket', insecure: true }), STEP_TIMEOUT_MS, 'app connect');
    open.push(app);
    assert.equal(node.version, 2);
    assert.equal(app.version, 2);
    const appIt = app[Symbol.asyncIterator]();
    const nodeIt = node[Symbol.asyncIterator]();
    await withTimeout(node.send(Buffer.from('from the node')), STEP_TIMEOUT_MS, 'node send');
    assert.equal(Buffer.from((await withTimeout(appIt.next(), STEP_TIMEOUT_MS, 'app receive')).value as Uint8Array).toString(), 'from the node');
    await withTimeout(app.send(Buffer.from('from the app')), STEP_TIMEOUT_MS, 'app send');
    assert.equal(Buffer.from((await withTimeout(nodeIt.next(), STEP_TIMEOUT_MS, 'node receive')).value as Uint8Array).toString(), 'from the app');
  });
});
