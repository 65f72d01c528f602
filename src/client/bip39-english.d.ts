// Shape of @scure/bip39's English word list module, for the compiler while the
// package is not installed yet. Delete this file once @scure/bip39 is a dependency.
declare module '@scure/bip39/wordlists/english.js' {
  export const wordlist: string[];
}
