/** Reading a grpc-js client stream with push-back. */
import type { Readable } from 'node:stream';

/**
 * Feeds each message of `call` to `handle`. While a promise `handle` returned
 * is pending the call is paused: grpc-js stops reading, so HTTP/2 flow
 * control holds the client back. `done(null)` when the client half-closes,
 * `done(err)` when `handle` fails. Events, not an async iterator: leaving an
 * iterator destroys the call, losing a status reported mid-stream.
 */
export function readWithPushBack<T>(
  call: Readable,
  handle: (msg: T) => Promise<void> | undefined,
  done: (err: unknown) => void,
  isDone: () => boolean,
): void {
  call.on('data', (msg: T) => {
    let pending: Promise<void> | undefined;
    try {
      pending = handle(msg);
    } catch (err) {
      done(err);
      return;
    }
    if (!pending) return;
    call.pause();
    pending.then(() => {
      if (!isDone()) call.resume();
    }, done);
  });
  call.once('end', () => done(null));
}
