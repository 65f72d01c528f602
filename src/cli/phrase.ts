/**
 * `hashmail phrase new|decode|qr|sid`: make, read and show connection
 * phrases (docs/connection-phrase.md) with the same module the client library
 * uses (src/client/phrase.ts). `--json` prints exactly one JSON object on
 * stdout. A bad phrase exits 1 with the reason on stderr; a usage error exits 2.
 */
import { toHex } from '../client/bytes.js';
import {
  decodePhrase,
  encodeConnectionPhrase,
  entropyToSids,
  MAX_MAILBOXES,
  newPhraseEntropy,
  parseMailbox,
  PhraseError,
  PHRASE_SCHEME,
  PHRASE_VERSION,
  type DecodedPhrase,
} from '../client/phrase.js';
import { routeOfSid } from '../directory/route.js';
import { shortHash } from '../session/sid.js';
import { parseCommandArgs, splitList } from './flags.js';
import { QR_ERROR_CORRECTION, qrTerminal, TOO_WIDE, writeQrPng, writeQrSvg } from './phrase-qr.js';

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

export const PHRASE_USAGE = `Usage: hashmail phrase new --mailbox HOST:PORT [--mailbox HOST:PORT...] [--png FILE] [--svg FILE] [--json]
       hashmail phrase decode URL|WORDS [--json]
       hashmail phrase qr URL [--png FILE] [--svg FILE] [--json]
       hashmail phrase sid URL|WORDS [--json]

Connection phrases (docs/connection-phrase.md). A v2 phrase is a URL
  ${PHRASE_SCHEME}:WORD-...-WORD?mailbox=HOST:PORT[&mailbox=...]&check=HEX8
naming the protocol version, the mailboxes (tried in order) and the pairing
secret (the 10 BIP-39 words of legacy LNC phrases). A legacy phrase is the 10
words alone (v1: no mailbox). WORDS may be 10 arguments or one quoted string.

Commands:
  new      fresh pairing entropy: prints the URL, the words and a QR code
           (--png and --svg also write it to files).
  decode   the fields of a phrase; says v1 for a legacy 10-word phrase.
  qr       the QR code of a URL: in the terminal (80 columns), or as files.
  sid      the first-connection SID pair in hex, to find a session:
           s2c = SHA-512(entropy) (the app reads it), c2s = s2c with bit 0 of
           byte 63 flipped (the node reads it). Secrets: handle with care.

Options:
  --mailbox HOST:PORT  new: a mailbox address (IPv6: [ADDR]:PORT; onion
                       hosts allowed). Repeat it, or separate by commas, for
                       up to ${MAX_MAILBOXES} mailboxes tried in order. Required.
  --png FILE           new, qr: write the QR code as a PNG image.
  --svg FILE           new, qr: write the QR code as an SVG image.
  --json               print one JSON object on stdout:
                         new: {url, words, entropy, mailbox, mailboxes}
                         decode: {version, mailbox, mailboxes, words, entropy}
                           (no mailbox fields for a v1 phrase)
                         qr: {url, errorCorrection, png, svg} (files written)
                         sid: {entropy, s2c, c2s}
                       (entropy, s2c, c2s in hex; mailbox is the first one).
  -h, --help           show this help and exit.

QR codes use error correction level ${QR_ERROR_CORRECTION} (see docs/connection-phrase.md).
`;

const FLAGS = {
  mailbox: { type: 'string', multiple: true },
  png: { type: 'string' },
  svg: { type: 'string' },
  json: { type: 'boolean' },
} as const;

interface Flags {
  mailbox?: string[];
  png?: string;
  svg?: string;
  json?: boolean;
}

class UsageError extends Error {}
/** A failure that is not a usage mistake (exit 1). */
class CommandError extends Error {}

function print(json: boolean, object: Record<string, unknown>, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(object)}\n` : text);
}

function mailboxFields(mailboxes: readonly string[]): Record<string, unknown> {
  return mailboxes.length === 0 ? {} : { mailbox: mailboxes[0], mailboxes };
}

async function writeFiles(url: string, flags: Flags): Promise<string> {
  let text = '';
  if (flags.png !== undefined) {
    await writeQrPng(url, flags.png);
    text += `QR code (PNG): ${flags.png}\n`;
  }
  if (flags.svg !== undefined) {
    await writeQrSvg(url, flags.svg);
    text += `QR code (SVG): ${flags.svg}\n`;
  }
  return text;
}

async function runNew(args: string[], flags: Flags): Promise<void> {
  if (args.length > 0) throw new UsageError('takes no arguments');
  const mailboxes = (flags.mailbox ?? []).flatMap(splitList);
  if (mailboxes.length === 0) throw new UsageError('--mailbox HOST:PORT is required');
  const url = await encodeConnectionPhrase({ entropy: newPhraseEntropy(), mailboxes: mailboxes.map(parseMailbox) });
  const phrase = await decodePhrase(url);
  const files = await writeFiles(url, flags);
  // The URL and words are printed whatever the QR code's size: a new phrase must not be lost.
  const qr = flags.json ? '' : (qrTerminal(url)?.text ?? `(${TOO_WIDE})\n`);
  print(
    Boolean(flags.json),
    { url, words: phrase.words, entropy: toHex(phrase.entropy), ...mailboxFields(phrase.mailboxes) },
    `${url}\n\nwords: ${phrase.words.join(' ')}\nmailbox: ${phrase.mailboxes.join(', ')}\n\n${qr}${files}`,
  );
}

function describe(phrase: DecodedPhrase): string {
  const lines = [`version: v${phrase.version}`];
  if (phrase.version === 1) {
    lines[0] += ' (a legacy 10-word pairing phrase: it names no mailbox; pair with the mailbox configured in the app)';
  } else {
    lines.push(`mailbox: ${phrase.mailboxes.join(', ')}${phrase.mailboxes.length > 1 ? ' (tried in order)' : ''}`);
  }
  lines.push(`words: ${phrase.words.join(' ')}`, `entropy: ${toHex(phrase.entropy)}`);
  return `${lines.join('\n')}\n`;
}

async function runDecode(args: string[], flags: Flags): Promise<void> {
  const phrase = await decodePhrase(phraseArgument(args));
  print(
    Boolean(flags.json),
    { version: phrase.version, ...mailboxFields(phrase.mailboxes), words: phrase.words, entropy: toHex(phrase.entropy) },
    describe(phrase),
  );
}

async function runQr(args: string[], flags: Flags): Promise<void> {
  const toFile = flags.png !== undefined || flags.svg !== undefined;
  if (flags.json && !toFile) throw new UsageError('--json needs --png FILE or --svg FILE');
  const phrase = await decodePhrase(phraseArgument(args));
  if (phrase.version !== PHRASE_VERSION) throw new PhraseError('WRONG_SCHEME', `qr needs a ${PHRASE_SCHEME}: URL; legacy words name no mailbox`);
  const url = args.join(' ').trim();
  const files = await writeFiles(url, flags);
  const object: Record<string, unknown> = { url, errorCorrection: QR_ERROR_CORRECTION };
  if (flags.png !== undefined) object.png = flags.png;
  if (flags.svg !== undefined) object.svg = flags.svg;
  let text = files;
  if (!toFile) {
    const qr = qrTerminal(url);
    if (!qr) throw new CommandError(TOO_WIDE);
    text = qr.text;
  }
  print(Boolean(flags.json), object, text);
}

async function runSid(args: string[], flags: Flags): Promise<void> {
  const phrase = await decodePhrase(phraseArgument(args));
  const { s2c, c2s } = await entropyToSids(phrase.entropy);
  print(
    Boolean(flags.json),
    { entropy: toHex(phrase.entropy), s2c: toHex(s2c), c2s: toHex(c2s) },
    `s2c: ${toHex(s2c)}\nc2s: ${toHex(c2s)}\n` +
      `in logs: s2c ${shortHash(s2c)}, c2s ${shortHash(c2s)}; route (etcd, lookups): ${routeOfSid(s2c)}\n`,
  );
}

function phraseArgument(args: string[]): string {
  if (args.length === 0) throw new UsageError('give a phrase: a URL, or the 10 words');
  return args.join(' ');
}

const SUBCOMMANDS: Record<string, (args: string[], flags: Flags) => Promise<void>> = {
  new: runNew,
  decode: runDecode,
  qr: runQr,
  sid: runSid,
};

export async function runPhrase(argv: string[]): Promise<number> {
  const parsed = parseCommandArgs('phrase', argv, FLAGS, PHRASE_USAGE);
  if (typeof parsed === 'number') return parsed;
  const [name, ...args] = parsed.positionals;
  const flags = parsed.values as Flags;
  const run = name === undefined ? undefined : SUBCOMMANDS[name];
  const command = `hashmail phrase${name && run ? ` ${name}` : ''}`;
  try {
    if (!run) throw new UsageError(name === undefined ? 'give a command: new, decode, qr or sid' : `unknown command '${name}'`);
    if (name !== 'new' && flags.mailbox !== undefined) throw new UsageError('--mailbox is for new');
    if ((name === 'decode' || name === 'sid') && (flags.png !== undefined || flags.svg !== undefined)) throw new UsageError('--png and --svg are for new and qr');
    await run(args, flags);
    return EXIT_OK;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${command}: ${err.message}\n\n${PHRASE_USAGE}`);
      return EXIT_USAGE;
    }
    if (err instanceof PhraseError || err instanceof CommandError) {
      process.stderr.write(`${command}: ${err.message}\n`);
      return EXIT_FAILURE;
    }
    throw err;
  }
}
