/**
 * Debug lines for a half or party taking and giving back its slots, logged
 * by the relay layer so every transport says both the same way. The SID
 * hash (a SHA-256) is only computed when debug is on.
 */
import type { Logger } from './logger.js';
import { shortHash } from '../session/sid.js';

export type AttachEvent = 'attached' | 'detached';

export function logAttach(log: Logger | null, event: AttachEvent, sid: Uint8Array, fields: Record<string, string | number>): void {
  if (!log?.isLevelEnabled('debug')) return;
  log.debug({ ...fields, sid: shortHash(sid) }, event);
}
