/**
 * Credit accounting of a hop lane, shared by both ends so they count alike:
 * each message costs its length plus a fixed framing allowance (so a flood of
 * empty messages is bounded too), and credit is handed back in batches of a
 * quarter window (one CREDIT frame per message would double the frames; a
 * sender stops only with a full window, so a quarter is always repaid).
 */

/** What each carried message costs against its half's credit on top of its bytes. */
export const HOP_FRAME_OVERHEAD_BYTES = 64;

/** The cost of one message of `length` bytes. */
export function messageCost(length: number): number {
  return length + HOP_FRAME_OVERHEAD_BYTES;
}

/** Credit is repaid once this much of a `window` is owed. */
export function creditBatch(window: number): number {
  return Math.max(1, Math.floor(window / 4));
}
