/**
 * Client text in error messages (session/client-text.ts): the client reads
 * a short, printable prefix of its input, the log only its length.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { describeClientText, QUOTE_MAX_CHARS, quoteClientText } from '../../src/session/client-text.js';
import { clientInputError, HashmailError } from '../../src/session/errors.js';

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
/** Longest quotation: every kept character escaped as \uXXXX, plus quotes and the cut note. */
const MAX_QUOTED_CHARS = QUOTE_MAX_CHARS * 6 + 40;

describe('quoteClientText', () => {
  test('short printable text is quoted whole', () => {
    assert.equal(quoteClientText('abc'), '"abc"');
    assert.equal(quoteClientText(''), '""');
    assert.equal(quoteClientText('x'.repeat(QUOTE_MAX_CHARS)), `"${'x'.repeat(QUOTE_MAX_CHARS)}"`);
  });

  test('long text is cut to the limit, with an ellipsis and the total length', () => {
    const five = 'A'.repeat(5 * 1024 * 1024);
    const quoted = quoteClientText(five);
    assert.equal(quoted, `"${'A'.repeat(QUOTE_MAX_CHARS)}"... (${five.length} chars)`);
    assert.equal(quoteClientText('y'.repeat(QUOTE_MAX_CHARS + 1)), `"${'y'.repeat(QUOTE_MAX_CHARS)}"... (${QUOTE_MAX_CHARS + 1} chars)`);
  });

  test('quotes, backslashes, control and non-ASCII characters are escaped', () => {
    assert.equal(quoteClientText('a"b\\c'), '"a\\"b\\\\c"');
    assert.equal(quoteClientText('\n\r\t\x00\x7f'), '"\\x0a\\x0d\\x09\\x00\\x7f"');
    assert.equal(quoteClientText('\u00e9\u2028'), '"\\xe9\\u2028"');
    // A character outside the BMP is two escaped UTF-16 units; a lone surrogate is escaped too.
    assert.equal(quoteClientText('\u{1F600}'), '"\\ud83d\\ude00"');
    assert.equal(quoteClientText('\ud800'), '"\\ud800"');
  });

  test('whatever the input, the quotation is short printable ASCII', () => {
    const inputs = [
      '\u0000'.repeat(10_000),
      '\u{1F600}'.repeat(10_000),
      '"\\'.repeat(10_000),
      Array.from({ length: 4096 }, (_, i) => String.fromCharCode(i * 16)).join(''),
    ];
    for (const input of inputs) {
      const quoted = quoteClientText(input);
      assert.match(quoted, PRINTABLE_ASCII);
      assert.ok(quoted.length <= MAX_QUOTED_CHARS, `${quoted.length} chars`);
    }
  });
});

describe('clientInputError', () => {
  test('the client reads a quotation, the log only the length', () => {
    const sid = 'q'.repeat(40) + 'SECRET';
    const err = clientInputError('MALFORMED_REQUEST', sid, (quoted) => `unknown field ${quoted} in CipherBox`);
    assert.ok(err instanceof HashmailError);
    assert.equal(err.code, 'MALFORMED_REQUEST');
    assert.equal(err.grpcCode, 3);
    assert.equal(err.message, `unknown field "${'q'.repeat(QUOTE_MAX_CHARS)}"... (46 chars) in CipherBox`);
    assert.equal(err.logMessage, 'unknown field <46 chars of client input> in CipherBox');
    assert.equal(describeClientText(sid), '<46 chars of client input>');
  });

  test('an error without client input logs its message as is', () => {
    const err = new HashmailError('STREAM_NOT_FOUND');
    assert.equal(err.logMessage, 'stream not found');
  });
});
