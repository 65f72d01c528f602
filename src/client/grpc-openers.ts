/**
 * Node-only: the gRPC transport's link openers. The entry (index.ts) loads
 * this file with a dynamic import, and only when transport 'grpc' is chosen,
 * so @grpc/grpc-js and Node built-ins never load on the WebSocket path.
 */
import type { TransportOpeners } from './link.js';
import { grpcRelayLookup } from './lookup-grpc.js';
import { openV1Grpc } from './v1-grpc.js';
import { openV2Grpc } from './v2-grpc.js';

export const grpcOpeners: TransportOpeners = { openV2: openV2Grpc, openV1: openV1Grpc, lookup: grpcRelayLookup };
