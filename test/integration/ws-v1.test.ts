/** The legacy suite test/integration/legacy/ws-v1.ts against `hashmail serve`. */
import { serveTarget } from '../helpers/legacy-target.js';
import { wsV1Suite } from './legacy/ws-v1.js';

wsV1Suite(serveTarget);
