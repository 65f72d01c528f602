/** The legacy suite test/integration/legacy/rest-streams.ts against `hashmail serve`. */
import { serveTarget } from '../helpers/legacy-target.js';
import { restStreamsSuite } from './legacy/rest-streams.js';

restStreamsSuite(serveTarget);
