/**
 * The reason our AbortControllers abort with when the call or the caller
 * they belong to is over (a client left, a call ended while it waited for a
 * slot, a held lookup's client went away). `abort()` without a reason builds
 * a DOMException and its stack trace every time: 2 % of a relay's CPU while
 * it answered the held lookups of a re-join storm. Nothing reads the reason.
 */
export const CALL_OVER: Error = new Error('call over');
