/**
 * The public listener's certificate: the configured PEM files, or a
 * self-signed certificate generated once and kept in the data directory so
 * clients that pinned it keep working across restarts.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import selfsigned from 'selfsigned';

/** Validity of a generated certificate (days). */
const SELF_SIGNED_VALIDITY_DAYS = 3650;
const SELF_SIGNED_KEY_BITS = 2048;

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  certPath: string;
  /** SHA-256 fingerprint, colon-separated hex, as browsers and openssl print it. */
  fingerprint256: string;
  generated: boolean;
}

export function loadTlsMaterial(opts: { certFile: string; keyFile: string; dataDir: string }): TlsMaterial {
  if (opts.certFile || opts.keyFile) {
    if (!opts.certFile || !opts.keyFile) throw new Error('server.tlsCertFile and server.tlsKeyFile must be given together');
    const cert = readFileSync(opts.certFile);
    const key = readFileSync(opts.keyFile);
    return { cert, key, certPath: opts.certFile, fingerprint256: new X509Certificate(cert).fingerprint256, generated: false };
  }
  const certPath = join(opts.dataDir, 'tls.cert');
  const keyPath = join(opts.dataDir, 'tls.key');
  let generated = false;
  if (!existsSync(certPath) || !existsSync(keyPath)) {
    mkdirSync(opts.dataDir, { recursive: true });
    const pems = selfsigned.generate([{ name: 'commonName', value: 'hashmail' }], {
      days: SELF_SIGNED_VALIDITY_DAYS,
      keySize: SELF_SIGNED_KEY_BITS,
      algorithm: 'sha256',
      extensions: [
        { name: 'basicConstraints', cA: false },
        {
          name: 'subjectAltName',
          altNames: [
            { type: 2, value: 'localhost' },
            { type: 7, ip: '127.0.0.1' },
            { type: 7, ip: '::1' },
          ],
        },
      ],
    });
    writeFileSync(keyPath, pems.private, { mode: 0o600 });
    writeFileSync(certPath, pems.cert);
    generated = true;
  }
  const cert = readFileSync(certPath);
  return { cert, key: readFileSync(keyPath), certPath, fingerprint256: new X509Certificate(cert).fingerprint256, generated };
}
