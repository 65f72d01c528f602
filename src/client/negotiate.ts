/**
 * Which protocol a link speaks: v2 first; v1 when the relay does not serve
 * v2 (gRPC UNIMPLEMENTED, or HTTP 404/400 on the /v2/mailbox handshake), and
 * remembered per relay and transport (module-wide) so later connects go
 * straight to v1. The memory fades after V2_MISSING_RECHECK_MS: relays get
 * upgraded.
 */
import { UnsupportedVersion, V2NotServed } from './errors.js';
import type { Link, LinkHandlers, LinkRequest, TransportOpeners } from './link.js';
import type { ProtocolChoice, ServerAddress, TransportName } from './options.js';
import { V2HandshakeUnexplained } from './v2-websocket.js';

/** How long "this relay has no v2" is trusted before v2 is tried again (ms). */
export const V2_MISSING_RECHECK_MS = 10 * 60_000;

/** `transport|host:port` -> when v2 was found missing (Date.now()). */
const v2Missing = new Map<string, number>();

function cacheKey(transport: TransportName, req: { server: ServerAddress }): string {
  return `${transport}|${req.server.authority}`;
}

/** Whether v2 is known to be missing on this relay (for this transport). */
export function knownV1Only(transport: TransportName, req: { server: ServerAddress }, now = Date.now()): boolean {
  const key = cacheKey(transport, req);
  const since = v2Missing.get(key);
  if (since === undefined) return false;
  if (now - since < V2_MISSING_RECHECK_MS) return true;
  v2Missing.delete(key);
  return false;
}

/** Forgets what negotiation learned about relays (tests; a relay known to have been upgraded). */
export function forgetNegotiatedProtocols(): void {
  v2Missing.clear();
}

export interface NegotiateParams {
  protocol: ProtocolChoice;
  transport: TransportName;
  openers: TransportOpeners;
}

/** Opens a link of the protocol `params.protocol` allows, falling back as described above. */
export async function openNegotiated(params: NegotiateParams, req: LinkRequest, handlers: LinkHandlers): Promise<Link> {
  const { protocol, transport, openers } = params;
  if (protocol === 'v1' || (protocol === 'auto' && knownV1Only(transport, req))) return openers.openV1(req, handlers);
  try {
    return await openers.openV2(req, handlers);
  } catch (err) {
    if (err instanceof V2NotServed) {
      if (protocol === 'v2') throw new UnsupportedVersion(err.code, `relay does not speak protocol v2 (${err.message})`, [1], { cause: err });
      v2Missing.set(cacheKey(transport, req), Date.now());
      return openers.openV1(req, handlers);
    }
    if (err instanceof V2HandshakeUnexplained && protocol === 'auto') {
      // A browser hides the handshake's HTTP status: if the relay takes a v1 stream, it is up without v2.
      const link = await openers.openV1(req, handlers).catch(() => {
        throw err;
      });
      v2Missing.set(cacheKey(transport, req), Date.now());
      return link;
    }
    throw err;
  }
}
