/**
 * Compile-time checks of the client's public API, enforced by
 * `npm run typecheck` (tsc over test/): each `@ts-expect-error` fails the
 * type check if the line below it ever compiles. The runtime part only
 * checks that the entries export what they should and nothing internal.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as api from '../../src/client/index.js';
import * as browserApi from '../../src/client/browser.js';
import type { MailboxConnection } from '../../src/client/index.js';

/** Never called: it exists to be type-checked. */
export function eventNamesAreChecked(conn: MailboxConnection): void {
  conn.on('presence', (present: boolean) => void present);
  conn.on('reconnecting', (info) => void info.delayMs);
  conn.once('close', (err) => void err?.code);
  // @ts-expect-error misspelled event name
  conn.on('presense', () => undefined);
  // @ts-expect-error wrong listener arguments for 'presence'
  conn.on('presence', (present: string) => void present);
  // @ts-expect-error no such event
  conn.off('message', () => undefined);
}

const INTERNALS = ['Backoff', 'INITIAL_BACKOFF_MS', 'MAX_BACKOFF_MS', 'BACKOFF_MULTIPLIER', 'forgetNegotiatedProtocols', 'V2_MISSING_RECHECK_MS', 'forgetLookupSupport', 'LOOKUP_MISSING_RECHECK_MS', 'RESUME_GRACE_MS', 'RESUME_MAX_BACKOFF_MS', 'MAX_REDIRECT_HOPS', 'LOOKUP_WAIT_MS'];
const ERRORS = ['HashmailClientError', 'SessionNotFound', 'SessionInUse', 'UnsupportedVersion', 'ConnectionLost', 'RelayMoved', 'ConnectTimeout', 'LivenessTimeout', 'MessageTooLarge', 'CertificateMismatch', 'V2HandshakeUnexplained', 'RelayUnreachable'];

test('the entries export every error class and no internals', () => {
  for (const entry of [api, browserApi] as Record<string, unknown>[]) {
    for (const name of ERRORS) assert.equal(typeof entry[name], 'function', `${name} exported`);
    for (const name of INTERNALS) assert.equal(entry[name], undefined, `${name} not exported`);
    assert.equal(typeof entry.connect, 'function');
  }
});
