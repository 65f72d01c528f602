/** The legacy suite test/integration/legacy/cross-generation.ts against `hashmail serve`. */
import { serveTarget } from '../helpers/legacy-target.js';
import { crossGenerationSuite } from './legacy/cross-generation.js';

crossGenerationSuite(serveTarget);
