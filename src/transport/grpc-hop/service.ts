/**
 * The hop service `hashmail.hop.v1.LegacyHop` for grpc-js, on our codec, and
 * the names of its metadata and trailers. The relay serves it (handlers.ts),
 * the gateway calls it (src/gateway/): one definition, so both
 * ends agree on the wire by construction. Contract: docs/gateway-hop.md.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import { decodeHopBox, decodeHopEmpty, encodeHopBox, HOP_EMPTY, type HopBox } from './codec.js';

export const HOP_SERVICE_NAME = 'hashmail.hop.v1.LegacyHop';
const PATH = `/${HOP_SERVICE_NAME}`;

/** Request metadata: the cluster secret (docs/gateway-hop.md, Authentication). */
export const HOP_TOKEN_HEADER = 'hashmail-hop-token';
/** Request metadata of the box calls: the legacy client's per-address limit key, as the gateway computed it. */
export const HOP_CLIENT_ADDRESS_HEADER = 'hashmail-client-address';
/** Trailer: the HashmailError code of a failed call (its message is the status details). */
export const HOP_ERROR_TRAILER = 'hashmail-error';
/** Trailer with SERVED_ELSEWHERE: the owning relay's `HOST:PORT`. */
export const HOP_RELAY_ADDRESS_TRAILER = 'hashmail-relay-address';

export const hopService = {
  CreateBox: {
    path: `${PATH}/CreateBox`,
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: HopBox) => encodeHopBox(v),
    requestDeserialize: (b: Buffer) => decodeHopBox(b),
    responseSerialize: () => HOP_EMPTY,
    responseDeserialize: (b: Buffer) => decodeHopEmpty(b),
  },
  DeleteBox: {
    path: `${PATH}/DeleteBox`,
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: HopBox) => encodeHopBox(v),
    requestDeserialize: (b: Buffer) => decodeHopBox(b),
    responseSerialize: () => HOP_EMPTY,
    responseDeserialize: (b: Buffer) => decodeHopEmpty(b),
  },
} satisfies ServiceDefinition;

export type HopMethod = keyof typeof hopService;
export type { HopBox };
