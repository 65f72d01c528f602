/**
 * The public listener's certificate: the configured PEM files, or a
 * self-signed certificate generated once and kept in the data directory so
 * clients that pinned it keep working across restarts.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';

/**
 * `selfsigned` (and node-forge under it) only when a certificate is
 * generated: loading them took 35 ms of every start, TLS or not.
 */
const loadSelfsigned = (): typeof import('selfsigned') => createRequire(import.meta.url)('selfsigned') as typeof import('selfsigned');

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
    const x509 = checkKeyPair(cert, key, `server.tlsCertFile (${opts.certFile})`, `server.tlsKeyFile (${opts.keyFile})`);
    return { cert, key, certPath: opts.certFile, fingerprint256: x509.fingerprint256, generated: false };
  }
  const certPath = join(opts.dataDir, 'tls.cert');
  const keyPath = join(opts.dataDir, 'tls.key');
  let generated = false;
  if (!existsSync(certPath) || !existsSync(keyPath)) {
    mkdirSync(opts.dataDir, { recursive: true });
    const pems = loadSelfsigned().generate([{ name: 'commonName', value: 'hashmail' }], {
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
  const key = readFileSync(keyPath);
  const x509 = checkKeyPair(cert, key, `the certificate ${certPath}`, `the key ${keyPath}`);
  return { cert, key, certPath, fingerprint256: x509.fingerprint256, generated };
}

/**
 * The parsed certificate, if `key` is its private key; otherwise an error
 * naming both. A mismatched pair (an EC certificate with an RSA key) would
 * start and then fail every handshake.
 */
export function checkKeyPair(cert: Buffer, key: Buffer, certName: string, keyName: string): X509Certificate {
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new Error(`${certName} is not a PEM certificate: ${(err as Error).message}`, { cause: err });
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new Error(`${keyName} is not a PEM private key: ${(err as Error).message}`, { cause: err });
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new Error(`${certName} and ${keyName} do not match: the key is not the certificate's private key (certificate key type ${x509.publicKey.asymmetricKeyType}, key type ${privateKey.asymmetricKeyType})`);
  }
  return x509;
}
