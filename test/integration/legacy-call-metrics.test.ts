/**
 * The legacy call metrics suite (test/integration/legacy/call-metrics.ts)
 * against `hashmail serve`; cluster-legacy.test.ts runs it through a gateway.
 */
import { serveTarget } from '../helpers/legacy-target.js';
import { legacyCallMetricsSuite } from './legacy/call-metrics.js';

legacyCallMetricsSuite(serveTarget);
