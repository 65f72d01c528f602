/** The legacy suite test/integration/legacy/limits.ts against `hashmail serve`. */
import { serveTarget } from '../helpers/legacy-target.js';
import { limitsSuite } from './legacy/limits.js';

limitsSuite(serveTarget);
