/**
 * Pairing phrases, both generations, in one browser-safe module shared by the
 * client library and the CLI (standard web APIs only: WebCrypto, TextEncoder,
 * URL; no Node built-ins). Specified in docs/connection-phrase.md.
 *
 * - v1, the legacy LNC pairing phrase (legacy spec section 1): 10 BIP-39
 *   English words, 11 bits each, packed MSB first into 110 bits, then 2 zero
 *   bits: 14 bytes of entropy. No checksum, no mailbox.
 * - v2, the connection phrase: a URL that also names the protocol version
 *   (in its scheme), the mailbox addresses and a checksum:
 *   `hashmail+v2:WORD-...-WORD?mailbox=HOST:PORT[&mailbox=...][&future=...]&check=HEX8`.
 *
 * Both give the first-connection SID pair: S2C = SHA-512(entropy), C2S = S2C
 * with bit 0 of byte 63 flipped. The app reads S2C and writes C2S; the node
 * ("server", litd) reads C2S and writes S2C.
 */
import { flipSid, SID_BYTES, toHex } from './bytes.js';

export const PHRASE_WORDS = 10;
export const BITS_PER_WORD = 11;
/** 110 bits rounded up to whole bytes; the last 2 bits are zero. */
export const PHRASE_ENTROPY_BYTES = 14;
/** Words in a valid BIP-39 list. */
export const WORDLIST_SIZE = 2048;
/** The protocol version this build writes, and the URL scheme that names it. */
export const PHRASE_VERSION = 2;
export const PHRASE_SCHEME = `hashmail+v${PHRASE_VERSION}`;
/** Phrase versions this build reads: 1 is the bare 10 words, 2 the URL. */
export const KNOWN_PHRASE_VERSIONS: readonly number[] = [1, PHRASE_VERSION];
/** Mailboxes one phrase may name (tried in order): enough for failover, small enough for a phone-sized QR code. */
export const MAX_MAILBOXES = 4;
/** The check field: the first 4 bytes of a SHA-256, 8 hex digits (a random change passes 1 time in 2^32). */
export const CHECK_BYTES = 4;
/** A URL longer than this is refused before parsing (4 maximal mailboxes and words fit well within it). */
export const MAX_PHRASE_CHARS = 2048;
/** Separator of the words in a v2 URL: unreserved in URLs, never part of a BIP-39 word. */
const URL_WORD_SEPARATOR = '-';
/** Words of a v1 phrase may be split by whitespace, commas or hyphens (as copied from a v2 URL). */
const LEGACY_WORD_SPLIT = /[\s,-]+/;

export type PhraseErrorCode =
  | 'WRONG_SCHEME'
  | 'UNKNOWN_VERSION'
  | 'BAD_CHECKSUM'
  | 'BAD_ADDRESS'
  | 'WORD_COUNT'
  | 'UNKNOWN_WORD'
  | 'MALFORMED'
  | 'BAD_ENTROPY';

/** Why a phrase was refused: one code per kind of mistake, a message a user can act on. */
export class PhraseError extends TypeError {
  override name = 'PhraseError';
  readonly code: PhraseErrorCode;
  constructor(code: PhraseErrorCode, message: string) {
    super(message);
    this.code = code;
  }
}

export interface PhraseSids {
  /** Server-to-client: the SID the app reads (SHA-512 of the entropy). */
  s2c: Uint8Array;
  /** Client-to-server: the SID the node reads (s2c with bit 0 of byte 63 flipped). */
  c2s: Uint8Array;
}

export interface DecodedPhrase {
  /** 2 for a connection phrase URL, 1 for a legacy 10-word phrase. */
  version: number;
  /** The 10 words, lower case. */
  words: string[];
  /** The 14 bytes of entropy. */
  entropy: Uint8Array;
  /** `HOST:PORT` mailboxes to try in order (IPv6 as `[ADDR]:PORT`); empty for v1. */
  mailboxes: string[];
}

// ---- the BIP-39 English word list ------------------------------------------

let cachedWordlist: Promise<readonly string[]> | null = null;

/**
 * The BIP-39 English list from @scure/bip39 (audited). Loaded on first use so
 * applications that pass SIDs never load 2048 words.
 */
export function loadEnglishWordlist(): Promise<readonly string[]> {
  cachedWordlist ??= import('@scure/bip39/wordlists/english.js').then(
    (mod) => {
      if (!Array.isArray(mod.wordlist) || mod.wordlist.length !== WORDLIST_SIZE) {
        throw new Error('@scure/bip39 English word list has an unexpected shape');
      }
      return mod.wordlist;
    },
    (err: unknown) => {
      cachedWordlist = null;
      throw new Error('could not load the BIP-39 word list from @scure/bip39 (or pass `wordlist`)', { cause: err });
    },
  );
  return cachedWordlist;
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

/** Edit distance counting an adjacent transposition as one edit (the common typo). */
function editDistance(a: string, b: string): number {
  const rows = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) rows[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d = Math.min(d, rows[i - 2][j - 2] + 1);
      rows[i][j] = d;
    }
  }
  return rows[a.length][b.length];
}

/**
 * The valid word a mistyped one most likely meant. BIP-39 English words are
 * unique in their first 4 letters, so a word sharing those wins; otherwise
 * the nearest by edit distance (the first in list order on a tie).
 */
export function closestWord(word: string, wordlist: readonly string[]): string {
  const lower = word.toLowerCase();
  if (lower.length >= 4) {
    const byPrefix = wordlist.find((w) => w.startsWith(lower.slice(0, 4)));
    if (byPrefix) return byPrefix;
  }
  let best = wordlist[0];
  let bestDistance = Infinity;
  for (const candidate of wordlist) {
    const d = editDistance(lower, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}

// ---- words <-> entropy -------------------------------------------------------

/**
 * The 14 bytes of entropy of 10 words (matched case-insensitively). Refuses
 * a wrong count, and an unknown word naming it with the closest valid word.
 */
export function wordsToEntropy(words: readonly string[], wordlist: readonly string[]): Uint8Array {
  if (words.length !== PHRASE_WORDS) {
    throw new PhraseError('WORD_COUNT', `a pairing phrase has ${PHRASE_WORDS} words, got ${words.length}`);
  }
  const index = indexOf(wordlist);
  const entropy = new Uint8Array(PHRASE_ENTROPY_BYTES);
  let bit = 0;
  words.forEach((raw, position) => {
    const word = raw.toLowerCase();
    const value = index.get(word);
    if (value === undefined) {
      const shown = word.length > 16 ? `${word.slice(0, 16)}...` : word;
      throw new PhraseError(
        'UNKNOWN_WORD',
        `unknown word '${shown}' (word ${position + 1} of the pairing phrase is not in the BIP-39 English list); did you mean '${closestWord(word, wordlist)}'?`,
      );
    }
    // MSB first: bit k of the 110-bit string is bit (7 - k % 8) of byte k / 8.
    for (let b = BITS_PER_WORD - 1; b >= 0; b--, bit++) {
      if ((value >> b) & 1) entropy[bit >> 3] |= 0x80 >> (bit & 7);
    }
  });
  return entropy;
}

/** The legacy phrase (words separated by whitespace) as entropy; see wordsToEntropy. */
export function phraseToEntropy(phrase: string, wordlist: readonly string[]): Uint8Array {
  return wordsToEntropy(splitLegacyWords(phrase), wordlist);
}

/** The 10 words of 14 bytes of entropy whose last 2 bits are zero (words carry 110 bits). */
export function entropyToWords(entropy: Uint8Array, wordlist: readonly string[]): string[] {
  if (!(entropy instanceof Uint8Array) || entropy.length !== PHRASE_ENTROPY_BYTES) {
    throw new PhraseError('BAD_ENTROPY', `pairing entropy is ${PHRASE_ENTROPY_BYTES} bytes`);
  }
  if ((entropy[PHRASE_ENTROPY_BYTES - 1] & 0x03) !== 0) {
    throw new PhraseError('BAD_ENTROPY', 'the last 2 bits of pairing entropy must be zero: 10 words carry 110 bits');
  }
  if (wordlist.length !== WORDLIST_SIZE) throw new TypeError(`a BIP-39 word list has ${WORDLIST_SIZE} words`);
  const words: string[] = [];
  let bit = 0;
  for (let w = 0; w < PHRASE_WORDS; w++) {
    let value = 0;
    for (let b = 0; b < BITS_PER_WORD; b++, bit++) value = (value << 1) | ((entropy[bit >> 3] >> (7 - (bit & 7))) & 1);
    words.push(wordlist[value]);
  }
  return words;
}

/** Fresh entropy for a new phrase: 110 random bits from the platform CSPRNG, 2 zero bits. */
export function newPhraseEntropy(): Uint8Array {
  const entropy = new Uint8Array(PHRASE_ENTROPY_BYTES);
  globalThis.crypto.getRandomValues(entropy);
  entropy[PHRASE_ENTROPY_BYTES - 1] &= 0xfc;
  return entropy;
}

function splitLegacyWords(phrase: string): string[] {
  return phrase.trim().split(LEGACY_WORD_SPLIT).filter((w) => w.length > 0);
}

// ---- SIDs --------------------------------------------------------------------

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new Error('WebCrypto (crypto.subtle) is not available; in a browser it needs a secure context (https)');
  return s;
}

/** SHA-512 through WebCrypto (Node 20 and browsers in secure contexts). */
export async function sha512(data: Uint8Array): Promise<Uint8Array> {
  // A copy: digest() takes only ArrayBuffer-backed views.
  const out = new Uint8Array(await subtle().digest('SHA-512', new Uint8Array(data)));
  if (out.length !== SID_BYTES) throw new Error('SHA-512 returned an unexpected length');
  return out;
}

/** The first-connection SID pair of pairing entropy. */
export async function entropyToSids(entropy: Uint8Array): Promise<PhraseSids> {
  const s2c = await sha512(entropy);
  return { s2c, c2s: flipSid(s2c) };
}

/**
 * The first-connection SID pair of a legacy 10-word phrase or a v2 URL.
 * `wordlist` defaults to the BIP-39 English list from @scure/bip39.
 */
export async function phraseToSids(phrase: string, wordlist?: readonly string[]): Promise<PhraseSids> {
  return entropyToSids((await decodePhrase(phrase, wordlist)).entropy);
}

// ---- mailbox addresses -------------------------------------------------------

const MAX_HOST_CHARS = 253;
const MAX_PORT = 65535;
const DNS_LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;
/** A v3 onion service: 56 base32 characters (v2's 16 are retired by Tor). */
const ONION_V3_LABEL = /^[a-z2-7]{56}$/;
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function badAddress(text: string, why: string): PhraseError {
  const shown = text.length > 80 ? `${text.slice(0, 80)}...` : text;
  return new PhraseError('BAD_ADDRESS', `bad mailbox address '${shown}': ${why}`);
}

/**
 * A mailbox `HOST:PORT` in canonical form (lower case; IPv6 as `[ADDR]:PORT`
 * in WHATWG URL's compressed form). Hosts: DNS names, v3 `.onion` names,
 * IPv4, bracketed IPv6 (no zone). The port is required.
 */
export function parseMailbox(text: string): string {
  const lower = text.trim().toLowerCase();
  const colon = lower.lastIndexOf(':');
  if (colon < 0) throw badAddress(text, 'expected HOST:PORT (IPv6: [ADDR]:PORT)');
  const host = lower.slice(0, colon);
  const portText = lower.slice(colon + 1);
  const port = /^\d{1,5}$/.test(portText) ? Number(portText) : 0;
  if (port < 1 || port > MAX_PORT) throw badAddress(text, `the port must be 1 to ${MAX_PORT}`);
  if (host.startsWith('[')) {
    if (!/^\[[0-9a-f:.]+\]$/.test(host)) throw badAddress(text, 'an IPv6 address is hex digits and colons in brackets');
    try {
      return `${new URL(`http://${host}/`).hostname}:${port}`;
    } catch {
      throw badAddress(text, 'not a valid IPv6 address');
    }
  }
  if (host.includes(':')) throw badAddress(text, 'an IPv6 address goes in brackets: [ADDR]:PORT');
  if (host.length === 0 || host.length > MAX_HOST_CHARS) throw badAddress(text, `a host name is 1 to ${MAX_HOST_CHARS} characters`);
  const v4 = IPV4.exec(host);
  if (v4) {
    if (v4.slice(1).some((octet) => Number(octet) > 255)) throw badAddress(text, 'an IPv4 octet is 0 to 255');
    return `${host}:${port}`;
  }
  const labels = host.split('.');
  if (!labels.every((l) => DNS_LABEL.test(l))) throw badAddress(text, 'a host name is letters, digits and hyphens in dot-separated labels');
  if (/^\d+$/.test(labels[labels.length - 1])) throw badAddress(text, 'not a host name, nor a valid IPv4 address');
  if (labels[labels.length - 1] === 'onion' && (labels.length < 2 || !ONION_V3_LABEL.test(labels[labels.length - 2]))) {
    throw badAddress(text, 'an onion host is a v3 address: 56 base32 characters then .onion');
  }
  return `${host}:${port}`;
}

// ---- the v2 URL --------------------------------------------------------------

/** What the check field covers: the phrase as the encoder writes it, percent-decoded and lower case. */
function canonicalText(words: readonly string[], fields: ReadonlyArray<readonly [string, string]>): string {
  return `${PHRASE_SCHEME}:${words.join(URL_WORD_SEPARATOR)}?${fields.map(([k, v]) => `${k}=${v}`).join('&')}`.toLowerCase();
}

async function checkOf(canonical: string): Promise<string> {
  const digest = new Uint8Array(await subtle().digest('SHA-256', new TextEncoder().encode(canonical)));
  return toHex(digest.subarray(0, CHECK_BYTES));
}

/** A field value as written in the URL: brackets of IPv6 percent-encoded (RFC 3986 reserves them outside the host). */
function encodeValue(value: string): string {
  return encodeURIComponent(value).replace(/%3A/gi, ':');
}

export interface EncodeOptions {
  entropy: Uint8Array;
  /** 1 to MAX_MAILBOXES `HOST:PORT` addresses, tried in order. */
  mailboxes: readonly string[];
  wordlist?: readonly string[];
}

/** The v2 connection phrase URL of `entropy` and `mailboxes`. */
export async function encodeConnectionPhrase(options: EncodeOptions): Promise<string> {
  const words = entropyToWords(options.entropy, options.wordlist ?? (await loadEnglishWordlist()));
  if (options.mailboxes.length < 1 || options.mailboxes.length > MAX_MAILBOXES) {
    throw new PhraseError('BAD_ADDRESS', `a connection phrase names 1 to ${MAX_MAILBOXES} mailboxes, got ${options.mailboxes.length}`);
  }
  const fields = options.mailboxes.map((m) => ['mailbox', parseMailbox(m)] as const);
  const check = await checkOf(canonicalText(words, fields));
  const query = fields.map(([k, v]) => `${k}=${encodeValue(v)}`).join('&');
  return `${PHRASE_SCHEME}:${words.join(URL_WORD_SEPARATOR)}?${query}&check=${check}`;
}

const SCHEME = /^([a-z][a-z0-9+.-]*):/i;
const FIELD_NAME = /^[a-z0-9._-]+$/i;
const CHECK_HEX = new RegExp(`^[0-9a-f]{${CHECK_BYTES * 2}}$`);

function versionsText(): string {
  return `this build reads v${PHRASE_VERSION} (${PHRASE_SCHEME}: URLs) and v1 (legacy 10-word phrases)`;
}

function parseFields(query: string): Array<[string, string]> {
  return query.split('&').map((pair, i) => {
    const eq = pair.indexOf('=');
    const name = eq < 0 ? pair : pair.slice(0, eq);
    if (eq < 0 || !FIELD_NAME.test(name)) throw new PhraseError('MALFORMED', `field ${i + 1} of the connection phrase is not name=value`);
    try {
      return [name.toLowerCase(), decodeURIComponent(pair.slice(eq + 1))];
    } catch {
      throw new PhraseError('MALFORMED', `field '${name}' of the connection phrase has a bad %-escape`);
    }
  });
}

async function decodeUrl(text: string, scheme: string, wordlist: readonly string[]): Promise<DecodedPhrase> {
  const rest = text.slice(scheme.length + 1);
  const q = rest.indexOf('?');
  if (q < 0) throw new PhraseError('BAD_CHECKSUM', 'the connection phrase has no fields and no check: is it truncated?');
  const words = rest.slice(0, q).split(URL_WORD_SEPARATOR).filter((w) => w.length > 0).map((w) => w.toLowerCase());
  const entropy = wordsToEntropy(words, wordlist);
  const fields = parseFields(rest.slice(q + 1));
  const last = fields[fields.length - 1];
  if (last[0] !== 'check') {
    const why = fields.some(([k]) => k === 'check') ? 'check must be its last field' : 'it has no check field: is it truncated?';
    throw new PhraseError('BAD_CHECKSUM', `bad checksum: ${why}`);
  }
  if (!CHECK_HEX.test(last[1].toLowerCase())) {
    const hint = last[1].length < CHECK_BYTES * 2 ? 'is it truncated?' : 'is it mistyped?';
    throw new PhraseError('BAD_CHECKSUM', `bad checksum: check is ${CHECK_BYTES * 2} hex digits, got ${last[1].length} characters: ${hint}`);
  }
  const covered = fields.slice(0, -1);
  // Unknown fields are for later minor revisions: a v2 reader ignores them (the checksum still covers them).
  const mailboxes = covered.filter(([k]) => k === 'mailbox').map(([, v]) => parseMailbox(v));
  if (mailboxes.length === 0) throw new PhraseError('BAD_ADDRESS', 'the connection phrase names no mailbox');
  if (mailboxes.length > MAX_MAILBOXES) throw new PhraseError('BAD_ADDRESS', `a connection phrase names at most ${MAX_MAILBOXES} mailboxes, got ${mailboxes.length}`);
  if ((await checkOf(canonicalText(words, covered))) !== last[1].toLowerCase()) {
    throw new PhraseError('BAD_CHECKSUM', 'bad checksum: the connection phrase was changed or mistyped (check does not match); copy or scan it again');
  }
  return { version: PHRASE_VERSION, words, entropy, mailboxes };
}

/**
 * Reads what a user typed or scanned: a v2 connection phrase URL, or a legacy
 * 10-word phrase (version 1, no mailbox). Rejects with a PhraseError whose
 * code says what is wrong.
 */
export async function decodePhrase(phrase: string, wordlist?: readonly string[]): Promise<DecodedPhrase> {
  if (typeof phrase !== 'string') throw new PhraseError('MALFORMED', 'a phrase is a string');
  const text = phrase.trim();
  if (text.length > MAX_PHRASE_CHARS) throw new PhraseError('MALFORMED', `a phrase is at most ${MAX_PHRASE_CHARS} characters`);
  const list = wordlist ?? (await loadEnglishWordlist());
  if (!text.includes(':')) {
    const words = splitLegacyWords(text).map((w) => w.toLowerCase());
    return { version: 1, words, entropy: wordsToEntropy(words, list), mailboxes: [] };
  }
  const scheme = SCHEME.exec(text)?.[1].toLowerCase();
  if (scheme === PHRASE_SCHEME) return decodeUrl(text, scheme, list);
  const version = scheme === undefined ? null : /^hashmail\+v(\d{1,6})$/.exec(scheme)?.[1];
  if (version) throw new PhraseError('UNKNOWN_VERSION', `unknown connection phrase version v${Number(version)}: ${versionsText()}`);
  const shown = scheme === undefined ? 'none' : `'${scheme.slice(0, 32)}:'`;
  throw new PhraseError('WRONG_SCHEME', `not a connection phrase: the scheme is ${shown}, expected '${PHRASE_SCHEME}:' (or 10 words)`);
}
