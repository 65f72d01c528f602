/**
 * Server side of a gRPC service: a request that fails to decode becomes a
 * HashmailError value the handler answers with INVALID_ARGUMENT, instead of
 * grpc-js's bare INTERNAL "Error deserializing request". Shared by the
 * legacy service and the gateway hop.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';
import { asHashmailError, type HashmailError } from '../session/errors.js';

export function tolerant<T>(decode: (b: Buffer) => T): (b: Buffer) => T | HashmailError {
  return (b) => {
    try {
      return decode(b);
    } catch (err) {
      return asHashmailError(err);
    }
  };
}

/** `service` with every method's request decoder made tolerant. */
export function tolerantService(service: ServiceDefinition): ServiceDefinition {
  return Object.fromEntries(Object.entries(service).map(([name, method]) => [name, { ...method, requestDeserialize: tolerant(method.requestDeserialize) }]));
}
