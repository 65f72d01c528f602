/**
 * The local, watch-fed view of the directory: live instances and the session
 * map, with how many mappings each lease and each instance holds. Pure (no I/O): the watcher
 * feeds it key/value changes in revision order, placements feed it what their
 * transactions wrote. A change never goes back in revision.
 */
import type { InstanceValue, KeyLayout, SessionValue } from './keys.js';
import { parseInstance, parseSession } from './keys.js';

export interface CachedMapping extends SessionValue {
  /** etcd mod revision of the mapping (a replacement compares it). */
  modRevision: bigint;
}

export type MappingChange = (route: string, before: CachedMapping | undefined, after: CachedMapping | undefined) => void;
export type InstanceChange = (id: string, after: InstanceValue | undefined, before: InstanceValue | undefined) => void;

/** Remembered deletes; only the short race with an in-flight placement answer needs them. */
const MAX_REMEMBERED_DELETES = 10_000;

export class DirectoryCache {
  readonly instances = new Map<string, InstanceValue>();
  readonly sessions = new Map<string, CachedMapping>();
  private readonly perLease = new Map<string, number>();
  private readonly perInstance = new Map<string, number>();
  /**
   * Revision of deletes seen per etcd key (mappings and instance records), so
   * a late read or placement answer cannot bring back what was deleted.
   */
  private readonly deletedAt = new Map<string, bigint>();
  /** Revision of each instance record held (a mapping keeps its own, CachedMapping.modRevision). */
  private readonly instanceRevisions = new Map<string, bigint>();
  onMapping: MappingChange = () => undefined;
  onInstance: InstanceChange = () => undefined;

  constructor(private readonly layout: KeyLayout) {}

  /** Mappings bound to `lease` (hex). */
  mappingsOnLease(lease: string): number {
    return this.perLease.get(lease) ?? 0;
  }

  /** Mappings naming instance `id` (its sessions and placements, attached to or not). */
  mappingsOf(id: string): number {
    return this.perInstance.get(id) ?? 0;
  }

  /** The leases (hex) the mappings of instance `id` are bound to: one pass over the session map. */
  leasesOf(id: string): Set<string> {
    const leases = new Set<string>();
    if ((this.perInstance.get(id) ?? 0) === 0) return leases;
    for (const m of this.sessions.values()) if (m.id === id) leases.add(m.lease);
    return leases;
  }

  /** The owner of `route` if its instance is live in this view. */
  liveOwner(route: string): { mapping: CachedMapping; instance: InstanceValue } | null {
    const mapping = this.sessions.get(route);
    if (!mapping) return null;
    const instance = this.instances.get(mapping.id);
    return instance ? { mapping, instance } : null;
  }

  /** Replaces the whole view with a fresh listing (start, or after the watch fell behind a compaction). */
  reset(entries: Iterable<{ key: string; value: string; modRevision: bigint }>): void {
    const seenInstances = new Set<string>();
    const seenRoutes = new Set<string>();
    this.deletedAt.clear();
    for (const e of entries) {
      this.put(e.key, e.value, e.modRevision, true);
      if (e.key.startsWith(this.layout.instancesPrefix)) seenInstances.add(e.key.slice(this.layout.instancesPrefix.length));
      if (e.key.startsWith(this.layout.sessionsPrefix)) seenRoutes.add(e.key.slice(this.layout.sessionsPrefix.length));
    }
    for (const id of [...this.instances.keys()]) if (!seenInstances.has(id)) this.dropInstance(id);
    for (const route of [...this.sessions.keys()]) if (!seenRoutes.has(route)) this.dropMapping(route);
  }

  /** A key was put at `modRevision`. `force`: a listing, newer than anything we hold. */
  put(key: string, value: string, modRevision: bigint, force = false): void {
    if (key.startsWith(this.layout.instancesPrefix)) {
      const id = key.slice(this.layout.instancesPrefix.length);
      const record = parseInstance(value);
      if (!record || record.id !== id) return;
      // As for mappings: a read answered after the watch's newer put or delete must not bring back the past
      // (a dead instance put back would never be deleted again).
      if (!force && ((this.instanceRevisions.get(id) ?? -1n) >= modRevision || this.deletedSince(key, modRevision))) return;
      const before = this.instances.get(id);
      this.instances.set(id, record);
      this.instanceRevisions.set(id, modRevision);
      this.deletedAt.delete(key);
      this.onInstance(id, record, before);
      return;
    }
    if (!key.startsWith(this.layout.sessionsPrefix)) return;
    const route = key.slice(this.layout.sessionsPrefix.length);
    const parsed = parseSession(value);
    if (!parsed) return;
    const before = this.sessions.get(route);
    if (!force && before && before.modRevision >= modRevision) return;
    if (!force && this.deletedSince(key, modRevision)) return;
    const after: CachedMapping = { ...parsed, modRevision };
    if (before) this.count(before, -1);
    this.count(after, 1);
    this.sessions.set(route, after);
    this.deletedAt.delete(key);
    if (!before || before.id !== after.id || before.lease !== after.lease) this.onMapping(route, before, after);
  }

  delete(key: string, modRevision: bigint): void {
    if (key.startsWith(this.layout.instancesPrefix)) {
      const id = key.slice(this.layout.instancesPrefix.length);
      if ((this.instanceRevisions.get(id) ?? -1n) > modRevision) return;
      this.rememberDelete(key, modRevision);
      this.dropInstance(id);
      return;
    }
    if (!key.startsWith(this.layout.sessionsPrefix)) return;
    const route = key.slice(this.layout.sessionsPrefix.length);
    const before = this.sessions.get(route);
    if (before && before.modRevision > modRevision) return;
    this.rememberDelete(key, modRevision);
    this.dropMapping(route);
  }

  /** Whether `key` was deleted at or after `modRevision` (as far as we remember). */
  private deletedSince(key: string, modRevision: bigint): boolean {
    return (this.deletedAt.get(key) ?? -1n) >= modRevision;
  }

  private rememberDelete(key: string, modRevision: bigint): void {
    if (this.deletedAt.size >= MAX_REMEMBERED_DELETES) this.deletedAt.clear();
    this.deletedAt.set(key, modRevision);
  }

  private dropInstance(id: string): void {
    this.instanceRevisions.delete(id);
    const before = this.instances.get(id);
    if (before && this.instances.delete(id)) this.onInstance(id, undefined, before);
  }

  private dropMapping(route: string): void {
    const before = this.sessions.get(route);
    if (!before) return;
    this.sessions.delete(route);
    this.count(before, -1);
    this.onMapping(route, before, undefined);
  }

  private count(mapping: SessionValue, delta: number): void {
    bump(this.perLease, mapping.lease, delta);
    bump(this.perInstance, mapping.id, delta);
  }
}

function bump(counts: Map<string, number>, key: string, delta: number): void {
  const n = (counts.get(key) ?? 0) + delta;
  if (n <= 0) counts.delete(key);
  else counts.set(key, n);
}
