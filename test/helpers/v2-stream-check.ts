/**
 * Self-checking message streams for the v2 delivery tests: each message of
 * 36 bytes or more carries its sequence number and the SHA-256 of its body,
 * so a reordered, duplicated or damaged message names itself; shorter ones
 * are a pattern of their sequence number. Both sides also hash every byte in
 * order, so the whole stream is compared at the end.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, type Hash } from 'node:crypto';

/** 4-byte sequence number + 32-byte SHA-256 of the body. */
export const HEADER_BYTES = 36;
/** Random bytes the bodies are cut from (bodies start at a per-message offset). */
const POOL_BYTES = 256 * 1024;

/** A deterministic PRNG (mulberry32): the same seed gives the same sizes, so a failure can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `count` sizes in [0, max], inclusive; the first ones are the edges 0, 1, HEADER_BYTES - 1, max. */
export function randomSizes(count: number, max: number, seed: number): number[] {
  const next = prng(seed);
  const sizes = Array.from({ length: count }, () => Math.floor(next() * (max + 1)));
  const edges = [0, 1, HEADER_BYTES - 1, HEADER_BYTES, max];
  for (let i = 0; i < edges.length && i < count; i++) sizes[i] = edges[i];
  return sizes;
}

const pool = randomBytes(POOL_BYTES);

/** Message `seq` of `size` bytes. */
export function makeMessage(seq: number, size: number): Buffer {
  const msg = Buffer.allocUnsafe(size);
  if (size < HEADER_BYTES) {
    for (let i = 0; i < size; i++) msg[i] = (seq + i * 7) & 0xff;
    return msg;
  }
  const bodyLen = size - HEADER_BYTES;
  let off = (seq * 7919) % POOL_BYTES;
  for (let pos = HEADER_BYTES; pos < size; ) {
    const n = Math.min(size - pos, POOL_BYTES - off);
    pool.copy(msg, pos, off, off + n);
    pos += n;
    off = 0;
  }
  msg.writeUInt32BE(seq >>> 0, 0);
  createHash('sha256').update(msg.subarray(HEADER_BYTES, HEADER_BYTES + bodyLen)).digest().copy(msg, 4);
  return msg;
}

/** Asserts `msg` is message `seq` of `size` bytes. */
export function checkMessage(msg: Buffer, seq: number, size: number, what: string): void {
  if (msg.length >= HEADER_BYTES) {
    const got = msg.readUInt32BE(0);
    assert.equal(got, seq >>> 0, `${what}: message ${seq} expected, got message ${got} (reordered, duplicated or lost)`);
  }
  assert.equal(msg.length, size, `${what}: message ${seq} length`);
  if (size >= HEADER_BYTES) {
    const hash = createHash('sha256').update(msg.subarray(HEADER_BYTES)).digest();
    assert.ok(hash.equals(msg.subarray(4, HEADER_BYTES)), `${what}: message ${seq} body damaged (hash mismatch)`);
  } else {
    assert.ok(msg.equals(makeMessage(seq, size)), `${what}: message ${seq} damaged`);
  }
}

/** A running hash and count over a stream of messages. */
export class StreamDigest {
  private readonly hash: Hash = createHash('sha256');
  messages = 0;
  bytes = 0;

  add(msg: Uint8Array): void {
    this.hash.update(msg);
    this.messages++;
    this.bytes += msg.length;
  }

  digest(): string {
    return this.hash.copy().digest('hex');
  }
}
