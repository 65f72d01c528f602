/**
 * The public listener's certificate: the configured PEM files, or a
 * self-signed certificate generated once and kept in the data directory so
 * clients that pinned it keep working across restarts.
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { existsSync, linkSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
/** How long a start waits for the pair another start is generating (generation takes well under a second). */
const PAIR_WAIT_MS = 10_000;
const PAIR_POLL_MS = 20;

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
  const generated = !existsSync(certPath) || !existsSync(keyPath) ? generatePair(opts.dataDir, certPath, keyPath) : false;
  const cert = readFileSync(certPath);
  const key = readFileSync(keyPath);
  const x509 = checkKeyPair(cert, key, `the certificate ${certPath}`, `the key ${keyPath}`);
  return { cert, key, certPath, fingerprint256: x509.fingerprint256, generated };
}

/**
 * Generates the data directory's pair; safe against other processes doing
 * the same at once (a cluster's relays and gateways started together on one
 * fresh data dir). Both files are written under temporary names first; the
 * start whose key link lands first puts its certificate in, the others
 * wait for that pair. Written in place, two starts could each leave one
 * file of the pair and every start after would fail on a mismatched pair.
 * True when ours is the pair kept.
 */
function generatePair(dataDir: string, certPath: string, keyPath: string): boolean {
  mkdirSync(dataDir, { recursive: true });
  const pems = selfSignedPems();
  const tempKey = `${keyPath}.${process.pid}.tmp`;
  const tempCert = `${certPath}.${process.pid}.tmp`;
  writeFileSync(tempKey, pems.private, { mode: 0o600 });
  writeFileSync(tempCert, pems.cert);
  try {
    try {
      linkSync(tempKey, keyPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (awaitMatchingPair(certPath, keyPath)) return false;
      // A key with no certificate of its own: left by a start that died between the two, or a lone file an operator
      // left. Ours replaces both (a rename over is atomic; readers never see half a file).
      renameSync(tempKey, keyPath);
    }
    renameSync(tempCert, certPath);
    return true;
  } finally {
    rmSync(tempKey, { force: true });
    rmSync(tempCert, { force: true });
  }
}

/** Waits (blocking: this runs once, at start) until the pair another start is writing is whole; false past the bound. */
function awaitMatchingPair(certPath: string, keyPath: string): boolean {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let waited = 0; waited <= PAIR_WAIT_MS; waited += PAIR_POLL_MS) {
    // A key older than the wait is nobody's generation in progress: no use waiting for its certificate.
    if (Date.now() - statSync(keyPath).mtimeMs > PAIR_WAIT_MS && !existsSync(certPath)) return false;
    try {
      checkKeyPair(readFileSync(certPath), readFileSync(keyPath), certPath, keyPath);
      return true;
    } catch {
      // Not there yet, not whole, or not a pair yet: wait.
    }
    Atomics.wait(pause, 0, 0, PAIR_POLL_MS);
  }
  return false;
}

function selfSignedPems(): { private: string; cert: string } {
  return loadSelfsigned().generate([{ name: 'commonName', value: 'hashmail' }], {
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
