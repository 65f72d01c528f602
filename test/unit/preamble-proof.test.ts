/**
 * The gateway preamble's proof of the hop token: it never carries the token,
 * covers the client it names, and a relay takes each proof once, within a
 * minute of its own clock.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_REMEMBERED_PROOFS, PreambleProofs, PROOF_WINDOW_MS, encodeHopPreamble } from '../../src/transport/hop/preamble-proof.js';
import { parseProxyHeader, type HopProofTlv } from '../../src/transport/proxy-protocol.js';

const TOKEN = 'the-cluster-hop-token-0123456789abcdef';
const T0 = 1_800_000_000_000;

function proofOf(header: Buffer): HopProofTlv {
  const parsed = parseProxyHeader(header);
  assert.equal(parsed.kind, 'header');
  assert.ok(parsed.kind === 'header' && parsed.hopProof !== null, 'no proof TLV');
  return parsed.hopProof;
}

test('the preamble names its client (or nobody), carries a proof and never the token', () => {
  for (const client of ['10.1.2.3', '2001:db8::7', null]) {
    const header = encodeHopPreamble(client, TOKEN, T0);
    assert.equal(header.includes(Buffer.from(TOKEN)), false, 'the token is in the preamble');
    const parsed = parseProxyHeader(header);
    assert.ok(parsed.kind === 'header');
    assert.equal(parsed.address, client);
    assert.equal(parsed.hopToken, null);
    assert.equal(parsed.length, header.length);
    assert.equal(new PreambleProofs(TOKEN, () => T0).check(proofOf(header)), 'taken', String(client));
  }
  // Two preambles for one client differ (each its own nonce): each can be taken once.
  assert.notDeepEqual(encodeHopPreamble('10.1.2.3', TOKEN, T0), encodeHopPreamble('10.1.2.3', TOKEN, T0));
});

test('a proof is taken once; another token, a changed client address or time, or a cut proof are wrong', () => {
  const proofs = new PreambleProofs(TOKEN, () => T0);
  const header = encodeHopPreamble('10.1.2.3', TOKEN, T0);
  assert.equal(proofs.check(proofOf(header)), 'taken');
  assert.equal(proofs.check(proofOf(Buffer.from(header))), 'replayed');
  assert.equal(proofs.check(proofOf(encodeHopPreamble('10.1.2.3', 'another-token-0123456789abcdef', T0))), 'wrong');
  // The client address is covered: the same proof naming another client is not the gateway's.
  const moved = Buffer.from(encodeHopPreamble('10.1.2.3', TOKEN, T0));
  moved[19] = 4; // 10.1.2.4
  assert.equal(proofs.check(proofOf(moved)), 'wrong');
  // So is the time.
  const later = Buffer.from(encodeHopPreamble('10.1.2.3', TOKEN, T0));
  const tlv = proofOf(later);
  later.writeBigUInt64BE(BigInt(T0 + 1000), tlv.valueAt);
  assert.equal(proofs.check(proofOf(later)), 'wrong');
  // A proof TLV of another length.
  const cut = proofOf(encodeHopPreamble(null, TOKEN, T0));
  assert.equal(proofs.check({ ...cut, valueLength: cut.valueLength - 1 }), 'wrong');
});

test('a proof more than the window off the relay\'s clock is refused; nonces are forgotten once out of the window, never before', () => {
  let now = T0;
  const proofs = new PreambleProofs(TOKEN, () => now);
  assert.equal(proofs.check(proofOf(encodeHopPreamble(null, TOKEN, T0 - PROOF_WINDOW_MS - 1))), 'outside_window');
  assert.equal(proofs.check(proofOf(encodeHopPreamble(null, TOKEN, T0 + PROOF_WINDOW_MS + 1))), 'outside_window');
  const early = encodeHopPreamble(null, TOKEN, T0 - PROOF_WINDOW_MS);
  assert.equal(proofs.check(proofOf(early)), 'taken');
  const fresh = encodeHopPreamble(null, TOKEN, T0);
  assert.equal(proofs.check(proofOf(fresh)), 'taken');
  assert.equal(proofs.remembered, 2);
  now = T0 + 1;
  // `early` left the window: sent again it is refused for its time, and its nonce is forgotten.
  assert.equal(proofs.check(proofOf(early)), 'outside_window');
  assert.equal(proofs.check(proofOf(fresh)), 'replayed');
  assert.equal(proofs.remembered, 1);
});

test(`at most ${MAX_REMEMBERED_PROOFS} proofs remembered: past that, new proofs are refused until old ones leave the window`, () => {
  let now = T0;
  const proofs = new PreambleProofs(TOKEN, () => now);
  for (let i = 0; i < MAX_REMEMBERED_PROOFS; i++) assert.equal(proofs.check(proofOf(encodeHopPreamble(null, TOKEN, T0))), 'taken');
  assert.equal(proofs.check(proofOf(encodeHopPreamble(null, TOKEN, T0))), 'too_many');
  now = T0 + PROOF_WINDOW_MS + 1;
  assert.equal(proofs.check(proofOf(encodeHopPreamble(null, TOKEN, now))), 'taken');
  assert.equal(proofs.remembered, 1);
});
