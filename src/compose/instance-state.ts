/**
 * What a relay or gateway keeps across a restart (its id, its lease ids) in
 * a directory of its own under server.dataDir, named by its role and listen
 * address (`relay-127.0.0.1-7001`), or by its id when given one. Instances started side by side from one
 * working directory with the default data dir are so distinct instances,
 * and a restart with the same flags finds its own id and leases again (the
 * restart revokes them). A lock file holding the pid keeps a second process
 * off the same state: started by mistake, it would revoke the first one's
 * leases before failing to bind the port.
 */
import { randomBytes } from 'node:crypto';
import { linkSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { InstanceRole } from '../directory/directory.js';

const GENERATED_ID_BYTES = 6;
const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const LOCK_FILE = 'lock';
/** Rounds of create / take over before giving up (only other starts racing can use them up). */
const LOCK_ATTEMPTS = 5;

export class InstanceStateInUseError extends Error {}

export class InstanceState {
  private locked = false;

  private constructor(
    readonly dir: string,
    private readonly role: InstanceRole,
  ) {}

  /** The state directory of `role` listening on server.listen, created and locked for this process. */
  static open(config: Config, role: InstanceRole): InstanceState {
    const state = new InstanceState(instanceStateDir(config, role), role);
    mkdirSync(state.dir, { recursive: true });
    state.lock(config.server.listen);
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
    if (readPid(file) === process.pid) rmSync(file, { force: true });
  }

  /**
   * Takes the lock file: created whole in one step (a link of a file already
   * holding our pid: never seen empty), or taken over from a holder that is
   * gone by moving it aside first (one rename wins; a loser that moved a
   * fresh lock puts it back).
   */
  private lock(listen: string): void {
    const file = join(this.dir, LOCK_FILE);
    for (let attempt = 0; attempt < LOCK_ATTEMPTS; attempt++) {
      if (createWhole(file, `${process.pid}\n`)) {
        this.locked = true;
        return;
      }
      const holder = readPid(file);
      if (holder === undefined) continue; // moved aside meanwhile
      if (holder !== null && holder !== process.pid && processAlive(holder)) {
        throw new InstanceStateInUseError(
          `${this.dir} is in use by process ${holder} (another ${this.role} with --listen ${listen}?): give each instance its own --listen or --data-dir`,
        );
      }
      const aside = `${file}.stale-${process.pid}`;
      try {
        renameSync(file, aside);
      } catch {
        continue; // another start moved it first
      }
      const moved = readPid(aside);
      if (moved !== holder) {
        // A fresh lock taken between our read and our move: its owner keeps it.
        try {
          linkSync(aside, file);
        } catch {
          // A third start took the place meanwhile; it holds the lock now.
        }
      }
      rmSync(aside, { force: true });
    }
    throw new InstanceStateInUseError(`${this.dir}: could not take its lock file (other starts racing for it)`);
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

/** The pid a lock file holds; null for anything else (garbage: nobody's), undefined when the file is gone. */
function readPid(file: string): number | null | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number.parseInt(text, 10);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

/**
 * `<dataDir>/id-<id>` for an instance given its id (relay.instanceId: the id
 * is its identity, whatever port it restarts on), else
 * `<dataDir>/<role>-<host>-<port>` after its listen address, anything but
 * [A-Za-z0-9.-] there as `_`.
 */
export function instanceStateDir(config: Config, role: InstanceRole): string {
  if (config.relay.instanceId) return join(config.server.dataDir, `id-${config.relay.instanceId}`);
  const listen = config.server.listen.replace(/^\[|\](?=:\d+$)/g, '').replace(/:(\d+)$/, '-$1');
  return join(config.server.dataDir, `${role}-${listen.replace(/[^A-Za-z0-9.-]/g, '_')}`);
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
