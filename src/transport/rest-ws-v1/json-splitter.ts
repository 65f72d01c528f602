/**
 * Cuts a byte stream of concatenated JSON objects (`{..}{..}`, `{..}\n{..}`,
 * any JSON whitespace between) into one text per object, as grpc-gateway's
 * streaming JSON decoder reads a SendStream body or one WebSocket message.
 * It only finds object boundaries (braces outside strings); JSON.parse checks
 * the rest. Each object is bounded, so a client cannot make us buffer without
 * limit. Scanning works on bytes: every JSON structural character is ASCII and
 * every byte of a multi-byte UTF-8 character is >= 0x80, so none is mistaken
 * for a brace or quote.
 */
import { HashmailError } from '../../session/errors.js';

/** Deepest nesting accepted; our messages nest two levels (bounds JSON.parse recursion). */
export const MAX_JSON_DEPTH = 32;

const SPACE = 0x20;
const TAB = 0x09;
const LF = 0x0a;
const CR = 0x0d;
const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

function tooLarge(maxObjectBytes: number): HashmailError {
  return new HashmailError('MESSAGE_TOO_LARGE', `JSON request object larger than ${maxObjectBytes} bytes`);
}

/** Incremental splitter: feed chunks with push(), finish with end(). */
export class JsonObjectSplitter {
  /** Bytes of the current, unfinished object held from earlier chunks. */
  private held: Buffer[] = [];
  private heldBytes = 0;
  /** 0 between objects. */
  private depth = 0;
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
   * whitespace at the top level, MESSAGE_TOO_LARGE past the bound.
   */
  push(chunk: Buffer, onObject: (json: string) => void): void {
    const len = chunk.length;
    let start = this.depth > 0 ? 0 : -1;
    // Position of the next backslash at or after the scan point, found lazily
    // so a long base64 string is skipped with two native searches.
    let nextBackslash = -2;
    let i = 0;
    while (i < len) {
      if (this.depth === 0) {
        const b = chunk[i];
        if (b === SPACE || b === LF || b === CR || b === TAB) {
          i++;
          continue;
        }
        if (b !== OPEN_BRACE) throw new HashmailError('MALFORMED_REQUEST', 'invalid JSON: expected a request object');
        this.depth = 1;
        start = i++;
        continue;
      }
      if (this.inString) {
        if (this.escaped) {
          this.escaped = false;
          i++;
          continue;
        }
        const quote = chunk.indexOf(QUOTE, i);
        if (nextBackslash !== -1 && nextBackslash < i) nextBackslash = chunk.indexOf(BACKSLASH, i);
        const stop = quote === -1 ? nextBackslash : nextBackslash === -1 ? quote : Math.min(quote, nextBackslash);
        if (stop === -1) break;
        if (stop === quote) this.inString = false;
        else this.escaped = true;
        i = stop + 1;
        continue;
      }
      const b = chunk[i++];
      if (b === QUOTE) {
        this.inString = true;
      } else if (b === OPEN_BRACE || b === OPEN_BRACKET) {
        if (++this.depth > MAX_JSON_DEPTH) throw new HashmailError('MALFORMED_REQUEST', 'invalid JSON: nested too deeply');
      } else if (b === CLOSE_BRACE || b === CLOSE_BRACKET) {
        if (--this.depth === 0) {
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
    if (this.depth > 0) throw new HashmailError('MALFORMED_REQUEST', 'invalid JSON: request object not terminated');
  }

  private take(chunk: Buffer, start: number, end: number): string {
    const size = this.heldBytes + end - start;
    if (size > this.maxObjectBytes) throw tooLarge(this.maxObjectBytes);
    if (this.heldBytes === 0) return chunk.toString('utf8', start, end);
    this.held.push(chunk.subarray(start, end));
    const text = Buffer.concat(this.held, size).toString('utf8');
    this.held = [];
    this.heldBytes = 0;
    return text;
  }
}

/**
 * The objects of one complete input (a WebSocket message). An unfinished
 * object is MALFORMED_REQUEST; whitespace alone gives none.
 */
export function splitJsonObjects(data: Buffer, maxObjectBytes: number): string[] {
  const out: string[] = [];
  const splitter = new JsonObjectSplitter(maxObjectBytes);
  splitter.push(data, (json) => out.push(json));
  splitter.end();
  return out;
}
