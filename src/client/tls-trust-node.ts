/**
 * Node-only: the `ca` and `certificateSha256` options as Node TLS options,
 * resolved per server before each dial or lookup. Loaded with a dynamic
 * import by the Node entry only (browsers use their own trust store).
 *
 * A pin trusts exactly one certificate, whoever issued it: the server's
 * certificate is fetched with a TLS handshake that verifies nothing, its
 * SHA-256 compared with the pin (CertificateMismatch otherwise), and the
 * real connection then takes that certificate (plus the system roots, for a
 * CA-issued one) as its trust anchors and checks the fingerprint again in
 * checkServerIdentity. The name is not checked: the pin is the identity.
 */
import { X509Certificate } from 'node:crypto';
import tls, { type PeerCertificate } from 'node:tls';
import { CertificateMismatch, ConnectionLost } from './errors.js';
import type { ServerAddress } from './options.js';

/** What the client's TLS connections take (tls.connect options). */
export interface NodeTls {
  ca?: string[];
  rejectUnauthorized: boolean;
  checkServerIdentity?: (hostname: string, cert: PeerCertificate) => Error | undefined;
}

export interface TrustOptions {
  /** PEM certificates to trust instead of the system roots. */
  ca?: string[];
  /** Upper-case, colon-separated SHA-256 of the one certificate to trust. */
  pinSha256?: string;
}

/** Resolves the TLS options for `server`, or undefined when neither `ca` nor a pin is set (the default verification applies). */
export type TrustLoader = (server: ServerAddress, signal: AbortSignal) => Promise<NodeTls | undefined>;

/** The certificate `server` presents, as PEM, with its SHA-256 (the handshake verifies nothing; the caller compares). */
function presentedCertificate(server: ServerAddress, signal: AbortSignal): Promise<{ pem: string; sha256: string }> {
  return new Promise((resolve, reject) => {
    // SNI takes names, not addresses.
    const servername = /^[\d.]+$|:/.test(server.host) ? undefined : server.host;
    const socket = tls.connect({ host: server.host.replace(/^\[|\]$/g, ''), port: server.port, servername, rejectUnauthorized: false, ALPNProtocols: ['h2', 'http/1.1'] });
    const onAbort = (): void => {
      socket.destroy();
      reject(new ConnectionLost('connect aborted', { cause: signal.reason }));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const done = (): void => signal.removeEventListener('abort', onAbort);
    socket.once('secureConnect', () => {
      done();
      const raw = socket.getPeerCertificate().raw;
      socket.end();
      if (!raw) return reject(new ConnectionLost(`relay ${server.authority} presented no certificate`));
      const cert = new X509Certificate(raw);
      resolve({ pem: cert.toString(), sha256: cert.fingerprint256 });
    });
    socket.once('error', (err) => {
      done();
      reject(new ConnectionLost(`TLS to ${server.authority} failed: ${err.message}`, { cause: err }));
    });
  });
}

export function trustLoader(options: TrustOptions): TrustLoader {
  const { ca, pinSha256 } = options;
  return async (server, signal) => {
    if (!server.secure) return undefined;
    if (pinSha256 === undefined) return ca ? { ca, rejectUnauthorized: true } : undefined;
    const presented = await presentedCertificate(server, signal);
    if (presented.sha256 !== pinSha256) throw new CertificateMismatch(presented.sha256);
    return {
      ca: [...tls.rootCertificates, presented.pem, ...(ca ?? [])],
      rejectUnauthorized: true,
      // The same certificate again on the real connection: a pin is exact.
      checkServerIdentity: (_hostname, cert) => (cert.fingerprint256 === pinSha256 ? undefined : new CertificateMismatch(cert.fingerprint256)),
    };
  };
}
