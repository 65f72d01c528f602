/**
 * Known-good first-connection SIDs of the legacy pairing phrase (spec
 * section 1), copied from spec/vectors/phrase.json: the spec lives outside
 * this repository; test/unit/sid.test.ts checks the copy against it when
 * that file is next to the checkout.
 */
export interface PhraseVector {
  words: string;
  entropy: string;
  s2c: string;
  c2s: string;
}

export const PHRASE_VECTORS: readonly PhraseVector[] = [
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
