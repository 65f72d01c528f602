/** The legacy suite test/integration/legacy/bad-input.ts against `hashmail serve`. */
import { serveTarget } from '../helpers/legacy-target.js';
import { badInputSuite } from './legacy/bad-input.js';

badInputSuite(serveTarget);
