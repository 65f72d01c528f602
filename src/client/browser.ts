/**
 * Browser entry of the client library: the same API as index.ts over
 * WebSocket only. Nothing reachable from here imports gRPC or Node built-ins
 * (the `ws` package is imported only where no global WebSocket exists, i.e.
 * never in a browser). The hashmail-client package maps it under the
 * `browser` condition of its exports (src/client/package.json).
 */
import { connectWith } from './connect.js';
import type { MailboxConnection } from './connection.js';
import type { ConnectOptions } from './options.js';

export * from './public-api.js';

/** As index.ts `connect`, with transport 'websocket' (the default and the only one). */
export function connect(options: ConnectOptions): Promise<MailboxConnection> {
  return connectWith(options, null, 'websocket');
}
