/**
 * How a gateway checks a relay's TLS certificate (hop lanes and passed-through
 * v2 WebSockets alike):
 * - hop.caFile set: against that CA, the name dialed checked too;
 * - else, if the certificate the relay registered in the directory is
 *   self-signed (a relay's generated one): pinned to exactly that
 *   certificate, whatever name the relay is dialed by, so the default setup
 *   (no certificates anywhere) works on one machine and across many;
 * - else the system's CAs, the name checked.
 * The directory is trusted as the hop token is: whoever can write it owns
 * the cluster anyway.
 */
import { X509Certificate } from 'node:crypto';
import type { Directory } from '../directory/directory.js';

/** Extra tls.connect options for one relay. */
export interface RelayTlsOptions {
  ca?: Buffer;
  /** Set when pinned: the one trusted certificate is the check, not the name. */
  checkServerIdentity?: () => undefined;
}

/** What RelayTrust reads of the directory. */
export type RelayRegistry = Pick<Directory, 'instances'>;

const pinnedIdentity = (): undefined => undefined;
/** Certificates remembered as self-signed or not (a handful of relays; bounded anyway). */
const MAX_REMEMBERED = 1024;

export class RelayTrust {
  private readonly selfSigned = new Map<string, boolean>();

  constructor(
    private readonly caFile: Buffer | null,
    private readonly registry: RelayRegistry | null,
  ) {}

  /** The TLS options to dial the relay at `address` with. */
  optionsFor(address: string): RelayTlsOptions {
    if (this.caFile) return { ca: this.caFile };
    // Of the records naming this address (a restarted relay's old one may linger until its lease goes), the newest.
    let newest: { startedAt: number; tlsCertificate?: string } | undefined;
    for (const i of this.registry?.instances() ?? []) {
      if ((i.address === address || i.addresses.includes(address)) && (newest === undefined || i.startedAt > newest.startedAt)) newest = i;
    }
    const pem = newest?.tlsCertificate;
    if (pem && this.isSelfSigned(pem)) return { ca: Buffer.from(pem), checkServerIdentity: pinnedIdentity };
    return {};
  }

  private isSelfSigned(pem: string): boolean {
    let known = this.selfSigned.get(pem);
    if (known === undefined) {
      known = selfSigned(pem);
      if (this.selfSigned.size >= MAX_REMEMBERED) this.selfSigned.clear();
      this.selfSigned.set(pem, known);
    }
    return known;
  }
}

/** True when the (first) certificate of `pem` is its own issuer and signed by its own key. */
function selfSigned(pem: string): boolean {
  try {
    const cert = new X509Certificate(pem);
    return cert.checkIssued(cert) && cert.verify(cert.publicKey);
  } catch {
    return false;
  }
}
