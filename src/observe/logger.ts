/**
 * pino logger: JSON by default, human-readable on a terminal. Per-subsystem
 * debug tracing is switched on by `HASHMAIL_TRACE=grpc,ws,session` (or `all`)
 * without raising the global level, like GRPC_TRACE. Logs never carry a SID;
 * use `shortHash` from session/sid.ts.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LogOptions {
  level: string;
  format: 'auto' | 'json' | 'pretty';
}

export function createLogger(options: LogOptions): Logger {
  const pretty = options.format === 'pretty' || (options.format === 'auto' && process.stdout.isTTY === true);
  return pino({
    level: options.level,
    base: { pid: process.pid },
    ...(pretty
      ? { transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } } }
      : {}),
  });
}

const tracedSubsystems = new Set(
  (process.env.HASHMAIL_TRACE ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
);

/**
 * A child logger for one subsystem. With `HASHMAIL_TRACE` naming it (or
 * `all`), its level drops to debug so its trace lines show.
 */
export function subsystemLogger(parent: Logger, subsystem: string): Logger {
  const child = parent.child({ subsystem });
  if (tracedSubsystems.has(subsystem) || tracedSubsystems.has('all')) child.level = 'debug';
  return child;
}
