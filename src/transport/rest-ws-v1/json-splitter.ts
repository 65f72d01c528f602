/**
 * Cuts a byte stream of concatenated JSON objects (`{..}{..}`, `{..}\n{..}`,
 * any JSON whitespace between) into one text per object, as grpc-gateway's
 * streaming JSON decoder reads a SendStream body or one WebSocket message.
 * It finds object boundaries (braces outside strings) and bounds the work a
 * later JSON.parse can do: size, nesting depth and the number of fields are
 * checked while scanning, and scanning stops at the first excess. Without
 * that, one 5 MB object of 450,000 keys cost 0.4 s of event loop to parse
 * before its first unknown key was rejected. JSON.parse checks the rest.
 *
 * Scanning works on bytes: every JSON structural character is ASCII and
 * every byte of a multi-byte UTF-8 character is >= 0x80, so none is mistaken
 * for a brace or quote. Inside strings it jumps between quotes and
 * backslashes with native searches, so a long base64 string costs little.
 */
import { isAscii } from 'node:buffer';
import { HashmailError } from '../../session/errors.js';

/**
 * Deepest nesting accepted, the outer object counting 1. Our requests nest
 * two levels (`{"desc":{"stream_id":..}}`); the rest is room for a precise
 * "wrong type" error on a slightly wrong request.
 */
export const MAX_JSON_DEPTH = 4;
/**
 * Most fields one request object may hold: object keys plus array elements,
 * at every level. Our largest request has three keys (desc, stream_id, msg
 * or lnd_auth); the rest is room for a precise "unknown field" error.
 */
export const MAX_JSON_FIELDS = 16;

/**
 * Text of one JSON object that passed the scan (size, depth, fields): the
 * only input the codec parses, so no JSON entry point can skip the bounds.
 */
export type BoundedJson = string & { readonly __brand: 'BoundedJson' };

const SPACE = 0x20;
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const QUOTE = 0x22;
const COMMA = 0x2c;
const COLON = 0x3a;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
/** A cached search position not computed yet (indexOf gives -1 for "none"). */
const UNSEARCHED = -2;

function tooLarge(maxObjectBytes: number): HashmailError {
  return new HashmailError('MESSAGE_TOO_LARGE', `JSON request object larger than ${maxObjectBytes} bytes`);
}

function malformed(what: string): HashmailError {
  return new HashmailError('MALFORMED_REQUEST', `invalid JSON: ${what}`);
}

/** Bytes `start..end` of `chunk` as text; ASCII (every base64 request) skips the slower UTF-8 decoder. */
function text(chunk: Buffer, start: number, end: number): BoundedJson {
  const bytes = chunk.subarray(start, end);
  return bytes.toString(isAscii(bytes) ? 'latin1' : 'utf8') as BoundedJson;
}

/** Incremental splitter: feed chunks with push(), finish with end(). */
export class JsonObjectSplitter {
  /** Bytes of the current, unfinished object held from earlier chunks. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  /** 0 between objects. */
  private depth = 0;
  /** Bit d-1 is set while the container at depth d is an array (depth <= MAX_JSON_DEPTH < 32). */
  private arrays = 0;
  /** Fields of the current object so far: keys (colons) and array elements after the first (commas in arrays). */
  private fields = 0;
  private inString = false;
  private escaped = false;

  constructor(private readonly maxObjectBytes: number) {}

  /** True while an object has started and not ended. */
  get midObject(): boolean {
    return this.depth > 0;
  }

  /**
   * Scans `chunk`, calling `onObject` with the text of each object it
   * completes. Throws MALFORMED_REQUEST on anything but objects and
   * whitespace at the top level or past MAX_JSON_DEPTH / MAX_JSON_FIELDS,
   * MESSAGE_TOO_LARGE past the size bound; nothing after the excess is read.
   */
  push(chunk: Buffer, onObject: (json: BoundedJson) => void): void {
    const len = chunk.length;
    let start = this.depth > 0 ? 0 : -1;
    // The next quote and backslash at or after the scan point, searched
    // lazily and kept until passed: each byte is searched at most once.
    let nextQuote = UNSEARCHED;
    let nextBackslash = UNSEARCHED;
    let i = 0;
    while (i < len) {
      if (this.inString) {
        if (this.escaped) {
          this.escaped = false;
          i++;
          continue;
        }
        if (nextQuote !== -1 && nextQuote < i) nextQuote = chunk.indexOf(QUOTE, i);
        if (nextBackslash !== -1 && nextBackslash < i) nextBackslash = chunk.indexOf(BACKSLASH, i);
        if (nextQuote === -1 && nextBackslash === -1) break;
        if (nextBackslash === -1 || (nextQuote !== -1 && nextQuote < nextBackslash)) {
          this.inString = false;
          i = nextQuote + 1;
        } else {
          this.escaped = true;
          i = nextBackslash + 1;
        }
        continue;
      }
      const b = chunk[i];
      if (this.depth === 0) {
        if (b === SPACE || b === LF || b === CR || b === TAB) {
          i++;
          continue;
        }
        if (b !== OPEN_BRACE) throw malformed('expected a request object');
        this.depth = 1;
        this.arrays = 0;
        this.fields = 0;
        start = i++;
        continue;
      }
      i++;
      if (b === QUOTE) {
        this.inString = true;
      } else if (b === COLON || (b === COMMA && (this.arrays & (1 << (this.depth - 1))) !== 0)) {
        if (++this.fields > MAX_JSON_FIELDS) throw malformed(`more than ${MAX_JSON_FIELDS} fields in a request object`);
      } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
        if (this.depth === MAX_JSON_DEPTH) throw malformed(`nested deeper than ${MAX_JSON_DEPTH} levels`);
        if (b === OPEN_BRACKET) this.arrays |= 1 << this.depth;
        this.depth++;
      } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
        this.depth--;
        this.arrays &= ~(1 << this.depth);
        if (this.depth === 0) {
          onObject(this.take(chunk, start, i));
          start = -1;
        }
      }
    }
    if (this.depth > 0) {
      const rest = len - start;
      if (this.heldBytes + rest > this.maxObjectBytes) throw tooLarge(this.maxObjectBytes);
      // Copy: the caller may reuse its chunk buffer.
      this.held.push(Buffer.from(chunk.subarray(start)));
      this.heldBytes += rest;
    }
  }

  /** End of input: throws MALFORMED_REQUEST if an object is unfinished. */
  end(): void {
    if (this.depth > 0) throw malformed('request object not terminated');
  }

  private take(chunk: Buffer, start: number, end: number): BoundedJson {
    const size = this.heldBytes + end - start;
    if (size > this.maxObjectBytes) throw tooLarge(this.maxObjectBytes);
    if (this.heldBytes === 0) return text(chunk, start, end);
    this.held.push(chunk.subarray(start, end));
    const whole = Buffer.concat(this.held, size);
    this.held = [];
    this.heldBytes = 0;
    return text(whole, 0, size);
  }
}

/**
 * The objects of one complete input (a WebSocket message). An unfinished
 * object is MALFORMED_REQUEST; whitespace alone gives none.
 */
export function splitJsonObjects(data: Buffer, maxObjectBytes: number): BoundedJson[] {
  const out: BoundedJson[] = [];
  const splitter = new JsonObjectSplitter(maxObjectBytes);
  splitter.push(data, (json) => out.push(json));
  splitter.end();
  return out;
}

/**
 * The one object of a request body (`what` names its message for the
 * error); null for a body of whitespace only, which grpc-gateway reads as
 * the empty message.
 */
export function onlyJsonObject(data: Buffer, maxObjectBytes: number, what: string): BoundedJson | null {
  const objects = splitJsonObjects(data, maxObjectBytes);
  if (objects.length > 1) throw malformed(`expected one ${what} object, got ${objects.length}`);
  return objects[0] ?? null;
}
