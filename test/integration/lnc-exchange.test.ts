/** The legacy suite test/integration/legacy/lnc-exchange.ts against `hashmail serve`. */
import { serveTarget } from '../helpers/legacy-target.js';
import { lncExchangeSuite } from './legacy/lnc-exchange.js';

lncExchangeSuite(serveTarget);
