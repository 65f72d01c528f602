/**
 * The flags relay and gateway share with serve: the balancer flags land in
 * the same server.* config keys for every server command.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CLUSTER_FLAGS, clusterFlagLayers, parseCommandFlags } from '../../src/cli/flags.js';
import { loadConfig } from '../../src/config/load.js';
import { GATEWAY_USAGE } from '../../src/cli/gateway.js';
import { RELAY_USAGE } from '../../src/cli/relay.js';
import { SERVE_USAGE } from '../../src/cli/serve.js';

test('relay and gateway take serve\'s balancer flags into server.trustProxy, clientAddressFrom and trustedProxies', () => {
  const values = parseCommandFlags(
    'relay',
    ['--etcd', 'http://127.0.0.1:2379', '--listen', '127.0.0.1:7001', '--trust-proxy', '--client-address-from', 'x-forwarded-for', '--trusted-proxies', '10.0.0.0/8, 2001:db8::/32'],
    CLUSTER_FLAGS,
    RELAY_USAGE,
  );
  assert.notEqual(typeof values, 'number', 'the flags parse');
  if (typeof values === 'number') return;
  const config = loadConfig({ env: {}, flags: clusterFlagLayers(values) });
  assert.equal(config.server.trustProxy, true);
  assert.equal(config.server.clientAddressFrom, 'x-forwarded-for');
  assert.deepEqual(config.server.trustedProxies, ['10.0.0.0/8', '2001:db8::/32']);
  for (const usage of [SERVE_USAGE, RELAY_USAGE, GATEWAY_USAGE]) {
    for (const flag of ['--trust-proxy', '--client-address-from', '--trusted-proxies']) assert.ok(usage.includes(`  ${flag} `), `${flag} in the usage`);
  }
});
