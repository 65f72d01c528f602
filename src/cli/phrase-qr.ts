/**
 * QR codes of a connection phrase URL (Node only: the CLI), through the
 * `qrcode` package: a terminal rendering, PNG and SVG files.
 *
 * Error correction level M (15% of the code words recoverable). A phone
 * scans a screen or a print: no dirt or tears for a high level to repair, but
 * glare, moire and focus, which fewer, bigger modules help more. M keeps a
 * typical phrase (150 to 170 characters) at version 8 or 9 (49 or 53 modules),
 * small enough for a terminal, with margin for reflections; Q or H would grow
 * it to version 10 to 13 for no gain on a screen. L is used only when M would
 * not fit the 80-column terminal.
 */
import { writeFile } from 'node:fs/promises';
import QRCode from 'qrcode';

export type QrLevel = 'L' | 'M';
export const QR_ERROR_CORRECTION: QrLevel = 'M';
/** What the terminal rendering must fit: the classic terminal width. */
export const TERMINAL_COLUMNS = 80;
/** Quiet zone in modules: ISO 18004 asks 4 around the symbol. */
export const QUIET_ZONE_MODULES = 4;
/** PNG pixels a module: a 53-module code with its quiet zone is 488 px, sharp on any screen or printer. */
export const PNG_PIXELS_PER_MODULE = 8;

// Forced black on white, so the code has the right polarity on a dark-themed terminal too.
const BLACK_ON_WHITE = '\x1b[30;47m';
const RESET = '\x1b[0m';

interface Matrix {
  size: number;
  dark(x: number, y: number): boolean;
}

function matrix(url: string, level: QrLevel): Matrix {
  const { modules } = QRCode.create(url, { errorCorrectionLevel: level });
  const inside = (x: number, y: number): boolean => x >= 0 && y >= 0 && x < modules.size && y < modules.size;
  return { size: modules.size, dark: (x, y) => inside(x, y) && Boolean(modules.get(y, x)) };
}

/**
 * The code as text: one character a module wide and two modules tall (upper
 * and lower half blocks), black on white, with a full quiet zone. Level M,
 * or L when M would be wider than TERMINAL_COLUMNS; null when neither fits.
 */
export function qrTerminal(url: string): { text: string; level: QrLevel; columns: number } | null {
  for (const level of [QR_ERROR_CORRECTION, 'L'] as const) {
    const m = matrix(url, level);
    const columns = m.size + 2 * QUIET_ZONE_MODULES;
    if (columns > TERMINAL_COLUMNS) continue;
    const lines: string[] = [];
    for (let y = -QUIET_ZONE_MODULES; y < m.size + QUIET_ZONE_MODULES; y += 2) {
      let line = '';
      for (let x = -QUIET_ZONE_MODULES; x < m.size + QUIET_ZONE_MODULES; x++) {
        const top = m.dark(x, y);
        const bottom = m.dark(x, y + 1);
        line += top && bottom ? '█' : top ? '▀' : bottom ? '▄' : ' ';
      }
      lines.push(`${BLACK_ON_WHITE}${line}${RESET}`);
    }
    return { text: `${lines.join('\n')}\n`, level, columns };
  }
  return null;
}

export const TOO_WIDE = `the phrase is too long for a QR code in ${TERMINAL_COLUMNS} columns: write it with --png FILE or --svg FILE`;

export async function writeQrPng(url: string, file: string): Promise<void> {
  await QRCode.toFile(file, url, {
    type: 'png',
    errorCorrectionLevel: QR_ERROR_CORRECTION,
    margin: QUIET_ZONE_MODULES,
    scale: PNG_PIXELS_PER_MODULE,
  });
}

export async function writeQrSvg(url: string, file: string): Promise<void> {
  const svg = await QRCode.toString(url, { type: 'svg', errorCorrectionLevel: QR_ERROR_CORRECTION, margin: QUIET_ZONE_MODULES });
  await writeFile(file, svg);
}
