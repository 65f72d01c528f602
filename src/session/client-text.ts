/**
 * Client text inside our error messages. A message is echoed to the client
 * and logged, so copying client input whole lets one request write megabytes
 * of log (amplification) and puts whatever the client sent, a SID or a
 * credential, into the log. The client gets a short, printable prefix of its
 * own input; the log gets only its length.
 */

/** Characters of client input quoted in an error message; longer input is cut. */
export const QUOTE_MAX_CHARS = 32;

const FIRST_PRINTABLE = 0x20;
const LAST_PRINTABLE = 0x7e;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const HEX = 16;

/** One UTF-16 code unit as printable ASCII: itself, or an escape. */
function escapeUnit(unit: number): string {
  if (unit === QUOTE || unit === BACKSLASH) return `\\${String.fromCharCode(unit)}`;
  if (unit >= FIRST_PRINTABLE && unit <= LAST_PRINTABLE) return String.fromCharCode(unit);
  if (unit <= 0xff) return `\\x${unit.toString(HEX).padStart(2, '0')}`;
  return `\\u${unit.toString(HEX).padStart(4, '0')}`;
}

/**
 * `text` quoted for an error message the client reads: at most
 * QUOTE_MAX_CHARS characters, quotes, backslashes, control and non-ASCII
 * characters escaped, and when cut an ellipsis and the total length:
 * `"abc"`, `"0123456789abcdef0123456789abcdef"... (88 chars)`.
 */
export function quoteClientText(text: string): string {
  const shown = Math.min(text.length, QUOTE_MAX_CHARS);
  let out = '"';
  for (let i = 0; i < shown; i++) out += escapeUnit(text.charCodeAt(i));
  out += '"';
  return shown === text.length ? out : `${out}... (${text.length} chars)`;
}

/** What a log line says about client text: its length, never the text (it may be a SID or a credential). */
export function describeClientText(text: string): string {
  return `<${text.length} chars of client input>`;
}
