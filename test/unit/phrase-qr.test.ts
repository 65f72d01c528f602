/**
 * The terminal QR code (src/cli/phrase-qr.ts): within 80 columns at level M
 * for a typical phrase, level L when M would be too wide, none when even L
 * would be; every line the same width, black on white.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import QRCode from 'qrcode';
import { qrTerminal, QUIET_ZONE_MODULES, TERMINAL_COLUMNS } from '../../src/cli/phrase-qr.js';

// eslint-disable-next-line no-control-regex
const strip = (text: string): string[] => text.replace(/\x1b\[[0-9;]*m/g, '').split('\n').filter(Boolean);

function sizeAt(url: string, level: 'L' | 'M'): number {
  return QRCode.create(url, { errorCorrectionLevel: level }).modules.size;
}

test('a typical phrase: level M, the module count plus the quiet zone, every line that wide', () => {
  const url = `hashmail+v2:${Array(10).fill('abstract').join('-')}?mailbox=mailbox.terminal.lightning.today:443&check=0123abcd`;
  const qr = qrTerminal(url);
  assert.ok(qr);
  assert.equal(qr.level, 'M');
  const size = sizeAt(url, 'M');
  assert.equal(qr.columns, size + 2 * QUIET_ZONE_MODULES);
  const lines = strip(qr.text);
  assert.equal(lines.length, Math.ceil((size + 2 * QUIET_ZONE_MODULES) / 2));
  assert.ok(lines.every((l) => [...l].length === qr.columns && /^[ █▀▄]+$/.test(l)));
  assert.ok(qr.text.split('\n').filter(Boolean).every((l) => l.startsWith('\x1b[30;47m') && l.endsWith('\x1b[0m')), 'forced black on white');
});

test('level L when M would exceed 80 columns; null when L would too', () => {
  const between = 'x'.repeat(350);
  assert.ok(sizeAt(between, 'M') + 2 * QUIET_ZONE_MODULES > TERMINAL_COLUMNS, 'the case needs M too wide');
  const qr = qrTerminal(between);
  assert.ok(qr);
  assert.equal(qr.level, 'L');
  assert.ok(qr.columns <= TERMINAL_COLUMNS);
  assert.equal(qrTerminal('x'.repeat(600)), null);
});
