/** The last frame of a failed v2 stream, the same on every transport (docs/protocol-v2.md, Errors). */
import { SUPPORTED_VERSIONS } from '../relay/v2-mailbox.js';
import type { HashmailError } from '../session/errors.js';
import { encodeErrorFrame } from '../wire/v2-frames.js';

/** The Error frame for `err`; supported_versions only when the version is the problem. */
export function v2ErrorFrame(err: HashmailError): Uint8Array {
  return encodeErrorFrame({
    code: err.grpcCode,
    message: err.message,
    supportedVersions: err.code === 'UNSUPPORTED_VERSION' ? [...SUPPORTED_VERSIONS] : [],
    relayAddress: err.relayAddress,
  });
}
