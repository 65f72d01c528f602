/**
 * A secret the whole cluster shares, kept in etcd at
 * `<prefix>cluster/<name>`: the first instance to ask creates it
 * (create-if-absent transaction, 32 random bytes in base64url), every later
 * one reads the same value. Used for the gateway -> relay hop token
 * (docs/gateway-hop.md). Not a SID: it names no session; anyone with read
 * access to the prefix can read it, so etcd access must be as private as
 * the hop.
 */
import { randomBytes } from 'node:crypto';
import type { EtcdRpc } from './etcd-rpc.js';
import { keyLayout } from './keys.js';

const SECRET_BYTES = 32;

export function clusterSecretKey(prefix: string, name: string): string {
  return `${keyLayout(prefix).prefix}cluster/${name}`;
}

/** The secret `name`, created now if no instance created it before. */
export async function ensureClusterSecret(rpc: EtcdRpc, prefix: string, name: string): Promise<string> {
  const key = Buffer.from(clusterSecretKey(prefix, name));
  const fresh = randomBytes(SECRET_BYTES).toString('base64url');
  const res = await rpc.call('cluster secret', (o, c) =>
    c.kv.txn(
      {
        compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
        success: [{ request_put: { key, value: Buffer.from(fresh) } }],
        failure: [{ request_range: { key } }],
      },
      o,
    ),
  );
  if (res.succeeded) return fresh;
  const kept = res.responses[0]?.response_range?.kvs[0]?.value.toString();
  // Deleted between the compare and the read is impossible in one txn; an empty value is an operator's mistake.
  if (!kept) throw new Error(`etcd key ${key.toString()} is empty: delete it so a new secret is created`);
  return kept;
}
