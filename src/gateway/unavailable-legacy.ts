/**
 * TEMPORARY seam until the gateway -> relay hop is merged: a LegacyOperations
 * that answers every legacy call UNAVAILABLE "gateway: relay hop not
 * available", so `hashmail gateway` runs (v2 pass-through, lookups, health,
 * status) before its legacy calls can reach a relay. Replaced by
 * RemoteLegacyMailbox (remote-legacy-mailbox.ts) at the merge.
 */
import type { LegacyOperations, LegacyReceive, LegacySend } from '../relay/legacy-operations.js';
import { HashmailError } from '../session/errors.js';

export const HOP_NOT_AVAILABLE = 'gateway: relay hop not available';

function unavailable(): HashmailError {
  return new HashmailError('GATEWAY_UNAVAILABLE', HOP_NOT_AVAILABLE);
}

export const unavailableLegacy: LegacyOperations = {
  newCipherBox(): Promise<void> {
    return Promise.reject(unavailable());
  },
  delCipherBox(): Promise<void> {
    return Promise.reject(unavailable());
  },
  openReceive(): Promise<LegacyReceive> {
    return Promise.reject(unavailable());
  },
  openSend(): Promise<LegacySend> {
    return Promise.reject(unavailable());
  },
};
