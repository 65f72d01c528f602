/**
 * Pairing phrase -> SIDs (legacy spec section 1). Vectors copied from
 * shared/spec/vectors/phrase.json. The word list is injected (the vector
 * words at their BIP-39 English positions) so the derivation is tested
 * whether or not @scure/bip39 is installed; with it installed, the real list
 * is checked against the same vectors.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { phraseToEntropy, phraseToSids } from '../../src/client/phrase.js';
import { resolveOptions } from '../../src/client/options.js';

const VECTORS = [
  {
    words: 'abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon',
    entropy: '0000000000000000000000000000',
    s2c: '7cf95cde6d8d85f13497ddbabc60a56bca0abeabd2bc3e723c0a4a8c0784b14c4ee3317620b79d260d42608c8b907571499187078d14304a5e7a84bc55193ce9',
    c2s: '7cf95cde6d8d85f13497ddbabc60a56bca0abeabd2bc3e723c0a4a8c0784b14c4ee3317620b79d260d42608c8b907571499187078d14304a5e7a84bc55193ce8',
  },
  {
    words: 'zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo',
    entropy: 'fffffffffffffffffffffffffffc',
    s2c: '84012c767e9537c33dd1908571680f4c8d5b97555b9f7047d21e7587a548b5deef536db4bb706ce8b97d91d2b41f41e506a765852cce08ce002c649a98cc39ba',
    c2s: '84012c767e9537c33dd1908571680f4c8d5b97555b9f7047d21e7587a548b5deef536db4bb706ce8b97d91d2b41f41e506a765852cce08ce002c649a98cc39bb',
  },
  {
    words: 'abuse boss fly battle rubber wasp afraid hamster guide essence',
    entropy: '0123456789abcdef0123456789a8',
    s2c: '4f06abf41018b2d606d19101907a785673f9fb6c84c4819c227e13d68cefc2595e2ed0497c6d4907c564088ddf66d3b6b58bac1e1594c9b187b96b27d9ade90b',
    c2s: '4f06abf41018b2d606d19101907a785673f9fb6c84c4819c227e13d68cefc2595e2ed0497c6d4907c564088ddf66d3b6b58bac1e1594c9b187b96b27d9ade90a',
  },
];

/** Positions of the vector words in the BIP-39 English list. */
const BIP39_POSITIONS: Record<string, number> = {
  abandon: 0,
  abuse: 9,
  afraid: 36,
  battle: 154,
  boss: 209,
  essence: 618,
  fly: 719,
  guide: 828,
  hamster: 837,
  rubber: 1510,
  wasp: 1980,
  zoo: 2047,
};

function testWordlist(): string[] {
  const list = Array.from({ length: 2048 }, (_, i) => `filler${i}`);
  for (const [word, index] of Object.entries(BIP39_POSITIONS)) list[index] = word;
  return list;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

async function realWordlist(): Promise<readonly string[] | null> {
  try {
    const { loadEnglishWordlist } = await import('../../src/client/wordlist.js');
    return await loadEnglishWordlist();
  } catch {
    return null;
  }
}

describe('client: pairing phrase -> SID', () => {
  const wordlist = testWordlist();

  for (const v of VECTORS) {
    test(`vector "${v.words.split(' ').slice(0, 2).join(' ')} ..."`, async () => {
      assert.equal(hex(phraseToEntropy(v.words, wordlist)), v.entropy);
      const sids = await phraseToSids(v.words, wordlist);
      assert.equal(hex(sids.s2c), v.s2c);
      assert.equal(hex(sids.c2s), v.c2s);
    });
  }

  test('words are matched case-insensitively across any whitespace', async () => {
    const v = VECTORS[2];
    const messy = `  ${v.words.toUpperCase().split(' ').join(' \t\n ')}  `;
    assert.equal(hex((await phraseToSids(messy, wordlist)).s2c), v.s2c);
  });

  test('the app reads S2C, the node reads C2S', async () => {
    const v = VECTORS[2];
    const base = { server: '127.0.0.1:1', insecure: true, phrase: v.words, wordlist };
    assert.equal(hex((await resolveOptions(base, 'grpc')).sid), v.s2c, 'default role is app');
    assert.equal(hex((await resolveOptions({ ...base, role: 'app' }, 'grpc')).sid), v.s2c);
    assert.equal(hex((await resolveOptions({ ...base, role: 'node' }, 'grpc')).sid), v.c2s);
  });

  test('a wrong word count or an unknown word is refused without echoing the phrase', () => {
    assert.throws(() => phraseToEntropy('abandon abandon', wordlist), /has 10 words, got 2/);
    const err = (() => {
      try {
        phraseToEntropy('abandon abandon abandon secretword abandon abandon abandon abandon abandon abandon', wordlist);
      } catch (e) {
        return e as Error;
      }
      return null;
    })();
    assert.ok(err);
    assert.match(err.message, /word 4 of the pairing phrase/);
    assert.ok(!err.message.includes('secretword'));
    assert.throws(() => phraseToEntropy(VECTORS[0].words, ['too', 'short']), /2048 words/);
  });

  test('the real BIP-39 English list (@scure/bip39) gives the same SIDs', async (t) => {
    const real = await realWordlist();
    if (!real) return t.skip('@scure/bip39 is not installed');
    for (const v of VECTORS) assert.equal(hex((await phraseToSids(v.words)).s2c), v.s2c);
    for (const [word, index] of Object.entries(BIP39_POSITIONS)) assert.equal(real[index], word);
  });
});
