/**
 * The etcd key layout and value codecs of the directory. Everything lives
 * under one prefix:
 *   <prefix>instances/<id>    -> InstanceValue, bound to the instance lease
 *   <prefix>sessions/<route>  -> SessionValue, bound to the owner's session lease
 * Keys and values carry routes, instance ids and lease ids, never a SID.
 */
import type { InstanceRecord } from '../directory.js';

/** What an instance publishes: the record placers read, plus the lease new mappings bind to. */
export interface InstanceValue extends InstanceRecord {
  /** Lease id (hex) a placer binds a new mapping of this instance to. */
  sessionLease: string;
}

/** A session mapping: the owning instance and the lease that fences it. */
export interface SessionValue {
  id: string;
  /** Lease id (hex). */
  lease: string;
}

export interface KeyLayout {
  readonly prefix: string;
  readonly instancesPrefix: string;
  readonly sessionsPrefix: string;
}

export function keyLayout(prefix: string): KeyLayout {
  const p = prefix.endsWith('/') ? prefix : `${prefix}/`;
  return { prefix: p, instancesPrefix: `${p}instances/`, sessionsPrefix: `${p}sessions/` };
}

export const instanceKey = (layout: KeyLayout, id: string): string => `${layout.instancesPrefix}${id}`;
export const sessionKey = (layout: KeyLayout, route: string): string => `${layout.sessionsPrefix}${route}`;

/** The end of the key range that holds every key starting with `prefix` (etcd's "prefix end"). */
export function prefixEnd(prefix: string): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] < 0xff) {
      end[i] += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** etcd lease ids travel as decimal int64 strings; we publish them in hex. */
export function leaseHex(decimalId: string): string {
  return BigInt(decimalId).toString(16);
}

export function leaseDecimal(hexId: string): string {
  return BigInt(`0x${hexId}`).toString(10);
}

const HEX_LEASE = /^[0-9a-f]{1,16}$/;

function isString(v: unknown): v is string {
  return typeof v === 'string';
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

/** Parses an instance value; null for anything malformed (another writer's garbage must not crash us). */
export function parseInstance(text: string): InstanceValue | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  const load = o.load as Record<string, unknown> | undefined;
  if (!isString(o.id) || !isString(o.address) || !Array.isArray(o.addresses) || !o.addresses.every(isString)) return null;
  if (typeof load !== 'object' || load === null || !isCount(load.sessions) || !isCount(load.connections)) return null;
  if (typeof o.draining !== 'boolean' || !isString(o.version) || !isCount(o.startedAt)) return null;
  if (!isString(o.sessionLease) || !HEX_LEASE.test(o.sessionLease)) return null;
  // Records written before roles existed are relays.
  const role = o.role === undefined ? 'relay' : o.role;
  if (role !== 'relay' && role !== 'gateway') return null;
  return {
    id: o.id,
    role,
    address: o.address,
    addresses: [...(o.addresses as string[])],
    load: { sessions: load.sessions, connections: load.connections },
    draining: o.draining,
    version: o.version,
    startedAt: o.startedAt,
    sessionLease: o.sessionLease,
    ...(isString(o.tlsCertificate) ? { tlsCertificate: o.tlsCertificate } : {}),
  };
}

export function parseSession(text: string): SessionValue | null {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  if (!isString(o.id) || !isString(o.lease) || !HEX_LEASE.test(o.lease)) return null;
  return { id: o.id, lease: o.lease };
}

export function encodeSession(value: SessionValue): string {
  return JSON.stringify({ id: value.id, lease: value.lease });
}

export function encodeInstance(value: InstanceValue): string {
  return JSON.stringify(value);
}
