import type { Box } from './box.js';

/**
 * A session: the two boxes of a SID pair (keyed by the SID with bit 0 of
 * byte 63 cleared). Box `i` is the one whose SID ends in bit `i`.
 */
export class Session {
  readonly boxes: [Box | null, Box | null] = [null, null];

  /** `delivered` when the metrics last sampled read rates (observe/session-activity.ts). */
  deliveredAtLastSample = 0;

  constructor(readonly key: string) {}

  get boxCount(): number {
    return (this.boxes[0] ? 1 : 0) + (this.boxes[1] ? 1 : 0);
  }

  /** Messages handed to readers of either box so far. */
  get delivered(): number {
    return (this.boxes[0]?.delivered ?? 0) + (this.boxes[1]?.delivered ?? 0);
  }
}
