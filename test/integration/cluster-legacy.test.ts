/**
 * One suite, two targets: the legacy v1 integration suites that run against
 * `hashmail serve` (grpc-v1, ws-v1, rest-streams, lnc-exchange, bad-input,
 * cross-generation, legacy call metrics, limits, http2-rest over TLS) run here unchanged against a cluster: real etcd, 3
 * relays and 2 gateways as separate processes, every legacy call through a
 * gateway (test/helpers/legacy-target.ts clusterTarget).
 */
import { describe } from 'node:test';
import { clusterTarget } from '../helpers/legacy-target.js';
import { badInputSuite } from './legacy/bad-input.js';
import { crossGenerationSuite } from './legacy/cross-generation.js';
import { legacyCallMetricsSuite } from './legacy/call-metrics.js';
import { http2RestSuite } from './legacy/http2-rest.js';
import { grpcV1Suite } from './legacy/grpc-v1.js';
import { limitsSuite } from './legacy/limits.js';
import { lncExchangeSuite } from './legacy/lnc-exchange.js';
import { restStreamsSuite } from './legacy/rest-streams.js';
import { wsV1Suite } from './legacy/ws-v1.js';

describe('legacy v1 suites against a cluster (2 gateways + 3 relays)', () => {
  describe('grpc-v1', () => grpcV1Suite(clusterTarget));
  describe('ws-v1', () => wsV1Suite(clusterTarget));
  describe('rest-streams', () => restStreamsSuite(clusterTarget));
  describe('lnc-exchange', () => lncExchangeSuite(clusterTarget));
  describe('bad-input', () => badInputSuite(clusterTarget));
  describe('cross-generation', () => crossGenerationSuite(clusterTarget));
  describe('legacy call metrics', () => legacyCallMetricsSuite(clusterTarget));
  describe('limits', () => limitsSuite(clusterTarget));
  describe('http2-rest (TLS everywhere: gateways pin the relays\' certificates)', () => http2RestSuite(clusterTarget));
});
