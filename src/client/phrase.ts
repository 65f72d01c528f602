/**
 * Legacy LNC pairing phrase -> first-connection SIDs (legacy spec section 1):
 * 10 BIP-39 English words, 11 bits each, packed big-endian into 110 bits,
 * zero-padded to 14 bytes of entropy; S2C = SHA-512(entropy), C2S = S2C ^ 1.
 * Hashing uses WebCrypto (globalThis.crypto.subtle), present in Node 20 and
 * in browsers (secure contexts).
 *
 * Who reads what: the app ("client") reads S2C and writes C2S; the node
 * ("server", litd) reads C2S and writes S2C. `connect({ phrase, role })`
 * picks the SID this party reads accordingly.
 */
import { flipSid, SID_BYTES } from './bytes.js';
import { loadEnglishWordlist, WORDLIST_SIZE } from './wordlist.js';

export const PHRASE_WORDS = 10;
export const BITS_PER_WORD = 11;
/** 110 bits rounded up to whole bytes; the last 2 bits are zero. */
export const PHRASE_ENTROPY_BYTES = 14;

export interface PhraseSids {
  /** Server-to-client: the SID the app reads. */
  s2c: Uint8Array;
  /** Client-to-server: the SID the node reads (s2c with bit 0 of byte 63 flipped). */
  c2s: Uint8Array;
}

const indexes = new WeakMap<readonly string[], Map<string, number>>();

function indexOf(wordlist: readonly string[]): Map<string, number> {
  let index = indexes.get(wordlist);
  if (!index) {
    if (wordlist.length !== WORDLIST_SIZE) throw new TypeError(`a BIP-39 word list has ${WORDLIST_SIZE} words`);
    index = new Map(wordlist.map((w, i) => [w, i]));
    indexes.set(wordlist, index);
  }
  return index;
}

/**
 * The 14 bytes of entropy a phrase encodes. Words are separated by any
 * whitespace and matched case-insensitively. Errors name the position of a
 * bad word, never the word: the phrase is a secret.
 */
export function phraseToEntropy(phrase: string, wordlist: readonly string[]): Uint8Array {
  const words = phrase.trim().toLowerCase().split(/\s+/).filter((w) => w.length > 0);
  if (words.length !== PHRASE_WORDS) throw new TypeError(`a pairing phrase has ${PHRASE_WORDS} words, got ${words.length}`);
  const index = indexOf(wordlist);
  const entropy = new Uint8Array(PHRASE_ENTROPY_BYTES);
  let bit = 0;
  words.forEach((word, position) => {
    const value = index.get(word);
    if (value === undefined) throw new TypeError(`word ${position + 1} of the pairing phrase is not in the BIP-39 English list`);
    // MSB first: bit k of the 110-bit string is bit (7 - k % 8) of byte k / 8.
    for (let b = BITS_PER_WORD - 1; b >= 0; b--, bit++) {
      if ((value >> b) & 1) entropy[bit >> 3] |= 0x80 >> (bit & 7);
    }
  });
  return entropy;
}

/** SHA-512 through WebCrypto. */
export async function sha512(data: Uint8Array): Promise<Uint8Array> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) throw new Error('WebCrypto (crypto.subtle) is not available; in a browser it needs a secure context (https)');
  // A copy: digest() takes only ArrayBuffer-backed views.
  const digest = await subtle.digest('SHA-512', new Uint8Array(data));
  const out = new Uint8Array(digest);
  if (out.length !== SID_BYTES) throw new Error('SHA-512 returned an unexpected length');
  return out;
}

/**
 * The first-connection SID pair of a pairing phrase. `wordlist` defaults to
 * the BIP-39 English list from @scure/bip39.
 */
export async function phraseToSids(phrase: string, wordlist?: readonly string[]): Promise<PhraseSids> {
  const entropy = phraseToEntropy(phrase, wordlist ?? (await loadEnglishWordlist()));
  const s2c = await sha512(entropy);
  return { s2c, c2s: flipSid(s2c) };
}
