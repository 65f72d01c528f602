/** The legacy suite test/integration/legacy/grpc-v1.ts against `hashmail serve`. */
import { serveTarget } from '../helpers/legacy-target.js';
import { grpcV1Suite } from './legacy/grpc-v1.js';

grpcV1Suite(serveTarget);
