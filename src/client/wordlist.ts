/**
 * The BIP-39 English word list, from @scure/bip39 (audited, no dependencies
 * at run time for the word lists). Loaded on first use so applications that
 * pass SIDs never load 2048 words.
 */
let cached: Promise<readonly string[]> | null = null;

/** Words in a valid BIP-39 list. */
export const WORDLIST_SIZE = 2048;

export function loadEnglishWordlist(): Promise<readonly string[]> {
  cached ??= import('@scure/bip39/wordlists/english.js').then(
    (mod) => {
      if (!Array.isArray(mod.wordlist) || mod.wordlist.length !== WORDLIST_SIZE) {
        throw new Error('@scure/bip39 English word list has an unexpected shape');
      }
      return mod.wordlist;
    },
    (err: unknown) => {
      cached = null;
      throw new Error('could not load the BIP-39 word list from @scure/bip39 (or pass `wordlist`)', { cause: err });
    },
  );
  return cached;
}
