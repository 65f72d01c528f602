/**
 * What `serve`, `relay` and `gateway` share as long-running processes: the
 * version in the log, fatal start-up errors in the log stream as well as on
 * stderr, SIGHUP reloading the TLS certificate instead of killing the
 * process, and stopping (a relay draining first) on SIGTERM or SIGINT.
 */
import type { RunningNode } from '../compose/node.js';
import { DirectoryUnavailableError } from '../directory/directory.js';
import { createLogger, type Logger } from '../observe/logger.js';
import { HASHMAIL_VERSION } from '../observe/version.js';

/** Fields every process's start-up line carries. */
function versionFields(): { version: string; node: string } {
  return { version: HASHMAIL_VERSION, node: process.version };
}

/**
 * A fatal start-up error as a log line too (stderr gets it from main.ts):
 * an operator reading only the log (journald, a collector on stdout) sees
 * why the process exited. Before the config is known the default logger
 * writes it.
 */
export function logFatal(logger: Logger | null, message: string): void {
  const log = logger ?? createLogger({ level: 'info', format: 'json' });
  log.fatal({ ...versionFields(), err: message }, 'start-up failed');
  log.flush();
}

/** Starts the node; on failure logs the error (fatal) and rethrows it for main.ts. */
async function startLogged(logger: Logger, start: () => Promise<RunningNode>): Promise<RunningNode> {
  try {
    return await start();
  } catch (err) {
    const text = startFailureText(err);
    logFatal(logger, text);
    throw new Error(text, { cause: err });
  }
}

/**
 * Why a start failed, in words an operator can act on: "directory
 * unavailable" alone (the text clients get) hides whether etcd was down, the
 * certificate refused or the password wrong, so its reason is added.
 */
function startFailureText(err: unknown): string {
  if (err instanceof DirectoryUnavailableError) return `${err.message}: ${err.reason}`;
  return err instanceof Error ? err.message : String(err);
}

/**
 * SIGHUP reloads the TLS certificate and key (after a renewal): new
 * connections get the new pair, open ones keep theirs, no session is
 * dropped. Installed before start so an early SIGHUP does not kill the
 * process. Returns the uninstaller.
 */
function reloadOnSighup(logger: Logger, node: () => RunningNode | null): () => void {
  const onHup = (): void => {
    const running = node();
    if (!running) {
      logger.info('SIGHUP before the server was up: nothing reloaded');
      return;
    }
    try {
      if (running.reloadTls() === null) logger.info('SIGHUP: plain text (--insecure), no certificate to reload');
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'TLS certificate reload failed; the previous certificate and key stay in use');
    }
  };
  process.on('SIGHUP', onHup);
  return () => process.off('SIGHUP', onHup);
}

/**
 * Resolves at the first SIGTERM or SIGINT (logged as `message`). With
 * `repeats`, later ones are logged as that and ignored (a drain is bounded
 * by its own deadline); without, they get Node's default: exit at once.
 */
function untilStopSignal(logger: Logger, message: string, repeats?: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, message);
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      if (repeats !== undefined) {
        const ignore = (): void => logger.info(repeats);
        process.on('SIGTERM', ignore);
        process.on('SIGINT', ignore);
      }
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

export interface ServerRun {
  logger: Logger;
  start: () => Promise<RunningNode>;
  /** The 'serving' line's fields beyond listen, adminListen and the version. */
  serving: (node: RunningNode) => Record<string, unknown>;
  /** A cluster member drains first (relay) and revokes its registration when it stops (relay, gateway). */
  cluster?: { drain: boolean };
}

/**
 * What `serve`, `relay` and `gateway` do once their config is loaded: start
 * (a failure logged fatal), reload TLS on SIGHUP, log 'serving', and on
 * SIGTERM or SIGINT stop (a relay drains first) and return exit code 0.
 */
export async function runUntilStopped(run: ServerRun): Promise<number> {
  const { logger } = run;
  let running: RunningNode | null = null;
  const stopReloading = reloadOnSighup(logger, () => running);
  const node = await startLogged(logger, run.start).catch((err: unknown) => {
    stopReloading();
    throw err;
  });
  running = node;
  logger.info({ listen: node.listen, adminListen: node.adminListen, ...run.serving(node), ...versionFields() }, 'serving');
  if (run.cluster?.drain) {
    // A second signal during the drain is ignored: the drain is bounded by relay.drainDeadlineMs.
    await untilStopSignal(logger, 'draining on signal', 'already draining');
    await node.drain();
  } else {
    await untilStopSignal(logger, 'shutting down');
  }
  await node.stop(run.cluster ? { revoke: true } : {});
  stopReloading();
  logger.info('stopped');
  logger.flush();
  return 0;
}
