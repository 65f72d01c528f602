/**
 * What a relay or gateway keeps across a restart (its id, its lease ids) in
 * a directory of its own under server.dataDir, named by its role and listen
 * address (`relay-127.0.0.1-7001`), or by its id when given one. Instances started side by side from one
 * working directory with the default data dir are so distinct instances,
 * and a restart with the same flags finds its own id and leases again (the
 * restart revokes them). A lock file holding the pid (and, on Linux, the
 * process's start time) keeps a second process off the same state: started
 * by mistake, it would revoke the first one's leases before failing to bind
 * the port. The start time tells a live holder from an unrelated process
 * that got the same pid since (a container restarted on a kept volume).
 */
import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { InstanceRole } from '../directory/directory.js';

const GENERATED_ID_BYTES = 6;
const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const LOCK_FILE = 'lock';
/** Taken by the one start removing a stale lock file. */
const TAKEOVER_FILE = 'lock.takeover';
/** Rounds of create / take over before giving up (only other starts racing can use them up), within LOCK_WAIT_MS. */
const LOCK_ATTEMPTS = 200;
const LOCK_WAIT_MS = 2000;
/** Between rounds while another start takes a stale lock over. */
const LOCK_RETRY_MS = 5;

export class InstanceStateInUseError extends Error {}

export class InstanceState {
  private locked = false;

  private constructor(
    readonly dir: string,
    private readonly role: InstanceRole,
    /** Nobody starts on this state again (an ephemeral port): removed whole at release. */
    private readonly ephemeral = false,
  ) {}

  /** The state directory of `role` listening on server.listen, created and locked for this process. */
  static open(config: Config, role: InstanceRole): InstanceState {
    const state = new InstanceState(instanceStateDir(config, role), role, namesNoInstance(config));
    mkdirSync(state.dir, { recursive: true });
    state.lock(config.server.listen);
    if (state.ephemeral) removeDeadSiblings(state.dir);
    return state;
  }

  /** Where the directory keeps the lease ids (revoked by the next start). */
  get leaseFile(): string {
    return join(this.dir, `${this.role}-leases.json`);
  }

  /**
   * relay.instanceId, else the id kept here (file `<role>-id`), else a new
   * random one `<role>-<hex>` kept here.
   */
  instanceId(config: Config): string {
    if (config.relay.instanceId) return config.relay.instanceId;
    const file = join(this.dir, `${this.role}-id`);
    try {
      const kept = readFileSync(file, 'utf8').trim();
      if (ID_PATTERN.test(kept)) return kept;
    } catch {
      // First start: no id yet.
    }
    const id = `${this.role}-${randomBytes(GENERATED_ID_BYTES).toString('hex')}`;
    writeFileSync(file, `${id}\n`, { mode: 0o600 });
    return id;
  }

  /** Gives the directory up (at stop), if the lock is still ours; a process killed leaves it, and the next start takes it over. */
  release(): void {
    if (!this.locked) return;
    this.locked = false;
    const file = join(this.dir, LOCK_FILE);
    if (readHolder(file)?.pid !== process.pid) return;
    if (this.ephemeral) rmSync(this.dir, { recursive: true, force: true });
    else rmSync(file, { force: true });
  }

  /**
   * Takes the lock file: created whole in one step (a link of a file already
   * holding our pid: never seen empty), or taken over from a holder that is
   * gone. A takeover runs under a second lock file (`lock.takeover`, created
   * the same way), so only one start at a time may remove a stale lock: a
   * start that moved or removed the lock by name without it could remove a
   * fresh lock another start had just taken, and two would hold it.
   */
  private lock(listen: string): void {
    const file = join(this.dir, LOCK_FILE);
    const guard = join(this.dir, TAKEOVER_FILE);
    const giveUpAt = Date.now() + LOCK_WAIT_MS;
    for (let attempt = 0; attempt < LOCK_ATTEMPTS && Date.now() < giveUpAt; attempt++) {
      if (createWhole(file, lockText(process.pid))) {
        this.locked = true;
        return;
      }
      const holder = readHolder(file);
      if (holder === undefined) continue; // removed meanwhile: try to create it again
      if (holder !== null && holder.pid !== process.pid && holderAlive(holder)) {
        throw new InstanceStateInUseError(
          `${this.dir} is in use by process ${holder.pid} (another ${this.role} with --listen ${listen}?): give each instance its own --listen or --data-dir`,
        );
      }
      if (!createWhole(guard, lockText(process.pid))) {
        // Another start is taking over (a few file operations), or died doing it (its guard is removed; two
        // starts finding that at once is a second fault, not guarded against).
        const taking = readHolder(guard);
        if (taking === null || (taking !== undefined && !holderAlive(taking))) rmSync(guard, { force: true });
        else pause(LOCK_RETRY_MS);
        continue;
      }
      try {
        // Under the guard nobody else removes the lock, and nobody creates it while it exists:
        // if it still names the holder we judged gone, it is ours to remove.
        const now = readHolder(file);
        if (now !== undefined && now?.pid === holder?.pid && now?.started === holder?.started) rmSync(file, { force: true });
      } finally {
        rmSync(guard, { force: true });
      }
    }
    throw new InstanceStateInUseError(`${this.dir}: could not take its lock file (other starts racing for it)`);
  }
}

/** Blocks the thread for `ms` (a start waiting for another start's takeover; nothing else runs yet). */
function pause(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** Ephemeral state dirs (`...-0-pidN`) beside ours that a killed process left: its lock names a dead process. */
function removeDeadSiblings(dir: string): void {
  const parent = dirname(dir);
  const stem = basename(dir).replace(/-pid\d+$/, '-pid');
  for (const name of readdirSync(parent)) {
    if (!name.startsWith(stem) || !/^\d+$/.test(name.slice(stem.length)) || join(parent, name) === dir) continue;
    // No lock file: a start that has not locked yet, or not ours to judge.
    const holder = readHolder(join(parent, name, LOCK_FILE));
    if (holder && !holderAlive(holder)) rmSync(join(parent, name), { recursive: true, force: true });
  }
}

/** Creates `file` holding `text` in one step (link of a written temporary file); false if it exists. */
function createWhole(file: string, text: string): boolean {
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, text, { mode: 0o600 });
  try {
    linkSync(temp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    rmSync(temp, { force: true });
  }
}

interface LockHolder {
  pid: number;
  /** Its start time in clock ticks since boot (/proc/PID/stat), where the system tells it. */
  started?: string;
}

/** `PID [START]`: what a lock file holds. */
function lockText(pid: number): string {
  const started = processStartTime(pid);
  return `${pid}${started === undefined ? '' : ` ${started}`}\n`;
}

/** Who a lock file names; null for anything else (garbage: nobody's), undefined when the file is gone. */
function readHolder(file: string): LockHolder | null | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const match = /^(\d+)(?: (\d+))?\s*$/.exec(text);
  const pid = match ? Number(match[1]) : 0;
  if (!match || !Number.isSafeInteger(pid) || pid <= 0) return null;
  return match[2] === undefined ? { pid } : { pid, started: match[2] };
}

/** Alive and the same process: a recorded start time that differs from the live pid's is a reused pid. */
function holderAlive(holder: LockHolder): boolean {
  if (!processAlive(holder.pid)) return false;
  if (holder.started === undefined) return true;
  const now = processStartTime(holder.pid);
  return now === undefined || now === holder.started;
}

/** Field 22 of /proc/PID/stat (after the command name, which may hold spaces and parentheses); undefined off Linux. */
function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state), so field 22 is fields[19].
    return /^\d+$/.test(fields[19] ?? '') ? fields[19] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `<dataDir>/id-<id>` for an instance given its id (relay.instanceId: the id
 * is its identity, whatever port it restarts on), else
 * `<dataDir>/<role>-<host>-<port>` after its listen address, anything but
 * [A-Za-z0-9.-] there as `_`. A listen port of 0 (any free port) names no
 * instance: the directory then carries this process's pid and goes at stop.
 */
export function instanceStateDir(config: Config, role: InstanceRole): string {
  if (config.relay.instanceId) return join(config.server.dataDir, `id-${config.relay.instanceId}`);
  const listen = config.server.listen.replace(/^\[|\](?=:\d+$)/g, '').replace(/:(\d+)$/, '-$1');
  const dir = join(config.server.dataDir, `${role}-${listen.replace(/[^A-Za-z0-9.-]/g, '_')}`);
  return namesNoInstance(config) ? `${dir}-pid${process.pid}` : dir;
}

/** --listen HOST:0 with no id: each start gets another port, so no later start is this instance again. */
function namesNoInstance(config: Config): boolean {
  return !config.relay.instanceId && /:0$/.test(config.server.listen);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive, another user's.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
