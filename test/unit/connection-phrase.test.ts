/**
 * The v2 connection phrase (docs/connection-phrase.md) and the legacy words,
 * through src/client/phrase.ts with the real BIP-39 English list: random
 * round trips, fixed vectors whose entropy and SIDs this test computes
 * itself with node:crypto, every rejection path with its own code and
 * message, future fields ignored, and connect's options from a phrase.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { before, describe, test } from 'node:test';
import { resolveOptions } from '../../src/client/options.js';
import {
  decodePhrase,
  encodeConnectionPhrase,
  entropyToSids,
  entropyToWords,
  loadEnglishWordlist,
  MAX_MAILBOXES,
  newPhraseEntropy,
  parseMailbox,
  PhraseError,
  phraseToSids,
  type PhraseErrorCode,
} from '../../src/client/phrase.js';
import { PHRASE_VECTORS } from '../helpers/phrase-vectors.js';

const ROUND_TRIPS = 1_000;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const ONION = `${'abcdefghijklmnopqrstuvwxyz234567'.repeat(2).slice(0, 56)}.onion:443`;

let wordlist: readonly string[];
before(async () => {
  wordlist = await loadEnglishWordlist();
});

/** Entropy of words as the legacy spec says, written here without the module: 11 bits a word, MSB first, 2 zero bits. */
function independentEntropy(words: string[]): Buffer {
  const bits = words.map((w) => wordlist.indexOf(w).toString(2).padStart(11, '0')).join('') + '00';
  return Buffer.from(bits.match(/.{8}/g)!.map((byte) => parseInt(byte, 2)));
}

function independentSids(entropy: Buffer): { s2c: string; c2s: string } {
  const s2c = createHash('sha512').update(entropy).digest();
  const c2s = Buffer.from(s2c);
  c2s[63] ^= 0x01;
  return { s2c: s2c.toString('hex'), c2s: c2s.toString('hex') };
}

/** The check field as the spec defines it, computed here: SHA-256 of the canonical text, first 4 bytes. */
function independentCheck(canonical: string): string {
  return createHash('sha256').update(canonical.toLowerCase()).digest('hex').slice(0, 8);
}

async function rejects(text: string, code: PhraseErrorCode, message: RegExp): Promise<void> {
  await assert.rejects(decodePhrase(text), (err: unknown) => {
    assert.ok(err instanceof PhraseError, `a PhraseError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    assert.match(err.message, message);
    return true;
  });
}

const WORDS = 'abuse boss fly battle rubber wasp afraid hamster guide essence';
const URL_WORDS = WORDS.replace(/ /g, '-');

function urlWith(query: string): string {
  const canonical = `hashmail+v2:${URL_WORDS}?${decodeURIComponent(query)}`;
  return `hashmail+v2:${URL_WORDS}?${query}&check=${independentCheck(canonical)}`;
}

describe('connection phrase: round trips and vectors', () => {
  test(`${ROUND_TRIPS} random entropies: words and URL decode back to the same entropy, words and mailboxes`, async () => {
    for (let i = 0; i < ROUND_TRIPS; i++) {
      const entropy = newPhraseEntropy();
      assert.equal(entropy[13] & 0x03, 0, 'the 2 padding bits are zero');
      const words = entropyToWords(entropy, wordlist);
      assert.deepEqual(independentEntropy(words), Buffer.from(entropy));
      const legacy = await decodePhrase(words.join(' '));
      assert.equal(legacy.version, 1);
      assert.deepEqual(legacy.entropy, entropy);
      const mailboxes = i % 3 === 0 ? ['mailbox.example.com:443'] : i % 3 === 1 ? ['[2001:db8::1]:8443', ONION] : ['10.0.0.1:1', 'a.b:65535', 'c-d.e:2', 'f:3'];
      const url = await encodeConnectionPhrase({ entropy, mailboxes });
      const decoded = await decodePhrase(url);
      assert.deepEqual(decoded, { version: 2, words, entropy, mailboxes });
    }
  });

  const vectors = [
    ...PHRASE_VECTORS.map((v) => ({ name: v.words.split(' ').slice(0, 2).join(' '), words: v.words, s2c: v.s2c })),
    { name: 'all-zero entropy', words: Array(10).fill('abandon').join(' '), s2c: null },
    { name: 'all-ones entropy (every word bit set)', words: Array(10).fill('zoo').join(' '), s2c: null },
  ];
  for (const v of vectors) {
    test(`vector ${v.name}: words -> entropy -> SIDs match node:crypto`, async () => {
      const words = v.words.split(' ');
      const entropy = independentEntropy(words);
      const sids = independentSids(entropy);
      if (v.s2c) assert.equal(sids.s2c, v.s2c, 'the independent derivation agrees with the spec vectors');
      const decoded = await decodePhrase(v.words);
      assert.equal(hex(decoded.entropy), entropy.toString('hex'));
      const got = await phraseToSids(v.words);
      assert.deepEqual({ s2c: hex(got.s2c), c2s: hex(got.c2s) }, sids);
      const url = await encodeConnectionPhrase({ entropy: decoded.entropy, mailboxes: ['127.0.0.1:443'] });
      assert.equal(hex((await phraseToSids(url)).s2c), sids.s2c, 'the URL gives the same SIDs');
    });
  }

  test('all-zero and all-ones 14-byte entropy: the SIDs are SHA-512 of it; words refuse set padding bits', async () => {
    for (const byte of [0x00, 0xff]) {
      const entropy = Buffer.alloc(14, byte);
      const sids = await entropyToSids(entropy);
      assert.deepEqual({ s2c: hex(sids.s2c), c2s: hex(sids.c2s) }, independentSids(entropy));
    }
    assert.equal(entropyToWords(new Uint8Array(14), wordlist).join(' '), Array(10).fill('abandon').join(' '));
    assert.throws(() => entropyToWords(new Uint8Array(14).fill(0xff), wordlist), (e: PhraseError) => e.code === 'BAD_ENTROPY' && /last 2 bits/.test(e.message));
    assert.throws(() => entropyToWords(new Uint8Array(13), wordlist), (e: PhraseError) => e.code === 'BAD_ENTROPY');
  });

  test('the check field is SHA-256 of the canonical text as documented; a future field is covered and ignored', async () => {
    const entropy = independentEntropy(WORDS.split(' '));
    const url = await encodeConnectionPhrase({ entropy, mailboxes: ['Mailbox.Example.com:443', '[2001:DB8::1]:8443'] });
    assert.equal(url, urlWith('mailbox=mailbox.example.com:443&mailbox=%5B2001:db8::1%5D:8443'));
    const future = urlWith('mailbox=m.example:443&relay-hint=x%20y&v3.thing=1');
    const decoded = await decodePhrase(future);
    assert.deepEqual(decoded.mailboxes, ['m.example:443']);
    assert.equal(hex(decoded.entropy), entropy.toString('hex'));
  });

  test('the example in docs/connection-phrase.md decodes', async () => {
    const doc = readFileSync(new URL('../../docs/connection-phrase.md', import.meta.url), 'utf8');
    const example = /^hashmail\+v2:abuse\S+$/m.exec(doc)?.[0];
    assert.ok(example, 'the example is in the doc');
    const decoded = await decodePhrase(example);
    assert.equal(decoded.words.join(' '), WORDS);
    assert.deepEqual(decoded.mailboxes, ['mailbox.example.com:443', '[2001:db8::1]:8443']);
  });

  test('leniency: upper case, raw IPv6 brackets, surrounding whitespace, legacy words split by hyphens or commas', async () => {
    const url = urlWith('mailbox=%5B::1%5D:443');
    assert.deepEqual((await decodePhrase(`  ${url.toUpperCase()}\n`)).mailboxes, ['[::1]:443']);
    assert.deepEqual((await decodePhrase(url.replace('%5B', '[').replace('%5D', ']'))).mailboxes, ['[::1]:443']);
    assert.equal((await decodePhrase(URL_WORDS)).version, 1);
    assert.equal((await decodePhrase(WORDS.replace(/ /g, ', '))).version, 1);
  });
});

describe('connection phrase: each rejection has its own code and message', () => {
  test('wrong scheme', async () => {
    await rejects('https://mailbox.example.com/abandon', 'WRONG_SCHEME', /scheme is 'https:', expected 'hashmail\+v2:'/);
    await rejects(`hashmail:${URL_WORDS}?mailbox=a:1&check=00000000`, 'WRONG_SCHEME', /'hashmail:'/);
  });

  test('unknown version names the versions this build knows', async () => {
    await rejects(urlWith('mailbox=a:1').replace('+v2', '+v3'), 'UNKNOWN_VERSION', /unknown connection phrase version v3: this build reads v2 .* and v1/);
  });

  test('bad checksum: a mistyped valid word, a changed mailbox, truncation, a missing or misplaced check', async () => {
    const url = urlWith('mailbox=mailbox.example.com:443');
    await rejects(url.replace('boss', 'bus'), 'BAD_CHECKSUM', /check does not match/);
    await rejects(url.replace('example', 'exmaple'), 'BAD_CHECKSUM', /check does not match/);
    await rejects(url.slice(0, -3), 'BAD_CHECKSUM', /got 5 characters: is it truncated/);
    await rejects(url.slice(0, url.indexOf('&check')), 'BAD_CHECKSUM', /no check field: is it truncated/);
    await rejects(url.slice(0, url.indexOf('?')), 'BAD_CHECKSUM', /truncated/);
    await rejects(`${url}&later=1`, 'BAD_CHECKSUM', /check must be its last field/);
  });

  test('bad address', async () => {
    const cases: Array<[string, RegExp]> = [
      ['mailbox=example.com', /expected HOST:PORT/],
      ['mailbox=example.com:0', /port must be 1 to 65535/],
      ['mailbox=example.com:65536', /port must be 1 to 65535/],
      ['mailbox=2001:db8::1:443', /IPv6 address goes in brackets/],
      ['mailbox=%5B2001:db8::zz%5D:443', /IPv6/],
      ['mailbox=%5B1:2:3:4:5:6:7:8:9%5D:443', /not a valid IPv6/],
      ['mailbox=300.1.1.1:443', /IPv4 octet/],
      ['mailbox=abcdefghijklmnop.onion:443', /v3 address: 56 base32/],
      ['mailbox=-bad-.example:443', /letters, digits and hyphens/],
      ['mailbox=a_b.example:443', /letters, digits and hyphens/],
      ['other=1', /names no mailbox/],
      [Array(MAX_MAILBOXES + 1).fill('mailbox=a:1').join('&'), new RegExp(`at most ${MAX_MAILBOXES} mailboxes`)],
    ];
    for (const [query, message] of cases) await rejects(urlWith(query), 'BAD_ADDRESS', message);
    assert.throws(() => parseMailbox('a:1:2'), (e: PhraseError) => e.code === 'BAD_ADDRESS');
    await assert.rejects(encodeConnectionPhrase({ entropy: new Uint8Array(14), mailboxes: [] }), (e: PhraseError) => e.code === 'BAD_ADDRESS');
  });

  test('wrong word count, in the URL and as legacy words', async () => {
    await rejects(WORDS.split(' ').slice(0, 9).join(' '), 'WORD_COUNT', /has 10 words, got 9/);
    await rejects(`${WORDS} zoo`, 'WORD_COUNT', /has 10 words, got 11/);
    await rejects(urlWith('mailbox=a:1').replace('boss-', ''), 'WORD_COUNT', /got 9/);
  });

  test('unknown word: named, with the closest valid word (prefix, edit, transposition)', async () => {
    const swap = (word: string): string => WORDS.replace('hamster', word);
    await rejects(swap('hams'), 'UNKNOWN_WORD', /unknown word 'hams' \(word 8 .*did you mean 'hamster'\?/);
    await rejects(swap('hamstr'), 'UNKNOWN_WORD', /did you mean 'hamster'/);
    await rejects(swap('bso'), 'UNKNOWN_WORD', /did you mean '(boss|bus|also)'/);
    await rejects(WORDS.replace('guide', 'gudie'), 'UNKNOWN_WORD', /'gudie'.*did you mean 'guide'/);
    await rejects(urlWith('mailbox=a:1').replace('afraid', 'afriad'), 'UNKNOWN_WORD', /'afriad' \(word 7.*did you mean 'afraid'/);
  });

  test('malformed fields and oversized input', async () => {
    await rejects(`hashmail+v2:${URL_WORDS}?mailbox&check=00000000`, 'MALFORMED', /not name=value/);
    await rejects(`hashmail+v2:${URL_WORDS}?x=%zz&check=00000000`, 'MALFORMED', /%-escape/);
    await rejects(`hashmail+v2:${'a'.repeat(5000)}`, 'MALFORMED', /at most 2048 characters/);
  });
});

describe('connect options from a phrase', () => {
  test('a v2 URL gives the mailboxes in order and protocol v2; `server` is not consulted', async () => {
    const entropy = Buffer.from(randomBytes(14));
    entropy[13] &= 0xfc;
    const url = await encodeConnectionPhrase({ entropy, mailboxes: ['127.0.0.1:1', '[::1]:2'] });
    const sids = independentSids(entropy);
    const app = await resolveOptions({ phrase: url, insecure: true, server: 'ignored.example:443' }, 'grpc');
    assert.deepEqual(app.servers.map((s) => s.authority), ['127.0.0.1:1', '[::1]:2']);
    assert.equal(app.protocol, 'v2');
    assert.equal(hex(app.sid), sids.s2c);
    const node = await resolveOptions({ phrase: url, insecure: true, role: 'node', protocol: 'auto' }, 'grpc');
    assert.equal(hex(node.sid), sids.c2s);
    assert.equal(node.protocol, 'auto');
    await assert.rejects(resolveOptions({ phrase: url, protocol: 'v1' }, 'grpc'), /contradicts the v2 connection phrase/);
  });

  test('a legacy phrase still needs server and negotiates as before; a bad phrase rejects with a PhraseError', async () => {
    await assert.rejects(resolveOptions({ phrase: WORDS }, 'grpc'), /server is required/);
    const legacy = await resolveOptions({ phrase: WORDS, server: '127.0.0.1:1', insecure: true }, 'grpc');
    assert.equal(legacy.protocol, 'auto');
    assert.equal(hex(legacy.sid), independentSids(independentEntropy(WORDS.split(' '))).s2c);
    await assert.rejects(resolveOptions({ phrase: 'nostr+walletconnect://x', server: 'a:1' }, 'grpc'), PhraseError);
  });
});
