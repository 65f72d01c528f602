/** Reading a grpc-js client stream with push-back. */
import type { Readable } from 'node:stream';

/**
 * Messages grpc-js may decode ahead of a paused handler. Its server streams
 * are object-mode Readables with a high-water mark of 16, so while a write
 * waits for room up to 16 more messages (64 MiB at 4 MiB each) would be read
 * off HTTP/2 and held where no limit sees them. With 0 it reads one only when
 * asked, and HTTP/2 flow control holds the client back instead.
 */
const READ_AHEAD_MESSAGES = 0;

/** Node keeps the high-water mark in the stream state; grpc-js offers no option for it. */
export function limitReadAhead(call: Readable): void {
  const state = (call as Readable & { _readableState?: { highWaterMark: number } })._readableState;
  if (state) state.highWaterMark = READ_AHEAD_MESSAGES;
}

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
  limitReadAhead(call);
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
