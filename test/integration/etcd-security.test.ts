/**
 * The etcd connection settings against a real etcd that demands them:
 * mutual TLS on https:// endpoints (directory.etcdCaFile, etcdCertFile,
 * etcdKeyFile) and etcd auth (directory.etcdUsername, etcdPassword). A relay
 * with the right settings registers and places sessions and `hashmail
 * status` lists it; one without them exits 1 at start, never registered.
 * Every key and certificate is generated here, into a temporary directory
 * removed at the end.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { Etcd3 } from 'etcd3';
import { routeOfSid } from '../../src/directory/route.js';
import { DEFAULT_WAIT_MS, withTimeout } from '../helpers/async-queue.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { httpLookup } from '../helpers/lookup.js';
import { BIN, ROOT, startRelay, type RunningServer } from '../helpers/server.js';

const run = promisify(execFile);
/** Bound on one `hashmail status` run (its etcd calls have a 1 s deadline here). */
const STATUS_TIMEOUT_MS = 15_000;
/** Short etcd deadlines: a refused start fails within one of them. */
const CALL_TIMEOUT_MS = 1000;
/** The test certificates outlive the run only by this much. */
const CERT_VALIDITY_DAYS = 1;
const KEY_BITS = 2048;

// Loaded as src/transport/tls-material.ts does: selfsigned is CommonJS.
const selfsigned = createRequire(import.meta.url)('selfsigned') as typeof import('selfsigned');

interface Pair {
  cert: string;
  key: string;
}

/**
 * A self-signed certificate that is its own CA (Go accepts a trusted root as
 * the whole chain), for 127.0.0.1, usable only for `usage`: etcd checks the
 * extended key usage of both sides.
 */
function selfSignedPair(commonName: string, usage: 'serverAuth' | 'clientAuth'): Pair {
  const pems = selfsigned.generate([{ name: 'commonName', value: commonName }], {
    days: CERT_VALIDITY_DAYS,
    keySize: KEY_BITS,
    algorithm: 'sha256',
    extensions: [
      { name: 'basicConstraints', cA: true, critical: true },
      { name: 'keyUsage', keyCertSign: true, digitalSignature: true, keyEncipherment: true, critical: true },
      { name: 'extKeyUsage', [usage]: true },
      { name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }] },
    ],
  });
  return { cert: pems.cert, key: pems.private };
}

/** Writes a pair as `<name>.crt` and `<name>.key` (the key readable by us only). */
function writePair(dir: string, name: string, pair: Pair): { certFile: string; keyFile: string } {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  writeFileSync(certFile, pair.cert);
  writeFileSync(keyFile, pair.key, { mode: 0o600 });
  return { certFile, keyFile };
}

interface StatusJson {
  instances: { id: string; role: string; address: string; mappedSessions: number }[];
  etcd: { endpoints: { endpoint: string; reachable: boolean }[]; reachable: number; total: number };
}

type StatusRun = { code: 0; status: StatusJson } | { code: number; stderr: string };

/** `hashmail status --json` with a config file and environment, as an operator runs it. */
async function status(etcd: EtcdCluster, configFile: string | null, env: Record<string, string> = {}): Promise<StatusRun> {
  const args = [BIN, 'status', '--json', '--etcd', etcd.etcdFlag, ...(configFile ? ['--config', configFile] : [])];
  try {
    const { stdout } = await run(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, timeout: STATUS_TIMEOUT_MS });
    return { code: 0, status: JSON.parse(stdout) as StatusJson };
  } catch (err) {
    const e = err as { code?: number; stderr?: string };
    // A status run past its bound is killed by execFile: no exit code, a test failure of its own.
    assert.equal(typeof e.code, 'number', `hashmail status did not exit: ${String(err)}`);
    return { code: e.code as number, stderr: e.stderr ?? '' };
  }
}

function listed(result: StatusRun): StatusJson {
  assert.equal(result.code, 0, `hashmail status failed: ${'stderr' in result ? result.stderr : ''}`);
  return (result as { status: StatusJson }).status;
}

/** Places a new session through the relay's public port and checks the relay names itself. */
async function placeOn(relay: RunningServer, id: string): Promise<void> {
  const route = routeOfSid(randomBytes(64));
  const answer = await httpLookup(relay.port, `route=${route}&create=1`);
  assert.equal(answer.status, 200, answer.body);
  const owner = JSON.parse(answer.body) as { id: string; address: string };
  assert.equal(owner.id, id);
  assert.equal(owner.address, relay.address);
}

/** A relay that must not start: the error startRelay gives (its stderr is in the text). */
async function refusedStart(start: Promise<RunningServer>): Promise<string> {
  let relay: RunningServer | null = null;
  try {
    relay = await start;
  } catch (err) {
    return String(err);
  } finally {
    await relay?.stop();
  }
  assert.fail('the relay started');
}

describe('etcd over mutual TLS (--client-cert-auth, https:// endpoints)', () => {
  let dir: string;
  let etcd: EtcdCluster | null = null;
  let withCert: string;
  let caOnly: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'hashmail-etcd-tls-'));
    const serverPair = selfSignedPair('etcd', 'serverAuth');
    const clientPair = selfSignedPair('hashmail', 'clientAuth');
    const server = writePair(dir, 'etcd', serverPair);
    const client = writePair(dir, 'client', clientPair);
    // The client certificate is its own CA: etcd trusts exactly it.
    const clientCaFile = join(dir, 'client-ca.crt');
    writeFileSync(clientCaFile, clientPair.cert);
    etcd = await startEtcd(1, {
      tls: { ...server, clientCaFile, probe: { ca: Buffer.from(serverPair.cert), cert: Buffer.from(clientPair.cert), key: Buffer.from(clientPair.key) } },
    });
    withCert = join(dir, 'with-cert.json');
    writeFileSync(withCert, JSON.stringify({ directory: { etcdCaFile: server.certFile, etcdCertFile: client.certFile, etcdKeyFile: client.keyFile, callTimeoutMs: CALL_TIMEOUT_MS } }));
    caOnly = join(dir, 'ca-only.json');
    writeFileSync(caOnly, JSON.stringify({ directory: { etcdCaFile: server.certFile, callTimeoutMs: CALL_TIMEOUT_MS } }));
  });
  after(async () => {
    await etcd?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a relay with the CA, client certificate and key registers and places; status with them lists it', async (t) => {
    assert.ok(etcd);
    assert.match(etcd.etcdFlag, /^https:\/\/127\.0\.0\.1:\d+$/);
    const relay = await startRelay({ etcd: etcd.etcdFlag, id: 'tls-relay', extraArgs: ['--config', withCert] });
    t.after(() => relay.stop());
    assert.equal((await relay.admin('/healthz')).status, 200);
    await placeOn(relay, 'tls-relay');

    const seen = listed(await status(etcd, withCert));
    assert.deepEqual(
      seen.instances.map((i) => ({ id: i.id, role: i.role, address: i.address, mappedSessions: i.mappedSessions })),
      [{ id: 'tls-relay', role: 'relay', address: relay.address, mappedSessions: 1 }],
    );
    assert.deepEqual(seen.etcd.endpoints.map((e) => [e.endpoint, e.reachable]), [[etcd.etcdFlag, true]]);
  });

  test('without the client certificate: status exits 1 naming the TLS refusal', async () => {
    assert.ok(etcd);
    const result = await status(etcd, caOnly);
    assert.equal(result.code, 1);
    assert.ok('stderr' in result);
    assert.match(result.stderr, /etcd unreachable/);
    // TLS 1.2 peers say "bad certificate", TLS 1.3 ones (a newer Go in etcd) "certificate required".
    assert.match(result.stderr, /bad certificate|certificate required/);
  });

  test('without the client certificate: a relay exits 1 at start and never registers', async () => {
    assert.ok(etcd);
    const error = await refusedStart(startRelay({ etcd: etcd.etcdFlag, id: 'tls-no-cert', extraArgs: ['--config', caOnly] }));
    assert.match(error, /exited with 1 before serving/);
    assert.match(error, /hashmail: /, 'the reason is on stderr');
    assert.deepEqual(listed(await status(etcd, withCert)).instances.filter((i) => i.id === 'tls-no-cert'), []);

    // "directory unavailable" alone would not say why: the start-up error carries the TLS refusal.
    assert.match(error, /directory unavailable: .*certificate/i);
  });
});

describe('etcd with auth enabled (user root)', () => {
  let etcd: EtcdCluster | null = null;
  const password = randomBytes(12).toString('base64url');
  // Credentials through the documented environment variables, as one keeps a password out of files.
  const credentials = (pass: string): Record<string, string> => ({
    HASHMAIL_DIRECTORY__ETCD_USERNAME: 'root',
    HASHMAIL_DIRECTORY__ETCD_PASSWORD: pass,
    HASHMAIL_DIRECTORY__CALL_TIMEOUT_MS: String(CALL_TIMEOUT_MS),
  });

  before(async () => {
    etcd = await startEtcd(1);
    const client = new Etcd3({ hosts: etcd.endpoints });
    try {
      // etcd refuses to enable auth until a root user holding the root role exists.
      const setUp = async (): Promise<void> => {
        await client.role('root').create();
        await client.user('root').create(password);
        await client.user('root').addRole('root');
        await client.auth.authEnable();
      };
      await withTimeout(setUp(), DEFAULT_WAIT_MS, 'enabling etcd auth');
    } finally {
      client.close();
    }
  });
  after(async () => {
    await etcd?.stop();
  });

  test('anonymous access is refused once auth is on', async () => {
    assert.ok(etcd);
    const result = await status(etcd, null);
    assert.equal(result.code, 1);
    assert.ok('stderr' in result);
    assert.match(result.stderr, /user name is empty/);
  });

  test('a relay with etcdUsername and etcdPassword registers and places; status with them lists it', async (t) => {
    assert.ok(etcd);
    const relay = await startRelay({ etcd: etcd.etcdFlag, id: 'auth-relay', env: credentials(password) });
    t.after(() => relay.stop());
    assert.equal((await relay.admin('/healthz')).status, 200);
    await placeOn(relay, 'auth-relay');

    const seen = listed(await status(etcd, null, credentials(password)));
    assert.deepEqual(
      seen.instances.map((i) => ({ id: i.id, address: i.address, mappedSessions: i.mappedSessions })),
      [{ id: 'auth-relay', address: relay.address, mappedSessions: 1 }],
    );
  });

  test('a wrong password: the relay exits 1 at start naming the authentication failure, never registered', async () => {
    assert.ok(etcd);
    const error = await refusedStart(startRelay({ etcd: etcd.etcdFlag, id: 'auth-wrong', env: credentials(`${password}x`) }));
    assert.match(error, /exited with 1 before serving/);
    assert.match(error, /authentication failed, invalid user ID or password/);
    assert.deepEqual(listed(await status(etcd, null, credentials(password))).instances.filter((i) => i.id === 'auth-wrong'), []);

    const wrong = await status(etcd, null, credentials(`${password}x`));
    assert.equal(wrong.code, 1);
    assert.ok('stderr' in wrong);
    assert.match(wrong.stderr, /authentication failed/);
  });
});
