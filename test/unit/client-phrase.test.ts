/**
 * Pairing phrase -> SIDs (legacy spec section 1), against the shared vectors
 * (test/helpers/phrase-vectors.ts). The word list is injected (the vector
 * words at their BIP-39 English positions) so the derivation is tested
 * whether or not @scure/bip39 is installed; with it installed, the real list
 * is checked against the same vectors.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { phraseToEntropy, phraseToSids, PhraseError } from '../../src/client/phrase.js';
import { resolveOptions } from '../../src/client/options.js';
import { PHRASE_VECTORS } from '../helpers/phrase-vectors.js';

const VECTORS = PHRASE_VECTORS;

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
    const { loadEnglishWordlist } = await import('../../src/client/phrase.js');
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

  test('a wrong word count is refused; an unknown word is named with the closest valid word', () => {
    assert.throws(() => phraseToEntropy('abandon abandon', wordlist), /has 10 words, got 2/);
    assert.throws(
      () => phraseToEntropy('abandon abandon abandon abandn abandon abandon abandon abandon abandon abandon', wordlist),
      (err: Error) => err instanceof PhraseError && err.code === 'UNKNOWN_WORD' && /unknown word 'abandn' \(word 4 .*did you mean 'abandon'\?/.test(err.message),
    );
    assert.throws(() => phraseToEntropy(VECTORS[0].words, ['too', 'short']), /2048 words/);
  });

  test('the real BIP-39 English list (@scure/bip39) gives the same SIDs', async (t) => {
    const real = await realWordlist();
    if (!real) return t.skip('@scure/bip39 is not installed');
    for (const v of VECTORS) assert.equal(hex((await phraseToSids(v.words)).s2c), v.s2c);
    for (const [word, index] of Object.entries(BIP39_POSITIONS)) assert.equal(real[index], word);
  });
});
