/**
 * The hop token an instance (relay or gateway) uses: hop.tokenFile if set,
 * else the cluster secret in etcd, created by whichever instance asks first.
 */
import { readFileSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { ensureClusterSecret } from '../directory/etcd/cluster-secret.js';
import { etcdOptionsFromConfig } from '../directory/etcd/etcd-options.js';
import { EtcdRpc } from '../directory/etcd/etcd-rpc.js';
import type { Logger } from '../observe/logger.js';
import { HopToken } from '../transport/hop/hop-token.js';

/** Name of the hop token under `<prefix>cluster/`. */
export const HOP_TOKEN_SECRET = 'hop-token';
/** A token file must hold at least this much (a guessable token would let anyone forge client addresses). */
const MIN_TOKEN_FILE_CHARS = 32;

export async function resolveHopToken(config: Config, logger: Logger): Promise<HopToken> {
  const file = config.hop.tokenFile;
  if (file) {
    const text = readFileSync(file, 'utf8').trim();
    if (text.length < MIN_TOKEN_FILE_CHARS) throw new Error(`hop.tokenFile ${file}: the token must be at least ${MIN_TOKEN_FILE_CHARS} characters`);
    logger.info({ tokenFile: file }, 'hop token from hop.tokenFile');
    return new HopToken(text);
  }
  const options = etcdOptionsFromConfig(config, logger);
  const rpc = new EtcdRpc(options, options.callTimeoutMs);
  try {
    return new HopToken(await ensureClusterSecret(rpc, options.prefix, HOP_TOKEN_SECRET));
  } finally {
    rpc.close();
  }
}
