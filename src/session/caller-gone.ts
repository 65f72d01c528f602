/**
 * The reason our AbortControllers abort with when a caller went away (a
 * client disconnected, a gRPC call was cancelled). `abort()` without a
 * reason builds a DOMException and its stack trace every time: 2 % of a
 * relay's CPU while it answered the held lookups of a re-join storm.
 * Nothing reads the reason.
 */
export const CALLER_GONE: Error = new Error('caller went away');
