/**
 * The HTTP/2 REST suite (test/integration/legacy/http2-rest.ts) against a TLS
 * `hashmail serve`; cluster-legacy.test.ts runs it through a TLS gateway.
 */
import { serveTarget } from '../helpers/legacy-target.js';
import { http2RestSuite } from './legacy/http2-rest.js';

http2RestSuite(serveTarget);
