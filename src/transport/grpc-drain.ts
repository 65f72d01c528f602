/** Write-side flow control for grpc-js server streams. */
import type { EventEmitter } from 'node:events';
import { HashmailError } from '../session/errors.js';

/** Resolves on 'drain'; rejects CANCELLED if the caller goes away first. */
export function drained(call: Pick<EventEmitter, 'on' | 'off'>, gone: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      call.off('drain', onDrain);
      gone.removeEventListener('abort', onGone);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onGone = (): void => {
      cleanup();
      reject(new HashmailError('CANCELLED'));
    };
    if (gone.aborted) return onGone();
    call.on('drain', onDrain);
    gone.addEventListener('abort', onGone, { once: true });
  });
}
