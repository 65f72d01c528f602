/**
 * A gateway's connection preamble proves that it holds the hop token without
 * carrying it. The preamble goes before TLS, where anyone on the path between
 * gateway and relay reads it, and the token is the cluster's secret (whoever
 * has it may open lanes and name any client address). So the preamble's
 * PP2_TYPE_HOP_PROOF TLV holds:
 *
 *   time (8 bytes, ms since the epoch) | nonce (16 random bytes) | MAC (32 bytes)
 *
 * where MAC = HMAC-SHA256(hop token, the whole PROXY header with the MAC's 32
 * bytes zero): it covers the command and the client address the header names.
 * A relay takes a proof only within PROOF_WINDOW_MS of its own clock, and only
 * once: it remembers the nonces of the proofs it took until they are out of
 * the window, so a preamble read on the wire cannot be sent again.
 */
import { createHmac, randomFillSync, timingSafeEqual } from 'node:crypto';
import { encodeProxyV2Header, PP2_TYPE_HOP_PROOF, type HopProofTlv } from '../proxy-protocol.js';

const TIME_BYTES = 8;
const NONCE_BYTES = 16;
const MAC_BYTES = 32;
const PROOF_BYTES = TIME_BYTES + NONCE_BYTES + MAC_BYTES;
/** How far a proof's time may be from the relay's clock, either way (ms): the clocks of a cluster's machines. */
export const PROOF_WINDOW_MS = 60_000;
/**
 * Proofs remembered at most (each about 100 bytes): past this many taken
 * within the window, a preamble is not believed (its connection counts as
 * its TCP peer's until its upgrade names the client; nothing fails).
 */
export const MAX_REMEMBERED_PROOFS = 100_000;

/** How a proof was judged: taken, or why not (the label of hashmail_hop_preamble_proofs_refused_total). */
export type ProofVerdict = 'taken' | RefusedProof;
export type RefusedProof = 'wrong' | 'outside_window' | 'replayed' | 'too_many';
/** What each refusal means, for its log line and the metric's help. */
export const REFUSED_PROOF_MEANING: Readonly<Record<RefusedProof, string>> = {
  wrong: 'not made with this cluster\'s hop token',
  outside_window: 'made with the hop token, but its time is more than a minute off this clock: check the clocks of gateways and relays',
  replayed: 'a proof taken once already (a preamble sent again)',
  too_many: `more than ${MAX_REMEMBERED_PROOFS} proofs within a minute, more than a relay remembers`,
};
export const REFUSED_PROOFS = Object.keys(REFUSED_PROOF_MEANING) as RefusedProof[];

/** The preamble of one connection to a relay: `client`, or nobody (null: a hop lane), and a fresh proof of `hopToken`. */
export function encodeHopPreamble(client: string | null, hopToken: string, now = Date.now()): Buffer {
  const proof = Buffer.alloc(PROOF_BYTES);
  proof.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(now))), 0);
  randomFillSync(proof, TIME_BYTES, NONCE_BYTES);
  const header = encodeProxyV2Header(client, [[PP2_TYPE_HOP_PROOF, proof]]);
  // The proof is the header's last TLV: its MAC, computed while still zero, goes in its last bytes.
  mac(hopToken, header).copy(header, header.length - MAC_BYTES);
  return header;
}

function mac(hopToken: string, header: Buffer): Buffer {
  return createHmac('sha256', hopToken).update(header).digest();
}

/** A relay's check of preamble proofs, with the nonces it took (one per listener). */
export class PreambleProofs {
  /** Nonces (hex) of the proofs taken, with when each leaves the window (ms); in the order taken. */
  private readonly taken = new Map<string, number>();

  constructor(
    private readonly hopToken: string,
    private readonly now: () => number = Date.now,
  ) {}

  /** Proofs remembered now. */
  get remembered(): number {
    return this.taken.size;
  }

  check(tlv: HopProofTlv): ProofVerdict {
    if (tlv.valueLength !== PROOF_BYTES) return 'wrong';
    const value = tlv.header.subarray(tlv.valueAt, tlv.valueAt + PROOF_BYTES);
    const unsigned = Buffer.from(tlv.header);
    unsigned.fill(0, tlv.valueAt + TIME_BYTES + NONCE_BYTES, tlv.valueAt + PROOF_BYTES);
    if (!timingSafeEqual(mac(this.hopToken, unsigned), value.subarray(TIME_BYTES + NONCE_BYTES))) return 'wrong';
    const now = this.now();
    const at = Number(value.readBigUInt64BE(0));
    if (Math.abs(now - at) > PROOF_WINDOW_MS) return 'outside_window';
    this.forgetExpired(now);
    const nonce = value.toString('hex', TIME_BYTES, TIME_BYTES + NONCE_BYTES);
    if (this.taken.has(nonce)) return 'replayed';
    if (this.taken.size >= MAX_REMEMBERED_PROOFS) return 'too_many';
    this.taken.set(nonce, at + PROOF_WINDOW_MS);
    return 'taken';
  }

  /** Drops nonces whose proofs can no longer be taken. Roughly oldest first (a proof's time is its gateway's clock): stops at the first still in the window. */
  private forgetExpired(now: number): void {
    for (const [nonce, until] of this.taken) {
      if (until >= now) return;
      this.taken.delete(nonce);
    }
  }
}
